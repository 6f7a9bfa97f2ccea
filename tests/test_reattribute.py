"""Re-attribution: stored rows given the owners the current rules say, rollups equal to the raw rows before
and after, costs untouched, idempotent, recorded; the library, the CLI on the store and through the API."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from otel_cost import reattribute as reattribute_module
from otel_cost.cli import cli
from otel_cost.config import AttributionConfig
from otel_cost.errors import OtelCostError
from otel_cost.pricing import PriceBook
from otel_cost.reattribute import ReattributeResult, _restored, reattribute
from otel_cost.reprice import reprice
from otel_cost.store import Store, open_store

from .helpers import RunningServer, make_request, make_span
from .test_reprice import assert_rollups_match_raw, usage

NS_PER_MINUTE = 60 * 10**9
SEARCH_RULE = {"regex": "^search-", "from": "resource:service.name", "value": "search"}
#: The new rules: a squad on the span, LiteLLM's team alias, the resource's team, then search-* services.
RULES: dict[str, Any] = {
    "presets": ["litellm"],
    "dimensions": {"team": ["span:app.squad", "preset:litellm", "resource:team", SEARCH_RULE]},
    "tags": {"squad": ["span:app.squad"]},
}
LITELLM_TEAM = "preset:litellm span:metadata.user_api_key_team_alias"
REGEX_TEAM = "regex:resource:service.name:^search-"


def export(server: RunningServer, resource: dict[str, Any], spans: list[Any]) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(make_request(spans, resource=resource), timeout=30)


def send_calls(server: RunningServer) -> dict[str, str]:
    """Eight rows; returns span id (hex) -> what it is.

    search-api (no team anywhere): two recent calls, one 20 days old, and a nested pair whose outer
    span (an instrumentation library's) alone says `app.squad`; checkout-assistant (team payments on
    its resource); a LiteLLM proxy call with a virtual key's team alias; a call without usage.
    """
    now = time.time_ns()
    trace, outer_id, inner_id = os.urandom(16), os.urandom(8), os.urandom(8)
    spans = {
        "search-recent": make_span(usage("openai", "gpt-4o"), start_ns=now - 40 * NS_PER_MINUTE),
        "search-hour-ago": make_span(usage("openai", "gpt-4o-mini"), start_ns=now - 150 * NS_PER_MINUTE),
        "search-old": make_span(usage("openai", "gpt-4o"), start_ns=now - 20 * 24 * 60 * NS_PER_MINUTE),
        "outer": make_span(
            usage("openai", "gpt-4o", **{"app.squad": "relevance"}),
            trace_id=trace,
            span_id=outer_id,
            start_ns=now - 30 * NS_PER_MINUTE,
            duration_ns=3 * 10**9,
        ),
        "inner": make_span(
            usage("openai", "gpt-4o"),
            trace_id=trace,
            span_id=inner_id,
            parent_span_id=outer_id,
            start_ns=now - 30 * NS_PER_MINUTE + 10**9,
        ),
    }
    export(server, {"service.name": "search-api"}, list(spans.values()))
    checkout = make_span(usage("openai", "gpt-4o"), start_ns=now - 20 * NS_PER_MINUTE)
    export(server, {"service.name": "checkout-assistant", "team": "payments"}, [checkout])
    proxied = make_span(
        usage("openai", "gpt-4o", **{"metadata.user_api_key_team_alias": "ranking"}), start_ns=now - 10 * NS_PER_MINUTE
    )
    no_usage = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}
    quiet = make_span(no_usage, start_ns=now - 9 * NS_PER_MINUTE)
    export(server, {"service.name": "litellm-proxy"}, [proxied, quiet])
    named = {span.span_id.hex(): name for name, span in spans.items()}
    named.update({checkout.span_id.hex(): "checkout", proxied.span_id.hex(): "litellm", quiet.span_id.hex(): "quiet"})
    return named


def owners(store: Store, names: dict[str, str]) -> dict[str, list[Any]]:
    """What each call is owned by: team, cost center, feature, the team's rule, owner_rules, tags, billable."""
    rows = store.query(
        "SELECT span_id, team, cost_center, feature, owner_source, owner_rules['team'], "
        "arrayStringConcat(arrayMap((k, v) -> concat(k, '=', v), mapKeys(tags), mapValues(tags)), ','), billable "
        "FROM requests"
    ).rows
    return {names[row[0]]: row[1:] for row in rows}


