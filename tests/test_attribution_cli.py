"""`otel-cost attribution explain|gaps` on calls sent through a real server into real chDB, and
`otel-cost config check` on good and bad files, every problem with its file, line and key."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from otel_cost.cli import cli
from otel_cost.cli.attribution import gap_suggestion

from .helpers import RunningServer, chat_attributes, make_request, make_span
from .test_dedup import export

SERVICES = "services:\n  search-api: {team: search, cost_center: CC-2001, feature: search}\n"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def table_rows(output: str, after: str = "") -> list[list[str]]:
    """The rows of the first table after the line starting with `after`, cells split on 2+ spaces."""
    lines = output.splitlines()
    begin = next(index for index, line in enumerate(lines) if line.startswith(after)) if after else 0
    start = next(index for index in range(begin, len(lines)) if lines[index].lstrip().startswith("---"))
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip() or line.startswith("("):
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def prose(output: str) -> str:
    """Output with its wrapped lines joined: what a sentence says, wherever the terminal broke it."""
    return " ".join(output.split())


def closed_api() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def send(server: RunningServer, resource: dict[str, Any], **attributes: Any) -> str:
    """One chat call (gpt-4o) through the real OTLP/gRPC receiver; returns its span id (hex)."""
    span = make_span(chat_attributes(**attributes))
    export(server, make_request([span], resource=resource))
    return span.span_id.hex()


@pytest.mark.parametrize("command", ["attribution explain", "attribution gaps", "config check"])
def test_every_command_has_help_with_examples(command: str) -> None:
    result = invoke(*command.split(), "--help")
    assert result.exit_code == 0
    assert f"otel-cost {command}" in result.output.split("Examples:", 1)[1]


# --- explain -------------------------------------------------------------------------------------


@pytest.fixture
def attributed(make_server: Callable[..., RunningServer], tmp_path: Path) -> tuple[RunningServer, Path, dict[str, str]]:
    """A server attributing with a preset, a rule list with a catalog and a regex, and a tag; one call
    owned each way and one nobody owns. Returns the server, its config file and the calls' span ids."""
    catalog = tmp_path / "services.yaml"
    catalog.write_text(SERVICES)
    section: dict[str, Any] = {
        "presets": ["litellm"],
        "dimensions": {
            "team": [
                "preset:litellm",
                "span:app.team",
                "catalog",
                {"regex": "^(ads|search)-", "from": "resource:service.name"},
            ]
        },
        "tags": {"customer": ["span:app.customer"]},
        "service_catalog": str(catalog),
        "cost_centers": {"search": "CC-2001"},
    }
    config = tmp_path / "otel-cost.yaml"
    config.write_text(yaml.safe_dump({"attribution": section}, sort_keys=False))
    server = make_server({"attribution": section})
    spans = {
        "preset": send(
            server,
            {"service.name": "litellm-proxy"},
            **{
                "metadata.user_api_key_team_alias": "search",
                "metadata.user_api_key_alias": "search-rerank-prod",
                "app.customer": "acme",
            },
        ),
        "regex": send(server, {"service.name": "ads-ranker"}),
        "catalog": send(server, {"service.name": "search-api"}),
        "nobody": send(server, {"service.name": "notebook"}, **{"user.id": "u-7"}),
    }
    return server, config, spans


def explain(server: RunningServer, span_id: str, *extra: str) -> Result:
    return invoke("attribution", "explain", span_id, "--api", server.api_url, *extra)


def test_explain_a_preset_owner_with_the_keys_its_rules_read(
    attributed: tuple[RunningServer, Path, dict[str, str]],
) -> None:
    server, config, spans = attributed
    result = explain(server, spans["preset"], "--config", str(config))
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"(answered by the server at {server.api_url})"
    owners = table_rows(result.stdout, "span ")
    assert owners == [
        ["cost_center", "CC-2001", "cost_centers:search", "same"],
        ["team", "search", "preset:litellm span:metadata.user_api_key_team_alias", "same"],
        ["feature", "search-rerank-prod", "preset:litellm span:metadata.user_api_key_alias", "same"],
        ["agent", "-", "-", "same"],
        ["environment", "-", "-", "same"],
        ["tag:customer", "acme", "span:app.customer", "same"],
    ]
    span_attributes = table_rows(result.stdout, "span attributes")
    assert ["* metadata.user_api_key_team_alias", "search", "team"] in span_attributes
    assert ["* metadata.user_api_key_alias", "search-rerank-prod", "feature"] in span_attributes
    assert ["* app.customer", "acme", "tag:customer"] in span_attributes
    resource_attributes = table_rows(result.stdout, "resource attributes")
    assert resource_attributes == [["* service.name", "litellm-proxy", "cost_center, team, feature"]]
    assert result.stdout.rstrip().endswith("The current rules give this call the same owner.")

    [document] = json.loads(explain(server, spans["preset"], "--config", str(config), "--format", "json").stdout)
    assert document["span_id"] == spans["preset"]
    assert document["cost"] == "0.006"
    assert document["matches_current_rules"] is True
    assert document["owner"]["team"] == {
        "value": "search",
        "rule": "preset:litellm span:metadata.user_api_key_team_alias",
        "current_value": "search",
        "current_rule": "preset:litellm span:metadata.user_api_key_team_alias",
        "matches": True,
        "capped": False,
    }
    read_for = {item["key"]: item["read_for"] for item in document["span_attributes"]}
    assert read_for["metadata.user_api_key_team_alias"] == ["team"]


