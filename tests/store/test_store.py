"""The store: DDL from clickhouse/*.sql, exactly-once batch inserts, read-only queries, clear errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pytest

from otel_cost.errors import QueryError, StoreURLError
from otel_cost.store import Store, open_store, parse_store_url
from otel_cost.store.schema import migrations, sql_dir
from otel_cost.store.wire import INGEST_COLUMNS, encode_line, encode_map


def line(span_id: str, cost_units: int, **values: object) -> str:
    """One wire line with defaults for every column."""
    fields: dict[str, object] = {name: "" for name in INGEST_COLUMNS}
    fields.update(
        timestamp_ns=1_795_991_404_000_000_000,
        trace_id="5b8efff798038103d269b633813fc60c",
        span_id=span_id,
        input_tokens=1,
        cache_read_tokens=0,
        cache_write_tokens=0,
        cache_write_1h_tokens=0,
        output_tokens=0,
        reasoning_tokens=0,
        cost_units=cost_units,
        priced=1,
        billable=1,
        duration_ns=0,
        team="payments",
    )
    fields.update(values)
    return encode_line(tuple(str(fields[name]) for name in INGEST_COLUMNS))


def batch(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def test_migrations_are_recorded_and_idempotent(store: Store) -> None:
    names = [name for name, _ in migrations()]
    assert names == [
        "000_schema_migrations.sql",
        "001_requests.sql",
        "002_spend_rollups.sql",
        "003_ingest.sql",
        "004_processing.sql",
        "005_reprice_runs.sql",
        "006_attribution.sql",
        "007_reattribute_runs.sql",
        "008_alerts.sql",
        "009_review.sql",
    ]
    assert store.migrate() == []
    assert [r[0] for r in store.query("SELECT name FROM schema_migrations ORDER BY name").rows] == names
    tables = {r[0] for r in store.query("SELECT name FROM system.tables WHERE database = currentDatabase()").rows}
    assert {"requests", "spend_minute", "spend_hour", "spend_minute_mv", "spend_hour_mv"} <= tables


def test_sql_files_are_plain_clickhouse_sql() -> None:
    for path in sql_dir().glob("*.sql"):
        text = path.read_text()
        assert "{" not in text.replace("{}", ""), f"{path.name} has template placeholders"


def test_a_call_without_attributes_has_empty_maps(store: Store) -> None:
    store.insert_batch(batch([line("00000000000000c1", 1)]), token="c")
    assert store.query("SELECT attributes, resource_attributes, flags FROM requests").rows == [[{}, {}, []]]


def test_a_retried_batch_is_stored_once_in_raw_and_rollups(store: Store) -> None:
    lines = [line("00000000000000a1", 4_750_000_000_000_000_000_000), line("00000000000000a2", 1)]
    for _ in range(3):
        store.insert_batch(batch(lines), token="batch-1")
    assert store.query("SELECT count(), toString(sum(cost)) FROM requests").rows == [[2, "0.004750000000000000000001"]]
    for rollup in ("spend_minute", "spend_hour"):
        assert store.query(f"SELECT sum(calls), toString(sum(cost)) FROM {rollup}").rows == [
            [2, "0.004750000000000000000001"]
        ]


def test_costs_keep_24_decimal_places_and_maps_and_flags_round_trip(store: Store) -> None:
    attributes = {
        "s": 'tab\tnewline\nbackslash\\ quote" é',
        "i": 3,
        "f": 0.5,
        "b": False,
        "raw": b"\x00\xff",
        "l": ["stop", 1],
        "m": {"a": 1},
        "long": "y" * 300,
        "edge": "z" * 256,
        "": "empty key",
        "sep\x1fkey": "sep\x1fvalue",
    }
    attribute_keys, attribute_values = encode_map(attributes)
    store.insert_batch(
        batch(
            [
                line(
                    "00000000000000b1",
                    123_456_789_012_345_678_901_234_567_890,
                    flags="cache_exclusive_inferred\x1ftotal_mismatch",
                    attribute_keys=attribute_keys,
                    attribute_values=attribute_values,
                    resource_keys="service.name",
                    resource_values="x",
                    error_type="multi\nline",
                )
            ]
        ),
        token="b",
    )
    result = store.query("SELECT cost, flags, attributes, resource_attributes, error_type FROM requests").rows[0]
    assert Decimal(result[0]) == Decimal("123456.789012345678901234567890")
    assert result[1] == ["cache_exclusive_inferred", "total_mismatch"]
    assert result[2] == {
        "s": 'tab\tnewline\nbackslash\\ quote" é',
        "i": "3",
        "f": "0.5",
        "b": "false",
        "raw": "00ff",
        "l": '["stop", 1]',
        "m": '{"a": 1}',
        "long": "y" * 256 + "…",
        "edge": "z" * 256,
        "": "empty key",
        "sep key": "sep value",
    }
    assert result[3] == {"service.name": "x"}
    assert result[4] == "multi\nline"


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO requests (span_id) VALUES ('x')",
        "DROP TABLE requests",
        "CREATE TABLE evil (a UInt8) ENGINE = Memory",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SET readonly = 0",
    ],
)
def test_queries_are_read_only(store: Store, sql: str) -> None:
    with pytest.raises(QueryError) as caught:
        store.query(sql)
    assert "readonly" in caught.value.message.lower()


def test_a_bad_query_is_a_query_error_with_clickhouse_s_message(store: Store) -> None:
    with pytest.raises(QueryError) as caught:
        store.query("SELECT nope FROM requests")
    assert "Unknown expression identifier" in caught.value.message or "nope" in caught.value.message


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "store URL is empty"),
        ("postgres://x", "unknown scheme 'postgres'"),
        ("chdb:", "has no path"),
        ("chdb:/tmp/x?db=1", "unknown option 'db'"),
        ("clickhouse://", "has no host"),
        ("clickhouse://h:99999/db", "invalid port"),
        ("clickhouse://h/bad-name", "database name 'bad-name'"),
    ],
)
def test_bad_store_urls_say_what_is_expected(url: str, message: str) -> None:
    with pytest.raises(StoreURLError) as caught:
        parse_store_url(url)
    assert message in caught.value.message


def test_store_urls() -> None:
    assert parse_store_url("chdb:./otel-cost-data").path == Path("otel-cost-data")
    server = parse_store_url("clickhouses://otel:p%40ss@ch.internal/finops")
    assert (server.host, server.port, server.username, server.password, server.database, server.secure) == (
        "ch.internal",
        8443,
        "otel",
        "p@ss",
        "finops",
        True,
    )
    assert server.redacted() == "clickhouses://otel@ch.internal:8443/finops"


def test_a_store_owned_by_another_process_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "owned"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from otel_cost.store import open_store
            store = open_store("chdb:{path}")
            print("open", flush=True)
            time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        probe = subprocess.run(
            [sys.executable, "-c", f"from otel_cost.store import open_store; open_store('chdb:{path}')"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        holder.kill()
        holder.wait()
    assert probe.returncode == 1
    assert f"StoreLockedError: the embedded store at {path} is in use by another process" in probe.stderr
    assert "Is `otel-cost serve` already running?" in probe.stderr
    time.sleep(0.1)
    reopened = subprocess.run(  # after the owner died (even by SIGKILL) the store opens again
        [sys.executable, "-c", f"from otel_cost.store import open_store; print(open_store('chdb:{path}').migrate())"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert reopened.returncode == 0, reopened.stderr
    assert reopened.stdout.strip() == "[]"


def test_server_store_against_a_clickhouse_server() -> None:
    import os

    url = os.environ.get("OTEL_COST_CLICKHOUSE_URL")
    if not url:
        pytest.skip("set OTEL_COST_CLICKHOUSE_URL=clickhouse://user:pass@host:8123/db to test the server store")
    store = open_store(url)
    try:
        token = f"test-{time.time_ns()}"
        span = f"{time.time_ns() % 16**16:016x}"
        for _ in range(2):
            store.insert_batch(batch([line(span, 4_750_000_000_000_000_000_000)]), token=token)
        assert store.query(f"SELECT count(), toString(sum(cost)) FROM requests WHERE span_id = '{span}'").rows == [
            [1, "0.00475"]
        ]
        with pytest.raises(QueryError):
            store.query("DROP TABLE requests")
        delivery = {"alert_id": token, "sink": "slack", "delivered_at": "2026-12-01 00:00:00.000", "attempts": 1}
        for _ in range(2):  # a retried insert keeps one row
            store.insert_rows("alert_deliveries", [{**delivery, "outcome": "delivered", "reason": "{}"}], token)
        assert store.query(f"SELECT count(), any(reason) FROM alert_deliveries WHERE alert_id = '{token}'").rows == [
            [1, "{}"]
        ]
    finally:
        store.close()


def test_small_tables_take_json_rows_once_per_token(store: Store) -> None:
    row = {"alert_id": "a1", "sink": "slack", "delivered_at": "2026-12-01 00:00:00.000", "attempts": 2}
    for _ in range(2):
        store.insert_rows("alert_deliveries", [{**row, "outcome": "failed", "reason": "HTTP 400: {'x': \"y\"}"}], "tok")
    assert store.query("SELECT attempts, outcome, reason FROM alert_deliveries").rows == [
        [2, "failed", "HTTP 400: {'x': \"y\"}"]
    ]
