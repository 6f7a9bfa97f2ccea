"""A ClickHouse server or cluster through clickhouse-connect (HTTP). Same tables, same SQL."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from ..errors import QueryError, StoreError, StoreUnavailableError, insert_error
from .base import INSERT_SETTINGS, QUERY_SETTINGS, USER_QUERY_LIMITS, QueryResult, Store
from .url import StoreURL
from .wire import OUTCOME_COLUMNS

__all__ = ["ServerStore"]

logger = logging.getLogger(__name__)


class ServerStore(Store):
    def __init__(self, url: StoreURL) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import ClickHouseError

        self._errors = ClickHouseError
        self.url = url.redacted()
        self.database = url.database
        self._lock = threading.Lock()  # clickhouse-connect clients are not safe across threads
        try:
            bootstrap = clickhouse_connect.get_client(
                host=url.host, port=url.port, username=url.username, password=url.password, secure=url.secure
            )
            bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {url.database}")
            bootstrap.close()
            self._client = clickhouse_connect.get_client(
                host=url.host,
                port=url.port,
                username=url.username,
                password=url.password,
                database=url.database,
                secure=url.secure,
                settings=QUERY_SETTINGS,
            )
        except ClickHouseError as exc:
            raise StoreUnavailableError(f"cannot reach the ClickHouse server at {self.url}: {exc}") from exc
        except Exception as exc:
            raise StoreError(f"cannot connect to {self.url}: {exc}") from exc

    def execute(self, sql: str) -> None:
        with self._lock:
            try:
                self._client.command(sql)
            except self._errors as exc:
                raise QueryError(str(exc).strip().splitlines()[0]) from exc

    def insert_batch(self, data: bytes, token: str) -> None:
        if not data:
            return
        settings = {**INSERT_SETTINGS, "insert_deduplication_token": token}
        with self._lock:
            try:
                self._client.raw_insert("requests_ingest", insert_block=data, settings=settings, fmt="TabSeparated")
            except Exception as exc:
                raise insert_error(str(exc), self.url) from exc

    def insert_outcomes(self, data: bytes, token: str) -> None:
        if not data:
            return
        settings = {**INSERT_SETTINGS, "insert_deduplication_token": f"{token}-outcomes"}
        with self._lock:
            try:
                self._client.raw_insert(
                    "outcomes", OUTCOME_COLUMNS, insert_block=data, settings=settings, fmt="TabSeparated"
                )
            except Exception as exc:
                raise insert_error(str(exc), self.url) from exc

    def insert_rows(self, table: str, rows: list[dict[str, Any]], token: str) -> None:
        if not rows:
            return
        # The rows go as the request's data, never inside the statement's text (the driver formats that).
        data = "\n".join(json.dumps(row, separators=(",", ":"), default=str) for row in rows)
        settings = {"insert_deduplicate": 1, "insert_deduplication_token": token}
        with self._lock:
            try:
                self._client.command(f"INSERT INTO {table} FORMAT JSONEachRow", data=data, settings=settings)
            except Exception as exc:
                raise StoreUnavailableError(f"insert into {table} at {self.url} failed: {exc}") from exc

    def query(self, sql: str, *, readonly: bool = True) -> QueryResult:
        return QueryResult.from_json_compact(self.query_text(sql, "JSONCompact", readonly=readonly))

    def query_text(self, sql: str, fmt: str, *, readonly: bool = True) -> bytes:
        return self._raw_query(sql, fmt, {"readonly": 2} if readonly else {})

    def _user_query_text(self, sql: str, fmt: str) -> bytes:
        # readonly=2, like every read of this store, plus the limits. readonly=2 leaves SET, a SETTINGS
        # clause and table functions to the query: `store.readonly` refuses those before it is sent.
        return self._raw_query(sql, fmt, {"readonly": 2, **USER_QUERY_LIMITS})

    def _raw_query(self, sql: str, fmt: str, settings: dict[str, Any]) -> bytes:
        with self._lock:
            try:
                result: bytes = self._client.raw_query(sql, settings=settings, fmt=fmt)
            except self._errors as exc:
                raise QueryError(str(exc).strip().splitlines()[0]) from exc
            except Exception as exc:
                raise StoreUnavailableError(f"query against {self.url} failed: {exc}") from exc
        return result

    def close(self) -> None:
        with self._lock:
            self._client.close()