def test_explain_a_regex_and_a_catalog_owner(attributed: tuple[RunningServer, Path, dict[str, str]]) -> None:
    server, config, spans = attributed
    regex = explain(server, spans["regex"], "--config", str(config))
    assert regex.exit_code == 0, regex.output
    owners = {row[0]: row[1:] for row in table_rows(regex.stdout, "span ")}
    assert owners["team"] == ["ads", "regex:resource:service.name:^(ads|search)-", "same"]
    assert owners["cost_center"] == ["ads", "team", "same"]  # no cost_centers entry: the team
    assert owners["feature"] == ["ads-ranker", "resource:service.name", "same"]
    assert "span attributes: none stored" in regex.stdout

    catalog = explain(server, spans["catalog"], "--config", str(config))
    assert catalog.exit_code == 0, catalog.output
    owners = {row[0]: row[1:] for row in table_rows(catalog.stdout, "span ")}
    # The catalog comes before the regex (which would also say "search") in the team's list.
    assert owners["team"] == ["search", "catalog:services.yaml", "same"]
    assert owners["cost_center"] == ["CC-2001", "catalog:services.yaml", "same"]
    assert owners["feature"] == ["search", "catalog:services.yaml", "same"]
    assert table_rows(catalog.stdout, "resource attributes") == [
        ["* service.name", "search-api", "cost_center, team, feature"]
    ]


def test_explain_an_unattributed_call_names_the_keys_looked_for(
    attributed: tuple[RunningServer, Path, dict[str, str]],
) -> None:
    server, config, spans = attributed
    result = explain(server, spans["nobody"], "--config", str(config))
    assert result.exit_code == 0, result.output
    owners = {row[0]: row[1:] for row in table_rows(result.stdout, "span ")}
    assert owners["team"] == ["unattributed", "unattributed", "same"]
    assert owners["cost_center"] == ["unattributed", "team", "same"]
    assert owners["feature"] == ["notebook", "resource:service.name", "same"]
    assert ["user.id", "u-7"] in table_rows(result.stdout, "span attributes")  # read by no rule: unmarked
    assert (
        "No rule names a team for this call. The current rules look on the span for "
        "metadata.user_api_key_team_alias, metadata.user_api_key_team_id, app.team; on the resource for "
        "service.name."
    ) in prose(result.stdout)
    assert "The current rules give this call the same owner." in prose(result.stdout)


def test_explain_says_when_the_current_rules_give_another_owner(
    attributed: tuple[RunningServer, Path, dict[str, str]],
) -> None:
    server, _, spans = attributed
    # Without --config the built-in rules apply: no LiteLLM preset, no tag.
    result = explain(server, spans["preset"])
    assert result.exit_code == 0, result.output
    assert "rules    built-in defaults (no --config)" in result.stdout
    owners = {row[0]: row[1:] for row in table_rows(result.stdout, "span ")}
    assert owners["team"] == [
        "search",
        "preset:litellm span:metadata.user_api_key_team_alias",
        "unattributed (no rule)",
    ]
    assert owners["feature"][2] == "litellm-proxy (resource:service.name)"
    assert ["metadata.user_api_key_team_alias", "search"] in table_rows(result.stdout, "span attributes")
    said = prose(result.stdout)
    assert "The current rules give a different owner: cost_center CC-2001 -> unattributed (team); " in said
    assert "`otel-cost reattribute` applies the current ones" in said

    [document] = json.loads(explain(server, spans["preset"], "--format", "json").stdout)
    assert document["matches_current_rules"] is False
    assert document["owner"]["tag:customer"]["current_value"] == ""