def snapshot(store: Store) -> dict[str, Any]:
    """Everything a run may change, as exact text."""
    return {
        "requests": store.query(
            "SELECT span_id, cost_center, team, feature, agent, environment, owner_source, owner_rules, tags, "
            "toString(cost), ingested_at FROM requests ORDER BY span_id"
        ).rows,
        **{
            table: store.query(
                f"SELECT {bucket}, cost_center, team, feature, agent, service_name, environment, provider, model, "
                f"billable, priced, sum(calls), toString(sum(cost)) FROM {table} "
                "GROUP BY ALL HAVING sum(calls) != 0 OR sum(cost) != 0 ORDER BY ALL"
            ).rows
            for table, bucket in (("spend_minute", "minute"), ("spend_hour", "hour"))
        },
    }


def billable_total(store: Store, where: str = "1") -> Decimal:
    return Decimal(store.query(f"SELECT toString(sum(cost)) FROM requests WHERE billable AND {where}").scalar())


def post(url: str, body: dict[str, Any], token: str) -> tuple[int, str]:
    """(HTTP status, error code) of a JSON POST that fails."""
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Authorization": f"Bearer {token}"}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(request, timeout=10)
    return failed.value.code, json.loads(failed.value.read())["error"]["code"]


def month_ago() -> datetime:
    return datetime.now(UTC) - timedelta(days=30)


