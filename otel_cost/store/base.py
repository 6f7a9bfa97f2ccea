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

from .schema import migrations
from .sql import quote

__all__ = ["INSERT_SETTINGS", "QueryResult", "Store"]

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