def test_explain_a_call_owned_through_its_outer_instrumentation_span(make_server: Callable[..., RunningServer]) -> None:
    server = make_server()
    # A library's span carries the app's team; the provider SDK's span nested in it (the same call) does
    # not. The inner one is billed, owned as the outer one says.
    outer = make_span(chat_attributes(**{"app.team": "search"}), trace_id=b"\x01" * 16)
    inner = make_span(chat_attributes(), trace_id=b"\x01" * 16, parent_span_id=outer.span_id)
    export(server, make_request([outer, inner], resource={"service.name": "search-api"}))
    inner_id, outer_id = inner.span_id.hex(), outer.span_id.hex()
    assert server.scalar(f"SELECT duplicate_of FROM requests WHERE span_id = '{outer_id}'") == inner_id

    result = explain(server, inner_id)
    assert result.exit_code == 0, result.output
    owners = {row[0]: row[1:] for row in table_rows(result.stdout, "span ")}
    assert owners["team"] == ["search", "span:app.team", "same"]
    assert "span attributes: none stored" in result.stdout
    assert ["* app.team", "search", "team"] in table_rows(result.stdout, f"outer span {outer_id}")
    assert f"Part of the owner comes from the outer span {outer_id}'s attributes." in prose(result.stdout)
    assert "The current rules give this call the same owner." in prose(result.stdout)
    [document] = json.loads(explain(server, inner_id, "--format", "json").stdout)
    assert (document["outer_span_id"], document["owner_from_outer_span"]) == (outer_id, outer_id)


def test_explain_an_unknown_or_malformed_span_id(attributed: tuple[RunningServer, Path, dict[str, str]]) -> None:
    server, _, _ = attributed
    unknown = explain(server, "00000000000000ff")
    assert unknown.exit_code == 1
    assert unknown.stderr.splitlines()[-1] == (
        "Error: no stored call has span id 00000000000000ff (only model calls are stored; other spans are ignored)"
    )
    malformed = explain(server, "x'; DROP TABLE requests")
    assert malformed.exit_code == 1
    assert "is not a span id: 16 hex digits" in malformed.stderr
    assert "Traceback" not in unknown.output + malformed.output


# --- gaps ----------------------------------------------------------------------------------------


@pytest.fixture
def gappy(make_server: Callable[..., RunningServer]) -> RunningServer:
    """Billable spend 0.277: 0.006 owned by payments, 0.271 by nobody (three services)."""
    server = make_server()
    send(server, {"service.name": "checkout-assistant", "team": "payments"})  # 0.006, owned
    for _ in range(2):  # 2 x 0.006
        send(server, {"service.name": "notebook", "service.namespace": "research"}, **{"user.id": "u-1"})
    # 100,000 tokens in at 2.50/M and 300 out at 10/M: 0.25 + 0.003
    send(server, {"service.name": "batch-jobs"}, **{"app.owner_group": "ml", "gen_ai.usage.input_tokens": 100_000})
    send(server, {"service.name": "scratch"})  # 0.006, nothing to go on
    return server


def test_gaps_lists_unattributed_spend_largest_first_with_a_rule_to_try(gappy: RunningServer) -> None:
    result = invoke("attribution", "gaps", "--api", gappy.api_url, "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["billable_spend"], document["unattributed_spend"]) == ("0.277", "0.271")
    assert Decimal(document["unattributed_spend"]) == Decimal("0.253") + 2 * Decimal("0.006") + Decimal("0.006")
    assert (document["billable_calls"], document["unattributed_calls"]) == (5, 4)
    assert document["unattributed_share_percent"] == "97.83"  # 0.271 / 0.277
    groups = document["groups"]
    assert [(g["service_name"], g["calls"], g["spend"], g["share_percent"]) for g in groups] == [
        ("batch-jobs", 1, "0.253", "91.34"),
        ("notebook", 2, "0.012", "4.33"),
        ("scratch", 1, "0.006", "2.17"),
    ]
    batch, notebook, scratch = groups
    assert batch["span_keys"] == ["app.owner_group"]  # typed gen_ai keys live in columns, not here
    assert batch["resource_keys"] == ["service.name"]
    assert batch["suggested_rule"] == "span:app.owner_group"
    assert notebook["span_keys"] == ["user.id"]
    assert notebook["resource_keys"] == ["service.name", "service.namespace"]
    assert notebook["suggested_rule"] == "preset:service_namespace"
    assert scratch["suggested_rule"] == "services: {scratch: {team: ...}}"
    assert {g["emitter"] for g in groups} == {"opentelemetry.instrumentation.openai.v1@0.62.4"}

    table = invoke("attribution", "gaps", "--api", gappy.api_url)
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0] == "unattributed: 0.271 USD of 0.277 USD billable spend (97.83%), 4 of 5 calls"
    rows = table_rows(table.stdout)
    assert [row[0] for row in rows] == ["batch-jobs", "notebook", "scratch"]
    assert rows[0][2:] == ["1", "0.253", "91.34%", "span:app.owner_group"]
    assert "    resource  service.name, *service.namespace" in table.stdout

    limited = invoke("attribution", "gaps", "--api", gappy.api_url, "--limit", "2")
    assert [row[0] for row in table_rows(limited.stdout)] == ["batch-jobs", "notebook"]
    assert "(1 more; raise --limit)" in limited.stdout