def test_new_rules_move_calls_between_owners_and_the_rollups_stay_exact(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server()  # the built-in rules
    names = send_calls(server)
    store = server.server.store
    assert store is not None
    before = owners(store, names)
    assert {name: row[0] for name, row in before.items()} == {
        "search-recent": "unattributed",
        "search-hour-ago": "unattributed",
        "search-old": "unattributed",
        "outer": "unattributed",
        "inner": "unattributed",
        "checkout": "payments",
        "litellm": "unattributed",
        "quiet": "unattributed",
    }
    assert before["outer"][-1] == 0 and before["inner"][-1] == 1  # the nested pair: the inner call is billed
    spend = billable_total(store)
    unattributed = billable_total(store, "team = 'unattributed'")
    assert 0 < unattributed < spend
    assert_rollups_match_raw(store)

    # The rules the rows were attributed with change nothing, whatever their text stored.
    same = reattribute(store, None, month_ago())
    assert (same.rows_examined, same.rows_changed, same.status) == (8, 0, "ok")
    untouched = snapshot(store)

    rules = AttributionConfig.model_validate(RULES)
    seen: list[tuple[int, int]] = []
    dry = reattribute(
        store, rules, month_ago(), dry_run=True, progress=lambda done, total: seen.append((done, total)), chunk_rows=3
    )
    assert (dry.rows_examined, dry.rows_changed, dry.rows_moved) == (8, 6, 6)
    assert len(seen) > 2 and seen[-1] == (8, 8)
    assert snapshot(store) == untouched
    assert store.query("SELECT count() FROM reattribute_runs").scalar() == 1  # the first run only

    result = reattribute(store, rules, month_ago())
    assert (result.rows_examined, result.rows_changed, result.rows_moved, result.status) == (8, 6, 6, "ok")
    after = owners(store, names)
    assert after == {
        "search-recent": ["search", "search", "search-api", REGEX_TEAM, REGEX_TEAM, "", 1],
        "search-hour-ago": ["search", "search", "search-api", REGEX_TEAM, REGEX_TEAM, "", 1],
        "search-old": ["search", "search", "search-api", REGEX_TEAM, REGEX_TEAM, "", 1],
        # The kept inner call still inherits what only the outer span says.
        "outer": ["relevance", "relevance", "search-api", "span:app.squad", "span:app.squad", "squad=relevance", 0],
        "inner": ["relevance", "relevance", "search-api", "span:app.squad", "span:app.squad", "squad=relevance", 1],
        "checkout": before["checkout"],
        "litellm": ["ranking", "ranking", "litellm-proxy", LITELLM_TEAM, LITELLM_TEAM, "", 1],
        "quiet": ["unattributed", "unattributed", "litellm-proxy", "unattributed", "unattributed", "", 1],
    }
    assert billable_total(store) == spend == result.billable_total
    assert (result.unattributed_before, result.unattributed_after) == (unattributed, 0)
    assert_rollups_match_raw(store)
    teams = {(change.dimension, change.old, change.new): change.rows for change in result.changes}
    assert teams[("team", "unattributed", "search")] == 3 and teams[("team", "unattributed", "ranking")] == 1
    assert store.query(
        "SELECT run_id, rows_examined, rows_changed, rows_moved, toString(billable_total), "
        "toString(unattributed_after), rules_digest, status, JSONExtractString(rules, 'tags', 'squad', 1) "
        "FROM reattribute_runs WHERE rows_changed > 0"
    ).rows == [[result.run_id, 8, 6, 6, str(spend), "0", result.rules_digest, "ok", "span:app.squad"]]
    assert store.query("SELECT count() FROM system.tables WHERE name LIKE 'reattribute_pending%'").scalar() == 0

    # Idempotent: the second run finds nothing to change.
    attributed = snapshot(store)
    again = reattribute(store, rules, month_ago())
    assert (again.rows_changed, again.billable_total) == (0, spend)
    assert snapshot(store) == attributed

    # Back to the built-in rules, then forward again: the rows come back exactly (their stored
    # attributes, costs and arrival times are carried over), and the rollups are exact all along.
    back = reattribute(store, None, month_ago())
    assert back.rows_changed == 6
    assert owners(store, names) == before
    assert_rollups_match_raw(store)
    forward = reattribute(store, rules, month_ago())
    assert forward.rows_changed == 6
    assert snapshot(store) == attributed
    assert_rollups_match_raw(store)


def test_an_interrupted_run_is_completed_by_the_next_of_either_kind(
    make_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server()
    names = send_calls(server)
    store = server.server.store
    assert store is not None
    rules = AttributionConfig.model_validate(RULES)
    # The minute rollup goes missing while the run corrects the rollups: the hour corrections are in,
    # the rows not yet rewritten; the run is not recorded.
    store.execute("RENAME TABLE spend_minute TO spend_minute_away")
    with pytest.raises(OtelCostError, match="run `otel-cost reattribute` again"):
        reattribute(store, rules, month_ago())
    store.execute("RENAME TABLE spend_minute_away TO spend_minute")
    assert store.query("SELECT count() FROM reattribute_runs").scalar() == 0

    # A re-pricing run settles it first (the hour corrections, carrying the same token, are not repeated).
    priced = reprice(store, PriceBook(), month_ago())
    assert priced.rows_changed == 0 and len(priced.recovered) == 1
    assert store.query("SELECT status, rows_changed FROM reattribute_runs").rows == [["recovered", 6]]
    assert owners(store, names)["litellm"][0] == "ranking"
    assert_rollups_match_raw(store)
    assert reattribute(store, rules, month_ago()).rows_changed == 0

    # A run that dies after its work but before recording it: the next run completes it without
    # correcting the rollups again (the pending table says they are, whatever the deduplication
    # tokens still remember).
    def crash(self: Any) -> None:
        raise OtelCostError("the process died")

    monkeypatch.setattr(reattribute_module._Run, "_record", crash)
    with pytest.raises(OtelCostError, match="the process died"):
        reattribute(store, None, month_ago())
    monkeypatch.undo()

    def corrected_twice(*args: Any) -> None:
        raise AssertionError("the rollups were corrected twice")

    monkeypatch.setattr(reattribute_module, "correct_rollups", corrected_twice)
    back = reattribute(store, None, month_ago())
    assert back.rows_changed == 0 and len(back.recovered) == 1
    assert owners(store, names)["litellm"][0] == "unattributed"
    assert_rollups_match_raw(store)
    assert store.query("SELECT status, rows_changed FROM reattribute_runs ORDER BY finished_at, status DESC").rows == [
        ["recovered", 6],
        ["ok", 0],
        ["recovered", 6],
        ["ok", 0],
    ]


def test_rules_that_read_what_rows_do_not_store_are_refused(store: Store) -> None:
    rules = AttributionConfig.model_validate({"tags": {"model": ["span:gen_ai.request.model"]}})
    with pytest.raises(ValueError, match=r"gen_ai\.request\.model"):
        reattribute(store, rules, month_ago())


def test_stored_text_is_read_back_as_the_pipeline_saw_it() -> None:
    assert _restored("payments") == ("payments", False)
    assert _restored("true") == (True, False) and _restored("false") == (False, False)
    assert _restored('["prod", "beta"]') == (["prod", "beta"], False)
    assert _restored("[not json") == ("[not json", False)
    assert _restored("x" * 256 + "…") == ("x" * 256, True)  # cut on the way in
    assert _restored("é" * 200 + "…") == ("é" * 200, False)  # over 256 bytes, marked, whole
    assert _restored("to be continued…") == ("to be continued…", False)


def test_cli_goes_through_a_running_server_with_its_rules(make_server: Callable[..., RunningServer]) -> None:
    first = make_server()  # the built-in rules on arrival
    names = send_calls(first)
    first.close()
    server = make_server({"attribution": RULES, "api": {"admin_tokens": ["s3cret"]}})
    store = server.server.store
    assert store is not None
    spend = billable_total(store)
    since = f"{month_ago():%Y-%m-%d}"
    common = ["--api", server.api_url, "--store", "chdb:/nonexistent/never-opened"]

    refused = CliRunner().invoke(cli, ["reattribute", "--since", since, *common])
    assert refused.exit_code == 1 and "missing bearer token" in refused.output
    assert post(f"{server.api_url}/v1/reattribute", {"since": "2026-12-01", "until": "2026-11-01"}, "s3cret") == (
        400,
        "bad_request",
    )
    with urllib.request.urlopen(f"{server.api_url}/openapi.json", timeout=10) as response:
        assert "/v1/reattribute" in json.loads(response.read())["paths"]
    dry = CliRunner().invoke(cli, ["reattribute", "--since", since, "--dry-run", "--token", "s3cret", *common])
    assert dry.exit_code == 0, dry.output
    assert f"re-attributed by the server at {server.api_url}" in dry.stderr
    assert "dry run (nothing written)" in dry.stdout and "rows changed    6" in dry.stdout
    assert any(line.split() == ["team", "unattributed", "search", "3", "0.01236"] for line in dry.stdout.splitlines())
    assert owners(store, names)["litellm"][0] == "unattributed"

    run = CliRunner().invoke(cli, ["reattribute", "--since", since, "--token", "s3cret", "--format", "json", *common])
    assert run.exit_code == 0, run.output
    result = ReattributeResult.from_dict(json.loads(run.stdout))
    assert (result.rows_changed, result.billable_total, result.unattributed_after) == (6, spend, 0)
    assert owners(store, names)["litellm"][:2] == ["ranking", "ranking"]
    assert store.query("SELECT run_id, rows_changed FROM reattribute_runs").rows == [[result.run_id, 6]]
    assert_rollups_match_raw(store)
    assert billable_total(store) == spend


def test_cli_opens_the_store_when_no_server_runs(
    make_server: Callable[..., RunningServer], store_url: str, tmp_path: Path
) -> None:
    server = make_server()
    names = send_calls(server)
    server.close()  # the embedded store is free again
    config = tmp_path / "otel-cost.yaml"
    config.write_text(json.dumps({"attribution": RULES}))
    since = f"{month_ago():%Y-%m-%d}"
    common = ["--store", store_url, "--api", "http://127.0.0.1:9", "--config", str(config)]

    first = CliRunner().invoke(cli, ["reattribute", "--since", since, *common])
    assert first.exit_code == 0, first.output
    assert "opened chdb:" in first.stderr and "the attribution rules of" in first.stderr
    lines = first.stdout.splitlines()
    assert "rows examined   8" in lines and "rows changed    6" in lines
    assert "unattributed    0.02436 USD before, 0 USD after" in lines

    second = CliRunner().invoke(cli, ["reattribute", "--since", since, "--format", "json", *common])
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["rows_changed"] == 0

    store = open_store(store_url)  # the store holds what the runs wrote
    try:
        assert owners(store, names)["inner"][0] == "relevance"
        assert_rollups_match_raw(store)
    finally:
        store.close()

    refused = CliRunner().invoke(cli, ["reattribute", "--since", since, "--until", since, *common])
    assert refused.exit_code != 0 and "must be before --until" in refused.output
