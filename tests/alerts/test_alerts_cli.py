"""`otel-cost alerts`: from the running server, or from the store's ledger when none answers."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime

from click.testing import CliRunner

from otel_cost.cli import cli

from ..helpers import RunningServer, export, make_request, make_span, wait_for

SELF_HOSTED = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "vllm",
    "gen_ai.request.model": "acme-llm-7b-instruct",
    "gen_ai.usage.input_tokens": 2_000,
    "gen_ai.usage.output_tokens": 500,
}


def test_alerts_from_the_server_then_from_the_store_when_none_answers(
    make_server: Callable[..., RunningServer], store_url: str
) -> None:
    server = make_server({"alerts": {"interval_seconds": 0.2}})
    start = int(datetime.now(UTC).timestamp() * 1e9) - 2_000_000_000
    export(server, make_request([make_span(SELF_HOSTED, start_ns=start)], resource={"service.name": "notebook"}))
    runner = CliRunner()

    def listed(*options: str) -> list[dict[str, object]]:
        result = runner.invoke(cli, ["alerts", "--format", "json", *options])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    (alert,) = wait_for(lambda: listed("--api", server.api_url, "--kind", "unpriced_model"), what="the alert")
    assert alert["subject"] == {"provider": "vllm", "model": "acme-llm-7b-instruct"}
    assert listed("--api", server.api_url, "--kind", "agent_loop") == []
    server.close()

    offline = ["--api", "http://127.0.0.1:9", "--store", store_url]
    result = runner.invoke(cli, ["alerts", *offline])
    assert result.exit_code == 0, result.output
    assert "(no server at http://127.0.0.1:9; read the alert ledger of the store directly)" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["fired_at", "severity", "kind", "title", "subject", "delivered_to", "id"]
    assert "Unpriced model: vllm/acme-llm-7b-instruct (1 call with no price)" in lines[2]
    assert lines[-1] == "(1 row)"
    rows = list(csv.DictReader(io.StringIO(runner.invoke(cli, ["alerts", "--format", "csv", *offline]).stdout)))
    assert [(row["kind"], row["subject"], row["id"]) for row in rows] == [
        ("unpriced_model", "provider=vllm, model=acme-llm-7b-instruct", alert["id"][:12])
    ]
    bad = runner.invoke(cli, ["alerts", "--since", "last tuesday", *offline])
    assert bad.exit_code == 2 and "since must be a duration (90m, 24h, 7d), a date or an ISO 8601 time" in bad.output