def test_gaps_does_not_suggest_what_the_current_rules_already_read(gappy: RunningServer, tmp_path: Path) -> None:
    config = tmp_path / "otel-cost.yaml"
    config.write_text("attribution:\n  presets: [service_namespace]\n")
    result = invoke("attribution", "gaps", "--api", gappy.api_url, "--config", str(config), "--format", "csv")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "service_name,emitter,calls,spend,share_percent,span_keys,resource_keys,suggested_rule"
    assert lines[2] == (
        "notebook,opentelemetry.instrumentation.openai.v1@0.62.4,2,0.012,4.33,user.id,"
        "service.name service.namespace,services: {notebook: {team: ...}}"
    )


def test_gaps_opens_the_store_when_no_server_answers(gappy: RunningServer, store_url: str) -> None:
    api = closed_api()
    result = invoke("attribution", "gaps", "--api", api, "--store", store_url, "--since", "2000-01-01")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"(no server at {api}; opened chdb:")
    assert result.stdout.startswith("unattributed since 2000-01-01: 0.271 USD of 0.277 USD")
    later = invoke("attribution", "gaps", "--api", api, "--store", store_url, "--since", "2099-01-01")
    assert later.stdout.splitlines() == [
        "unattributed since 2099-01-01: 0 USD of 0 USD billable spend (0%), 0 of 0 calls",
        "Every billable call has a team.",
    ]


@pytest.mark.parametrize(
    ("service", "span_keys", "resource_keys", "suggestion"),
    [
        ("svc", ["metadata.user_api_key_team_alias", "team_name"], [], "preset:litellm"),
        ("svc", ["ai.telemetry.metadata.costCenter"], [], "preset:vercel_ai"),
        ("svc", ["gen_ai.usage.cost", "user.id"], ["department"], "resource:department"),
        ("svc", ["tenant.id", "app.owning_team"], [], "span:app.owning_team"),
        ("svc", ["team"], [], "services: {svc: {team: ...}}"),  # the built-in rules read it already
        ("unknown_service:python", [], [], "set service.name (OTEL_SERVICE_NAME), then a services: entry"),
    ],
)
def test_gap_suggestions(service: str, span_keys: list[str], resource_keys: list[str], suggestion: str) -> None:
    team_reads = {"span": ["team", "app.team"], "resource": ["team"]}
    found, _ = gap_suggestion(service, span_keys, resource_keys, team_reads)
    assert found.startswith(suggestion)


# --- config check --------------------------------------------------------------------------------

GOOD = """\
receiver:
  bearer_tokens: ["secret-ingest-token"]
store:
  url: "clickhouse://otel:hunter2@ch.internal:8123/otel_cost"
pricing:
  overrides:
    - name: self-hosted-llama
      provider: vllm
      model: llama-3.3-70b
      prices: {input_mtok: "0.10", output_mtok: "0.40"}
attribution:
  presets: [litellm, openllmetry]
  dimensions:
    team: ["span:app.team", "preset:litellm", "catalog", {regex: "^(search|ads)-", from: "resource:service.name"}]
    feature: ["span:app.feature"]
  tags:
    customer: ["span:app.customer", "baggage:customer"]
  service_catalog: services.yaml
  cost_centers: {payments: CC-1042, search: CC-2001}
"""


def test_config_check_accepts_a_good_file_and_summarizes_it(tmp_path: Path) -> None:
    (tmp_path / "services.yaml").write_text(SERVICES)
    config = tmp_path / "otel-cost.yaml"
    config.write_text(GOOD)
    result = invoke("config", "check", str(config))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"ok: {config}",
        "  receiver      grpc 0.0.0.0:4317, http 0.0.0.0:4318, 1 bearer token",
        "  api           0.0.0.0:8318, 0 read tokens, 0 admin tokens",
        "  store         clickhouse://otel@ch.internal:8123/otel_cost",
        "  pricing       1 price override: self-hosted-llama",
        "  presets       litellm, openllmetry",
        "  dimensions    team (4 sources), feature (1 source); built-in: cost_center, agent, environment",
        "  tags          customer (2 sources)",
        f"  catalog       {tmp_path / 'services.yaml'}: 1 service",
        "  cost centers  2 teams mapped",
        "  budgets       0 budgets; 0 gateway webhooks",
        "  alerts        every 5 s: agent_loop, retry_storm, spend_spike, unpriced_model, unattributed_share, "
        "floating_alias, new_owner; sinks: log",
        "  forward       off",
        "  metrics       prometheus /metrics only",
    ]
    assert "hunter2" not in result.output and "secret-ingest-token" not in result.output


