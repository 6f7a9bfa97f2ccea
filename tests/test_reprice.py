"""Re-pricing: stored rows priced again with the current book, rollups equal to the raw rows to the last
decimal before and after, idempotent, recorded; the library, the CLI on the store and through the API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from otel_cost.cli import cli
from otel_cost.config import PriceOverride
from otel_cost.errors import OtelCostError
from otel_cost.pricing import PriceBook
from otel_cost.reprice import RepriceResult, reprice
from otel_cost.store import Store

from .helpers import RunningServer, make_request, make_span

ACME_PRICES = {"input_mtok": Decimal("1"), "output_mtok": Decimal("2")}
ACME_OVERRIDE = PriceOverride(name="acme-list", provider="acme", model="acme-9000", prices=ACME_PRICES)
ACME_CONFIG = {
    "name": "acme-list",
    "provider": "acme",
    "model": "acme-9000",
    "prices": {"input_mtok": "1", "output_mtok": "2"},
}
ACME_CALL = Decimal("0.0018")  # 1200 input tokens at $1/M + 300 output tokens at $2/M
GPT_4O_CALL = Decimal("0.006")

NS_PER_MINUTE = 60 * 10**9
#: The rollups' model dimension and every other dimension, as 002_spend_rollups.sql computes them.
DIMENSIONS = (
    "cost_center, team, feature, agent, service_name, environment, provider, "
    "if(priced_model != '', priced_model, if(response_model != '', response_model, request_model)), billable, priced"
)
ROLLUP_DIMENSIONS = "cost_center, team, feature, agent, service_name, environment, provider, model, billable, priced"
TOKENS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


def usage(
    provider: str, model: str, input_tokens: int = 1200, output_tokens: int = 300, **extra: Any
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
    }
    attributes.update(extra)
    return attributes


def send_calls(server: RunningServer) -> int:
    """Seven rows: acme-9000 (unknown to the catalog) in three buckets, one 20 days old; an acme agent
    span (stored billable = 0); a gpt-4o call; gpt-4o calls without usage, failed and successful."""
    now = time.time_ns()
    no_usage = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}
    spans = [
        make_span(usage("acme", "acme-9000"), start_ns=now - 150 * NS_PER_MINUTE),
        make_span(usage("acme", "acme-9000"), start_ns=now - 40 * NS_PER_MINUTE),
        make_span(usage("acme", "acme-9000"), start_ns=now - 20 * 24 * 60 * NS_PER_MINUTE),
        make_span(
            usage("acme", "acme-9000", 2400, 600, **{"gen_ai.operation.name": "invoke_agent"}),
            start_ns=now - 41 * NS_PER_MINUTE,
            name="invoke_agent triage",
        ),
        make_span(usage("openai", "gpt-4o"), start_ns=now - 40 * NS_PER_MINUTE),
        make_span(no_usage, start_ns=now - 39 * NS_PER_MINUTE, error=True),
        make_span(no_usage, start_ns=now - 38 * NS_PER_MINUTE),
    ]
    with grpc.insecure_channel(server.grpc_target) as channel:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(make_request(spans), timeout=30)
    return len(spans)


def snapshot(store: Store) -> dict[str, Any]:
    """Everything a run may change, as exact text."""
    return {
        "requests": store.query(
            "SELECT span_id, toString(cost), priced, priced_model, price_version, unpriced_reason FROM requests "
            "ORDER BY span_id"
        ).rows,
        **{
            table: store.query(
                f"SELECT {bucket}, {ROLLUP_DIMENSIONS}, sum(calls), toString(sum(cost)) FROM {table} "
                f"GROUP BY ALL HAVING sum(calls) != 0 OR sum(cost) != 0 ORDER BY ALL"
            ).rows
            for table, bucket in (("spend_minute", "minute"), ("spend_hour", "hour"))
        },
    }


def assert_rollups_match_raw(store: Store) -> None:
    """Per bucket and dimension, and in total: calls, cost and tokens of each rollup equal the raw rows."""
    sums = ", ".join(f"sum({column})" for column in TOKENS)
    for table, bucket, start, recent in (
        ("spend_hour", "hour", "toStartOfHour", "1"),
        # spend_minute keeps 14 days (TTL): older buckets are being dropped, not corrected.
        ("spend_minute", "minute", "toStartOfMinute", "timestamp > now() - INTERVAL 14 DAY"),
    ):
        raw = store.query(
            f"SELECT {start}(timestamp), {DIMENSIONS}, count(), toString(sum(cost)), {sums} FROM requests "
            f"WHERE {recent} GROUP BY ALL"
        ).rows
        rollup = store.query(
            f"SELECT {bucket}, {ROLLUP_DIMENSIONS}, sum(calls), toString(sum(cost)), {sums} FROM {table} "
            f"WHERE {recent.replace('timestamp', bucket)} GROUP BY ALL "
            f"HAVING sum(calls) != 0 OR sum(cost) != 0 OR {' OR '.join(f'sum({c}) != 0' for c in TOKENS)}"
        ).rows

        def exact(rows: list[list[Any]]) -> list[tuple[Any, ...]]:
            return sorted(tuple(Decimal(v) if i == 12 else v for i, v in enumerate(row)) for row in rows)

        assert exact(rollup) == exact(raw), table
        total_raw = store.query(f"SELECT toString(sum(cost)) FROM requests WHERE billable AND {recent}").scalar()
        total_rollup = store.query(
            f"SELECT toString(sum(cost)) FROM {table} WHERE billable AND {recent.replace('timestamp', bucket)}"
        ).scalar()
        assert Decimal(total_rollup) == Decimal(total_raw), table


def acme_rows(store: Store) -> list[list[Any]]:
    return store.query(
        "SELECT toString(cost), priced, priced_model, price_version, unpriced_reason, billable FROM requests "
        "WHERE provider = 'acme' ORDER BY billable, timestamp"
    ).rows


def billable_total(store: Store) -> Decimal:
    return Decimal(store.query("SELECT toString(sum(cost)) FROM requests WHERE billable").scalar())


def unpriced_models(server: RunningServer) -> list[str]:
    """What `otel-cost prices unpriced` lists, through the running server."""
    result = CliRunner().invoke(cli, ["prices", "unpriced", "--api", server.api_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    return [row["model"] for row in json.loads(result.stdout)]


def month_ago() -> datetime:
    return datetime.now(UTC) - timedelta(days=30)


def test_an_unknown_model_is_priced_after_an_override_and_the_rollups_stay_exact(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server()
    rows = send_calls(server)
    store = server.server.store
    assert store is not None
    before = acme_rows(store)
    assert [row[1] for row in before] == [0, 0, 0, 0]  # stored with tokens, flagged unpriced, never $0 silently
    assert all("not in the price catalog" in row[4] for row in before)
    assert billable_total(store) == GPT_4O_CALL
    assert_rollups_match_raw(store)
    assert "acme-9000" in unpriced_models(server)
    untouched = snapshot(store)
    book = PriceBook([ACME_OVERRIDE])

    # A dry run prices everything (here two rows per chunk) and writes nothing.
    seen: list[tuple[int, int]] = []
    dry = reprice(
        store, book, month_ago(), dry_run=True, progress=lambda done, total: seen.append((done, total)), chunk_rows=2
    )
    assert (dry.rows_examined, dry.rows_changed) == (rows, 4)
    assert (dry.old_total, dry.new_total, dry.difference) == (GPT_4O_CALL, GPT_4O_CALL + 3 * ACME_CALL, 3 * ACME_CALL)
    assert len(seen) > 2 and seen[-1] == (rows, rows)
    assert snapshot(store) == untouched
    assert store.query("SELECT count() FROM reprice_runs").scalar() == 0

    result = reprice(store, book, month_ago())
    assert (result.rows_examined, result.rows_changed, result.status) == (rows, 4, "ok")
    assert result.new_total == GPT_4O_CALL + 3 * ACME_CALL == billable_total(store)
    after = acme_rows(store)
    version = after[0][3]
    assert version.startswith("genai-prices@0.2.3+acme-list#") and version in result.price_versions
    assert after == [["0.0036", 1, "acme-9000", version, "", 0]] + [["0.0018", 1, "acme-9000", version, "", 1]] * 3
    assert_rollups_match_raw(store)
    assert "acme-9000" not in unpriced_models(server)
    # The calls without usage, failed (priced at 0) or successful (unpriced), are left as they were.
    assert store.query(
        "SELECT status, priced, toString(cost), unpriced_reason FROM requests WHERE input_tokens = 0 ORDER BY status"
    ).rows == [["error", 1, "0", ""], ["ok", 0, "0", "no usage reported"]]

    recorded = store.query(
        "SELECT run_id, rows_examined, rows_changed, toString(old_total), toString(new_total), price_versions, "
        "replaced_versions, status, since < until, finished_at >= started_at FROM reprice_runs"
    ).rows
    assert recorded == [
        [result.run_id, rows, 4, "0.006", "0.0114", result.price_versions, ["genai-prices@0.2.3"], "ok", 1, 1]
    ]

    # Idempotent: the second run finds nothing to change.
    priced_once = snapshot(store)
    again = reprice(store, book, month_ago())
    assert (again.rows_changed, again.old_total, again.new_total) == (0, result.new_total, result.new_total)
    assert snapshot(store) == priced_once
    assert store.query("SELECT count() FROM reprice_runs").scalar() == 2

    # Back to the catalog for the last day only (the 20-day-old call keeps its price), then forward
    # again: the same corrections as a run before are inserted again, not deduplicated away.
    back = reprice(store, PriceBook(), datetime.now(UTC) - timedelta(days=1))
    assert back.rows_changed == 3 and back.difference == -2 * ACME_CALL
    assert [row[1] for row in acme_rows(store)] == [0, 1, 0, 0]  # the agent span, the old call, two recent
    assert_rollups_match_raw(store)
    forward = reprice(store, book, datetime.now(UTC) - timedelta(days=1))
    assert forward.rows_changed == 3
    assert snapshot(store) == priced_once
    assert_rollups_match_raw(store)


def test_an_interrupted_run_is_completed_by_the_next(make_server: Callable[..., RunningServer]) -> None:
    server = make_server()
    send_calls(server)
    store = server.server.store
    assert store is not None
    book = PriceBook([ACME_OVERRIDE])
    # The minute rollup goes missing between the mutation and its correction: the rows are re-priced,
    # the hour corrections inserted, the minute ones not; the run is not recorded.
    store.execute("RENAME TABLE spend_minute TO spend_minute_away")
    with pytest.raises(OtelCostError, match="run `otel-cost reprice` again"):
        reprice(store, book, month_ago())
    store.execute("RENAME TABLE spend_minute_away TO spend_minute")
    assert [row[1] for row in acme_rows(store)] == [1, 1, 1, 1]
    assert store.query("SELECT count() FROM reprice_runs").scalar() == 0

    # The next run settles it first (the hour corrections, carrying the same token, are not repeated).
    result = reprice(store, book, month_ago())
    assert len(result.recovered) == 1 and result.rows_changed == 0
    assert store.query("SELECT status, rows_changed FROM reprice_runs ORDER BY status").rows == [
        ["ok", 0],
        ["recovered", 4],
    ]
    assert_rollups_match_raw(store)
    assert store.query("SELECT count() FROM system.tables WHERE name LIKE 'reprice_pending%'").scalar() == 0


def test_cli_opens_the_store_when_no_server_runs(
    make_server: Callable[..., RunningServer], store_url: str, tmp_path: Path
) -> None:
    server = make_server()
    send_calls(server)
    server.close()  # the embedded store is free again
    config = tmp_path / "otel-cost.yaml"
    config.write_text(json.dumps({"pricing": {"overrides": [ACME_CONFIG]}}))
    since = f"{month_ago():%Y-%m-%d}"
    common = ["--store", store_url, "--api", "http://127.0.0.1:9", "--config", str(config)]

    dry = CliRunner().invoke(cli, ["reprice", "--since", since, "--dry-run", *common])
    assert dry.exit_code == 0, dry.output
    assert "opened chdb:" in dry.stderr and "1 price override(s)" in dry.stderr
    assert "dry run (nothing written)" in dry.stdout and "rows changed    4" in dry.stdout

    first = CliRunner().invoke(cli, ["reprice", "--since", since, *common])
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert "rows examined   7" in lines and "rows changed    4" in lines
    assert "old total       0.006 USD (billable)" in lines and "difference      +0.0054 USD" in lines
    assert any(
        line.split()[:2] == ["acme", "acme-9000"] and line.split()[-3:] == ["4", "0", "0.0054"] for line in lines
    )

    second = CliRunner().invoke(cli, ["reprice", "--since", since, "--format", "json", *common])
    assert second.exit_code == 0, second.output
    document = json.loads(second.stdout)
    assert (document["rows_changed"], document["old_total"], document["new_total"]) == (0, "0.0114", "0.0114")

    until_first = CliRunner().invoke(cli, ["reprice", "--since", since, "--until", since, *common])
    assert until_first.exit_code != 0 and "must be before --until" in until_first.output


def test_cli_goes_through_a_running_server_with_its_price_book(make_server: Callable[..., RunningServer]) -> None:
    first = make_server()  # no override: acme-9000 is stored unpriced
    send_calls(first)
    first.close()
    server = make_server({"pricing": {"overrides": [ACME_CONFIG]}, "api": {"admin_tokens": ["s3cret"]}})
    store = server.server.store
    assert store is not None
    since = f"{month_ago():%Y-%m-%d}"
    common = ["--api", server.api_url, "--store", "chdb:/nonexistent/never-opened"]

    refused = CliRunner().invoke(cli, ["reprice", "--since", since, *common])
    assert refused.exit_code == 1 and "missing bearer token" in refused.output
    dry = CliRunner().invoke(cli, ["reprice", "--since", since, "--dry-run", "--token", "s3cret", *common])
    assert dry.exit_code == 0, dry.output
    assert f"re-priced by the server at {server.api_url}" in dry.stderr and "rows changed    4" in dry.stdout
    assert store.query("SELECT countIf(priced), count() FROM requests WHERE provider = 'acme'").rows == [[0, 4]]

    run = CliRunner().invoke(cli, ["reprice", "--since", since, "--token", "s3cret", "--format", "json", *common])
    assert run.exit_code == 0, run.output
    result = RepriceResult.from_dict(json.loads(run.stdout))
    assert (result.rows_changed, result.new_total - result.old_total) == (4, 3 * ACME_CALL)
    assert store.query("SELECT countIf(priced), count() FROM requests WHERE provider = 'acme'").rows == [[4, 4]]
    assert store.query("SELECT run_id, rows_changed FROM reprice_runs").rows == [[result.run_id, 4]]
    assert_rollups_match_raw(store)


def test_rows_sharing_a_span_key_keep_their_price(make_server: Callable[..., RunningServer]) -> None:
    server = make_server()
    send_calls(server)
    store = server.server.store
    assert store is not None
    # The same call stored twice (e.g. replayed after the deduplication window): a join by span key
    # cannot tell the two rows apart, so neither is changed, and the rollups stay exact.
    store.execute(
        "INSERT INTO requests SELECT * FROM requests WHERE provider = 'acme' AND billable ORDER BY timestamp LIMIT 1"
    )
    result = reprice(store, PriceBook([ACME_OVERRIDE]), month_ago())
    assert (result.rows_examined, result.rows_changed) == (8, 3)
    assert result.message.startswith("2 row(s) share a trace and span id")
    assert result.new_total == billable_total(store) == GPT_4O_CALL + 2 * ACME_CALL
    assert_rollups_match_raw(store)
