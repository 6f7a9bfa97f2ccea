"""The command line: help and examples everywhere, clean one-line errors, the quickstart end to end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from otel_cost.cli import cli

from .helpers import RunningServer, chat_attributes, make_request, make_span

OTEL_COST = str(Path(sys.executable).parent / "otel-cost")


def _leaf_commands(group: click.Group, prefix: str = "") -> list[str]:
    names: list[str] = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            names += _leaf_commands(command, f"{prefix}{name} ")
        else:
            names.append(f"{prefix}{name}")
    return names


COMMANDS = sorted(cli.commands)  # every registered command: none can be added without help
LEAF_COMMANDS = _leaf_commands(cli)  # "prices show", ...


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(store: Path, grpc: str = "", http: str = "", api: str = "") -> list[str]:
    """`otel-cost serve` on a store, every listener on loopback (a free port unless given)."""
    return [
        OTEL_COST,
        "serve",
        "--store",
        f"chdb:{store}",
        "--grpc-endpoint",
        grpc or f"127.0.0.1:{free_port()}",
        "--http-endpoint",
        http or f"127.0.0.1:{free_port()}",
        "--api-endpoint",
        api or f"127.0.0.1:{free_port()}",
    ]


def test_top_level_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f"  {command} " in result.output


def test_the_command_list_is_complete() -> None:
    assert {"serve", "sql", "demo", "prices", "reprice"} <= set(COMMANDS)
    assert {"prices show", "prices unpriced", "prices drift", "prices check"} <= set(LEAF_COMMANDS)


@pytest.mark.parametrize("command", LEAF_COMMANDS)
def test_every_command_has_help_with_examples(command: str) -> None:
    result = CliRunner().invoke(cli, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert f"otel-cost {command}" in result.output.split("Examples:", 1)[1]


def test_sql_goes_through_a_running_server(server: RunningServer) -> None:
    with urllib.request.urlopen(f"{server.api_url}/readyz", timeout=10) as response:
        assert json.loads(response.read())["status"] == "ready"
    from .test_dedup import export

    export(server, make_request([make_span(chat_attributes()) for _ in range(2)]))
    query = "SELECT team, sum(cost) AS spend FROM requests WHERE billable GROUP BY team"
    result = CliRunner().invoke(cli, ["sql", query, "--api", server.api_url])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"(answered by the server at {server.api_url})"
    assert result.stdout.splitlines() == ["team      spend", "--------  -----", "payments  0.012", "(1 row)"]
    as_json = CliRunner().invoke(cli, ["sql", query, "--api", server.api_url, "--format", "json"])
    assert json.loads(as_json.stdout) == [{"team": "payments", "spend": "0.012"}]
    as_csv = CliRunner().invoke(cli, ["sql", query, "--api", server.api_url, "--format", "csv"])
    assert as_csv.stdout.splitlines() == ['"team","spend"', '"payments",0.012']
    # A Float64 column through the API (it used to answer HTTP 500: the JSON encoder met a Decimal).
    ratio = CliRunner().invoke(
        cli, ["sql", "SELECT round(1 / 3, 4) AS share", "--api", server.api_url, "--format", "json"]
    )
    assert ratio.exit_code == 0, ratio.output
    assert json.loads(ratio.stdout) == [{"share": "0.3333"}]


def test_sql_refuses_writes_with_a_clean_message(server: RunningServer) -> None:
    result = CliRunner().invoke(cli, ["sql", "DROP TABLE requests", "--api", server.api_url])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert "readonly" in result.stderr.lower()
    assert "Traceback" not in result.output


def test_sql_opens_the_store_itself_when_no_server_answers(store_url: str, server: RunningServer) -> None:
    from .test_dedup import export

    export(server, make_request([make_span(chat_attributes())]))
    closed_api = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        cli, ["sql", "SELECT count() AS calls FROM requests", "--api", closed_api, "--store", store_url]
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"(no server at {closed_api}; opened chdb:")
    assert result.stdout.splitlines()[2].strip() == "1"


def test_sql_on_a_store_that_does_not_exist(tmp_path: Path) -> None:
    closed_api = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["sql", "SELECT 1", "--api", closed_api, "--store", f"chdb:{tmp_path}/none"])
    assert result.exit_code == 1
    assert f"there is no store at {tmp_path}/none yet: start `otel-cost serve` first" in result.stderr


def test_serve_with_a_bad_store_url_says_what_is_expected() -> None:
    result = CliRunner().invoke(cli, ["serve", "--store", "mysql://db"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: store.url: store URL 'mysql://db' has an unknown scheme 'mysql' (expected chdb:PATH, "
        "clickhouse://user:pass@host:8123/db or clickhouses://...) (got 'mysql://db')"
    )


def test_serve_with_an_invalid_config_names_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "otel-cost.yaml"
    config.write_text("receiver:\n  grpc_endpoint: nowhere\n  htttp_endpoint: 0.0.0.0:4318\nstore:\n  batch_size: 0\n")
    result = CliRunner().invoke(cli, ["serve", "--config", str(config)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: {config}:2: receiver.grpc_endpoint: must be host:port, e.g. 0.0.0.0:4317 (got 'nowhere') "
        "(got 'nowhere')",
        f"{config}:3: receiver.htttp_endpoint: unknown key 'htttp_endpoint' in 'receiver'",
        f"{config}:5: store.batch_size: Input should be greater than or equal to 1 (got 0)",
    ]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, int]]]:
    ports = {"grpc": free_port(), "http": free_port(), "api": free_port()}
    process = subprocess.Popen(
        serve_command(tmp_path / "data", *(f"127.0.0.1:{ports[name]}" for name in ("grpc", "http", "api"))),
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['api']}/readyz", timeout=2):
                break
        except OSError:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.2)
    yield process, ports
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_quickstart_serve_demo_sql_and_a_clean_stop(served: tuple[subprocess.Popen[str], dict[str, int]]) -> None:
    process, ports = served
    demo = subprocess.run(
        [OTEL_COST, "demo", "--calls", "40", "--endpoint", f"http://127.0.0.1:{ports['grpc']}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    assert demo.stdout.startswith("sent ")
    query = "SELECT team, sum(cost) FROM requests WHERE billable GROUP BY team ORDER BY team"
    sql = subprocess.run(
        [OTEL_COST, "sql", query, "--api", f"http://127.0.0.1:{ports['api']}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sql.returncode == 0, sql.stderr
    teams = [line.split()[0] for line in sql.stdout.splitlines()[2:-1]]
    assert teams == ["data-platform", "payments", "research", "search", "support", "unattributed"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert process.stderr is not None
    log = process.stderr.read()
    assert "otel-cost: ready." in log and "otel-cost: stopping" in log


@pytest.mark.parametrize(
    ("endpoint", "what", "setting"),
    [
        ("grpc", "OTLP/gRPC", "receiver.grpc_endpoint / --grpc-endpoint"),
        ("http", "OTLP/HTTP", "receiver.http_endpoint / --http-endpoint"),
        ("api", "the API", "api.endpoint / --api-endpoint"),
    ],
)
def test_a_busy_port_is_a_one_line_error(tmp_path: Path, endpoint: str, what: str, setting: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        addresses = {name: f"127.0.0.1:{free_port()}" for name in ("grpc", "http", "api")}
        addresses[endpoint] = f"127.0.0.1:{port}"
        result = subprocess.run(
            serve_command(tmp_path / "data", addresses["grpc"], addresses["http"], addresses["api"]),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "OTEL_COST_LOG_LEVEL": "error"},
        )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"Error: cannot listen on 127.0.0.1:{port} for {what}: the address is already in use (another otel-cost, "
        f"or an OpenTelemetry Collector?). Choose another address with {setting}."
    )


def test_a_second_server_on_the_same_store_is_refused(
    served: tuple[subprocess.Popen[str], dict[str, int]], tmp_path: Path
) -> None:
    result = subprocess.run(
        serve_command(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"Error: the embedded store at {tmp_path}/data is in use by another process" in result.stderr