@pytest.mark.parametrize(
    ("attribution", "line", "problem"),
    [
        ('  dimensions:\n    team: ["spann:x"]\n', 3, "attribution.dimensions.team.0: unknown source 'spann:x'"),
        (
            '  dimensions:\n    team: [{regex: "(", from: "span:x"}]\n',
            3,
            "attribution.dimensions.team.0.regex: bad regular expression '('",
        ),
        ("  presets: [litellm, nosuch]\n", 2, "attribution.presets.1: unknown preset 'nosuch'"),
        (
            '  dimensions:\n    team: ["span:app.team"]\n    owner: ["span:owner"]\n',
            4,
            "attribution.dimensions.owner: unknown dimension 'owner'",
        ),
        ("  tags:\n    customer: ['preset:litellm']\n", 2, "attribution.tags: presets name owner dimensions"),
    ],
)
def test_config_check_names_each_problem_with_its_line(
    tmp_path: Path, attribution: str, line: int, problem: str
) -> None:
    config = tmp_path / "otel-cost.yaml"
    config.write_text("attribution:\n" + attribution)
    result = invoke("config", "check", str(config))
    assert result.exit_code == 1
    [reported] = result.stdout.splitlines()
    assert reported.startswith(f"{config}:{line}: {problem}")
    assert result.stderr.strip() == f"Error: {config}: 1 problem"


def test_config_check_names_a_catalog_cost_center_in_the_catalog_file(tmp_path: Path) -> None:
    catalog = tmp_path / "services.yaml"
    catalog.write_text("services:\n  checkout: {team: payments}\n  search-api: {team: search, cost_center: CC-9999}\n")
    config = tmp_path / "otel-cost.yaml"
    config.write_text("attribution:\n  service_catalog: services.yaml\n  cost_centers: {payments: CC-1042}\n")
    result = invoke("config", "check", str(config))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{catalog}:3: services.search-api.cost_center: unknown cost center 'CC-9999' "
        "(attribution.cost_centers names CC-1042)"
    ]


def test_config_check_names_every_problem_at_once(tmp_path: Path) -> None:
    catalog = tmp_path / "services.yaml"
    catalog.write_text("services:\n  search-api: {team: search, cost_center: CC-9999}\n")
    config = tmp_path / "otel-cost.yaml"
    config.write_text(
        "receiver:\n"
        "  grpc_endpoint: nowhere\n"
        "attribution:\n"
        "  presets: [nosuch]\n"
        "  dimensions:\n"
        '    team: ["spann:x", {regex: "(", from: "span:x"}]\n'
        '    owner: ["span:owner"]\n'
        "  service_catalog: services.yaml\n"
        "  cost_centers: {payments: CC-1042}\n"
        "pricing:\n"
        "  overrides:\n"
        "    - {name: a, provider: openai, model: gpt-4o, multiplier: '0.9', effective_from: 2026-01-01}\n"
        "    - {name: b, provider: openai, model: gpt-4o, multiplier: '0.8', effective_from: 2026-06-01}\n"
    )
    result = invoke("config", "check", str(config))
    assert result.exit_code == 1
    located = re.findall(r"^(.*?):(\d+): (\S+):", result.stdout, re.MULTILINE)
    assert located == [
        (str(config), "2", "receiver.grpc_endpoint"),
        (str(config), "4", "attribution.presets.0"),
        (str(config), "6", "attribution.dimensions.team.0"),
        (str(config), "6", "attribution.dimensions.team.1.regex"),
        (str(config), "7", "attribution.dimensions.owner"),
        (str(config), "13", "pricing.overrides.1.effective_from"),
        (str(catalog), "2", "services.search-api.cost_center"),
    ]
    assert result.stderr.strip() == f"Error: {config}: 7 problems"


def test_config_check_on_a_missing_file(tmp_path: Path) -> None:
    result = invoke("config", "check", str(tmp_path / "none.yaml"))
    assert result.exit_code == 1
    assert result.stdout.strip() == f"{tmp_path}/none.yaml: cannot read config file: No such file or directory"
