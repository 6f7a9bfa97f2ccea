"""What every store does: apply the DDL, insert batches of request rows exactly once, answer queries.

Two implementations share this interface and the same SQL: `EmbeddedStore` (chDB, in process) and
`ServerStore` (a ClickHouse server or cluster through clickhouse-connect).
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..errors import QueryError
from .readonly import check_statement, format_error
from .schema import migrations
from .sql import quote

__all__ = ["INSERT_SETTINGS", "QUERY_SETTINGS", "USER_QUERY_LIMITS", "QueryResult", "Store"]

logger = logging.getLogger(__name__)

#: Every insert: synchronous (the ack waits for it), deduplicated by the batch's token on retry, in
#: the raw table and in every materialized view (see ../shared/reference/clickhouse.md).
INSERT_SETTINGS = {
    "async_insert": 0,
    "insert_deduplicate": 1,
    "deduplicate_blocks_in_dependent_materialized_views": 1,
}

#: Every query: money as exact strings, counts as numbers; bounded time.
QUERY_SETTINGS = {
    "output_format_json_quote_decimals": 1,
    "output_format_json_quote_64bit_integers": 0,
    "max_execution_time": 60,
}

#: User queries (`Store.user_query`: `otel-cost sql`, `POST /v1/sql`, `otel-cost review`) run read-only
#: under these limits too; a query over one is refused with the engine's message (e.g. "Limit for result
#: exceeded, max rows: 1.00 million"). The server's own reads (enforcer, alerts, dedup preload,
#: re-pricing) are not bound by them: they read what they must.
USER_QUERY_LIMITS: dict[str, int | str] = {
    "max_execution_time": 60,  # seconds
    "max_memory_usage": 2 * 1024**3,  # bytes per query
    "max_result_rows": 1_000_000,
    "max_result_bytes": 256 * 1024**2,  # uncompressed, in the engine
    "result_overflow_mode": "throw",  # an error, never a silently cut result
}

_LIMIT_HINTS = {
    "TOO_MANY_ROWS_OR_BYTES": f"queries return at most {USER_QUERY_LIMITS['max_result_rows']:,} rows and "
    f"{int(USER_QUERY_LIMITS['max_result_bytes']) // 1024**2} MiB: add a LIMIT, or aggregate",
    "MEMORY_LIMIT_EXCEEDED": f"queries use at most {int(USER_QUERY_LIMITS['max_memory_usage']) // 1024**3} GiB "
    "of memory: narrow the time range, or aggregate on fewer keys",
    "TIMEOUT_EXCEEDED": f"queries run for at most {USER_QUERY_LIMITS['max_execution_time']} seconds: narrow the "
    "time range, or read a rollup (spend_minute, spend_hour)",
}


@dataclass
class QueryResult:
    columns: list[tuple[str, str]]  # (name, ClickHouse type)
    rows: list[list[Any]]

    @classmethod
    def from_json_compact(cls, payload: bytes | str) -> QueryResult:
        if not payload:
            return cls([], [])
        document = json.loads(payload, parse_float=Decimal)
        columns = [(column["name"], column["type"]) for column in document.get("meta", [])]
        return cls(columns, document.get("data", []))

    def dicts(self) -> list[dict[str, Any]]:
        names = [name for name, _ in self.columns]
        return [dict(zip(names, row, strict=True)) for row in self.rows]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows and self.rows[0] else None


class Store(ABC):
    """A place `requests` rows live. Subclasses translate their driver's errors into StoreError."""

    url: str  # redacted, for messages

    def migrate(self) -> list[str]:
        """Apply every DDL file not yet recorded; returns the names applied now."""
        self.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name String, applied_at DateTime('UTC') "
            "DEFAULT now()) ENGINE = MergeTree ORDER BY name"
        )
        applied = {row[0] for row in self.query("SELECT name FROM schema_migrations").rows}
        done = []
        for name, statements in migrations():
            if name in applied:
                continue
            for statement in statements:
                self.execute(statement)
            self.execute(f"INSERT INTO schema_migrations (name) VALUES ('{name}')")
            logger.info("applied %s to %s", name, self.url)
            done.append(name)
        return done

    @abstractmethod
    def execute(self, sql: str) -> None:
        """Run a statement with write access (DDL, internal maintenance)."""

    @abstractmethod
    def insert_batch(self, data: bytes, token: str) -> None:
        """Insert wire lines (`store.wire`, each ending in a newline) as one batch. Retrying with the
        same token never duplicates: the raw table and every rollup keep exactly one copy."""

    @abstractmethod
    def insert_outcomes(self, data: bytes, token: str) -> None:
        """Insert outcome lines (`store.wire.OUTCOME_COLUMNS`) into `outcomes`, once per token."""

    @abstractmethod
    def query(self, sql: str, *, readonly: bool = True) -> QueryResult:
        """Run a query; `readonly` (the default) refuses anything but reads."""

    def insert_rows(self, table: str, rows: list[dict[str, Any]], token: str) -> None:
        """Insert a few rows of one of otel-cost's own small tables (alerts, deliveries) as JSON, once:
        a retry with the same token is ignored."""
        if not rows:
            return
        data = "\n".join(json.dumps(row, separators=(",", ":"), default=str) for row in rows)
        self.execute(
            f"INSERT INTO {table} SETTINGS insert_deduplicate = 1, insert_deduplication_token = {quote(token)} "
            f"FORMAT JSONEachRow\n{data}"
        )

    def user_query(self, sql: str) -> QueryResult:
        """A query someone typed: one read statement, checked (`store.readonly`), run read-only under
        USER_QUERY_LIMITS. Raises QueryError with the reason it was refused."""
        return QueryResult.from_json_compact(self.user_query_text(sql, "JSONCompact"))

    def user_query_text(self, sql: str, fmt: str) -> bytes:
        """`user_query`, its output in a ClickHouse format (e.g. CSVWithNames)."""
        try:
            answer = self._user_query_text(f"SELECT formatQuery({quote(sql)})", "JSONCompact")
        except QueryError as exc:
            raise QueryError(format_error(exc.message)) from None
        formatted = str(QueryResult.from_json_compact(answer).scalar() or "")
        if self._table_functions is None:
            names = self._user_query_text("SELECT name FROM system.table_functions", "JSONCompact")
            self._table_functions = frozenset(row[0] for row in QueryResult.from_json_compact(names).rows)
        check_statement(formatted, self._table_functions)
        try:
            return self._user_query_text(formatted, fmt)
        except QueryError as exc:
            hint = next((text for code, text in _LIMIT_HINTS.items() if code in exc.message), None)
            if hint is None:
                raise
            raise QueryError(f"{exc.message} ({hint})") from None

    _table_functions: frozenset[str] | None = None

    def _user_query_text(self, sql: str, fmt: str) -> bytes:
        """Run a user query read-only under USER_QUERY_LIMITS (stores that cannot apply the limits run
        it as `query_text`)."""
        return self.query_text(sql, fmt)

    def poll(self, sql: str, *, lane: str = "enforcer") -> QueryResult:
        """A read-only query for a background loop (`lane`: the enforcer's, or the alert detectors').
        Stores that can give each lane its own connection do, so a long user query, or a detector's
        scan, never delays cap state."""
        return self.query(sql)

    @abstractmethod
    def query_text(self, sql: str, fmt: str, *, readonly: bool = True) -> bytes:
        """Run a query and return its output in a ClickHouse format (e.g. CSVWithNames)."""

    @abstractmethod
    def close(self) -> None:
        """Release the store; idempotent."""
