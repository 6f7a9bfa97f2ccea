"""A ClickHouse server or cluster through clickhouse-connect (HTTP). Same tables, same SQL."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..errors import QueryError, StoreError, StoreUnavailableError
from ..model import REQUEST_COLUMNS, attribute_strings, units_to_decimal
from .base import INSERT_SETTINGS, QUERY_SETTINGS, QueryResult, Store
from .url import StoreURL

__all__ = ["ServerStore"]

logger = logging.getLogger(__name__)

_TIMESTAMP = REQUEST_COLUMNS.index("timestamp")
_COST = REQUEST_COLUMNS.index("cost")
_ATTRIBUTES = REQUEST_COLUMNS.index("attributes")
_RESOURCE = REQUEST_COLUMNS.index("resource_attributes")


def _timestamp(nanos: int) -> datetime:
    seconds, rest = divmod(nanos, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rest // 1000)


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

    def insert_requests(self, rows: Sequence[tuple[Any, ...]], token: str) -> None:
        if not rows:
            return
        converted = []
        for row in rows:
            values = list(row)
            values[_TIMESTAMP] = _timestamp(values[_TIMESTAMP])
            values[_COST] = units_to_decimal(values[_COST])
            values[_ATTRIBUTES] = attribute_strings(values[_ATTRIBUTES])
            values[_RESOURCE] = attribute_strings(values[_RESOURCE])
            converted.append(values)
        settings = {**INSERT_SETTINGS, "insert_deduplication_token": token}
        with self._lock:
            try:
                self._client.insert("requests", converted, column_names=list(REQUEST_COLUMNS), settings=settings)
            except Exception as exc:
                raise StoreUnavailableError(f"insert into {self.url} failed: {exc}") from exc

    def query(self, sql: str, *, readonly: bool = True) -> QueryResult:
        return QueryResult.from_json_compact(self.query_text(sql, "JSONCompact", readonly=readonly))

    def query_text(self, sql: str, fmt: str, *, readonly: bool = True) -> bytes:
        settings = {"readonly": 2} if readonly else {}
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
