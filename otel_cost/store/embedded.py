"""The embedded store: the real ClickHouse engine in this process (chDB), at a local path.

One process owns a path (the engine holds a lock on `PATH/status`); other processes reach the data
through the owner's API. A chDB Session runs one query at a time, so writes and reads get their own
sessions; reads run with `readonly=1` (writes, DDL, settings changes and file/URL table functions are refused).
Queries someone typed (`user_query`) run on a session of their own, with `readonly=1` and the limits of
`USER_QUERY_LIMITS`, after the checks of `store.readonly`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import threading
from pathlib import Path
from typing import Any

from ..errors import QueryError, StoreError, StoreLockedError, StoreUnavailableError, insert_error
from .base import INSERT_SETTINGS, QUERY_SETTINGS, USER_QUERY_LIMITS, QueryResult, Store
from .sql import quote
from .url import StoreURL
from .wire import OUTCOME_COLUMNS

__all__ = ["EmbeddedStore"]

logger = logging.getLogger(__name__)


_INSERT = "INSERT INTO requests_ingest SETTINGS {settings}, insert_deduplication_token='{token}'"
#: An insert is refused (NOT_ENOUGH_SPACE, nothing written; the batch waits in the spool) when the
#: store's disk has less than this free. Without it an insert into a nearly full disk can commit a part
#: whose marks file is empty (chdb 4.4.0 on a full tmpfs, `bench/chaos.py` disk_full): every later read
#: of the table fails with CORRUPTED_DATA. A ClickHouse server takes the same MergeTree setting.
MIN_FREE_DISK_BYTES = 64 * 1024 * 1024
_SETTINGS = ", ".join(
    f"{key}={value}"
    for key, value in {**INSERT_SETTINGS, "min_free_disk_bytes_to_perform_insert": MIN_FREE_DISK_BYTES}.items()
)
#: Engine errors a streaming insert may swallow: disk, memory, file and part trouble, not the data's
#: own parse and type errors (those raise) nor the many the engine throws and handles inside queries.
_WRITE_CODES = ", ".join(
    str(code)
    for code in (
        49,  # LOGICAL_ERROR
        74,  # CANNOT_READ_FROM_FILE_DESCRIPTOR
        75,  # CANNOT_WRITE_TO_FILE_DESCRIPTOR
        76,  # CANNOT_OPEN_FILE
        107,  # FILE_DOESNT_EXIST
        173,  # CANNOT_ALLOCATE_MEMORY
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        243,  # NOT_ENOUGH_SPACE
        252,  # TOO_MANY_PARTS
        319,  # UNKNOWN_STATUS_OF_INSERT
        425,  # SYSTEM_ERROR
        1000,  # POCO_EXCEPTION
        1001,  # STD_EXCEPTION
    )
)

# chDB allows one store path per process; several stores (databases) may share it.
_open_path: Path | None = None
_open_count = 0
_open_lock = threading.Lock()


def _check_not_locked(path: Path) -> None:
    status = path / "status"
    if not status.exists():
        return
    with status.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            owner = " ".join(handle.read().split())[:120]
            raise StoreLockedError(
                f"the embedded store at {path} is in use by another process ({owner or 'pid unknown'}). "
                "Is `otel-cost serve` already running? Commands that only read use the running server's API "
                "(--api), or stop the server first."
            ) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


class EmbeddedStore(Store):
    def __init__(self, url: StoreURL) -> None:
        global _open_path, _open_count
        from chdb import session as chdb_session  # a large extension: loaded only when used

        assert url.path is not None
        path = url.path.resolve()
        self.url = url.redacted()
        self.path = path
        self.database = url.database
        with _open_lock:
            if _open_path is not None and _open_path != path:
                raise StoreError(
                    f"this process already has the embedded store at {_open_path} open; chDB allows one "
                    f"store path per process (asked for {path})"
                )
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the store directory {path}: {exc.strerror}") from exc
            if _open_path is None:
                _check_not_locked(path)
            try:
                self._writer = chdb_session.Session(str(path))
                self._reader = chdb_session.Session(str(path))
                # One session per background lane: cap state never waits behind a user query or a detector.
                self._lanes = {lane: chdb_session.Session(str(path)) for lane in ("enforcer", "alerts")}
                # User queries: limited, and never holding the server's own reads.
                self._user = chdb_session.Session(str(path))
            except Exception as exc:
                if (path / "status").exists():
                    _check_not_locked(path)
                raise StoreError(f"cannot open the embedded store at {path}: {exc}") from exc
            _open_path = path
            _open_count += 1
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._lane_locks = {lane: threading.Lock() for lane in self._lanes}
        self._user_lock = threading.Lock()
        self._closed = False
        self._writer.query(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self._errors_seen = self._engine_errors()
        self._writer.query(f"USE {self.database}")
        for session in (self._reader, *self._lanes.values(), self._user):
            session.query(f"USE {self.database}")
            for key, value in QUERY_SETTINGS.items():
                session.query(f"SET {key} = {value}")
            if session is self._user:
                for key, limit in USER_QUERY_LIMITS.items():
                    session.query(f"SET {key} = {quote(limit) if isinstance(limit, str) else limit}")
            session.query("SET readonly = 1")

    def execute(self, sql: str) -> None:
        with self._write_lock:
            self._run(self._writer, sql, "CSV")

    def insert_batch(self, data: bytes, token: str) -> None:
        if not data:
            return
        self._insert(_INSERT.format(settings=_SETTINGS, token=token), data)

    def _insert(self, statement: str, data: bytes) -> None:
        # chDB's streaming insert parses the bytes fastest (measured: 15-20% more spans/s end to end
        # than the rows inline in the statement, and 100 MB less memory), but it reports success when
        # the engine fails the insert (chdb 4.4.0 on a full disk: NOT_ENOUGH_SPACE swallowed,
        # rows_written set, nothing stored). The engine still counts that error in system.errors: when
        # the count moved, the same rows go again inline, which raises; the same token deduplicates
        # them if the first insert did land (a false alarm from another session's error costs one
        # deduplicated insert).
        with self._write_lock:
            if self._closed:
                raise StoreUnavailableError(f"the store {self.url} is closed")
            try:
                inserter = self._writer.send_insert(statement, "TabSeparated")
                try:
                    inserter.append(data)
                    inserter.finish()
                except Exception:
                    # else the session stays in the stream: "Another streaming query or insert is
                    # already active on this connection" for every insert after this one
                    with contextlib.suppress(Exception):
                        inserter.cancel()
                    raise
                errors = self._engine_errors()
                if errors == self._errors_seen:
                    return
                self._errors_seen = errors
                latest = (
                    self._writer.query(
                        f"SELECT name, left(last_error_message, 200) FROM system.errors WHERE code IN ({_WRITE_CODES}) "
                        "ORDER BY last_error_time DESC LIMIT 1",
                        "TabSeparated",
                    )
                    .bytes()
                    .decode()
                    .strip()
                )
                logger.warning("the engine logged an error during a streaming insert (%s); inserting again", latest)
                self._writer.query(f"{statement} FORMAT TabSeparated\n{data.decode()}")
            except Exception as exc:
                with contextlib.suppress(Exception):
                    self._errors_seen = self._engine_errors()
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                message = message.removeprefix("Streaming insert finish failed: ")
                raise insert_error(message, self.url) from exc

    def _engine_errors(self) -> int:
        result = self._writer.query(f"SELECT sum(value) FROM system.errors WHERE code IN ({_WRITE_CODES})", "CSV")
        return int(result.bytes().strip() or 0)

    def insert_outcomes(self, data: bytes, token: str) -> None:
        if not data:
            return
        statement = (
            f"INSERT INTO outcomes ({', '.join(OUTCOME_COLUMNS)}) SETTINGS {_SETTINGS}, "
            f"insert_deduplication_token='{token}-outcomes'"
        )
        self._insert(statement, data)

    def query(self, sql: str, *, readonly: bool = True) -> QueryResult:
        return QueryResult.from_json_compact(self.query_text(sql, "JSONCompact", readonly=readonly))

    def _user_query_text(self, sql: str, fmt: str) -> bytes:
        with self._user_lock:
            try:
                return self._run(self._user, sql, fmt)
            except QueryError:
                # A query refused after it began to answer (a result or time limit) leaves its partial
                # output in the session, and chDB hands it to the next query that succeeds: drain it.
                with contextlib.suppress(Exception):
                    self._user.query("SELECT 1", "CSV")
                raise

    def poll(self, sql: str, *, lane: str = "enforcer") -> QueryResult:
        with self._lane_locks[lane]:
            return QueryResult.from_json_compact(self._run(self._lanes[lane], sql, "JSONCompact"))

    def query_text(self, sql: str, fmt: str, *, readonly: bool = True) -> bytes:
        if readonly:
            with self._read_lock:
                return self._run(self._reader, sql, fmt)
        with self._write_lock:
            return self._run(self._writer, sql, fmt)

    def _run(self, session: Any, sql: str, fmt: str, *, writing: bool = False) -> bytes:
        if self._closed:
            raise StoreUnavailableError(f"the store {self.url} is closed")
        try:
            result = session.query(sql, fmt)
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if writing:
                # An insert that fails inside the engine (disk full, I/O) may succeed on retry.
                raise StoreUnavailableError(f"insert into {self.url} failed: {message}") from exc
            raise QueryError(message) from exc
        data: bytes = result.bytes() if result is not None else b""
        return data

    def close(self) -> None:
        global _open_path, _open_count
        if self._closed:
            return
        self._closed = True
        with contextlib.ExitStack() as held:
            for lock in (self._write_lock, self._read_lock, *self._lane_locks.values(), self._user_lock):
                held.enter_context(lock)
            for session in (self._user, *self._lanes.values(), self._reader, self._writer):
                try:
                    session.close()
                except Exception:  # closing must not mask the reason we are closing
                    logger.exception("closing a chDB session failed")
        with _open_lock:
            _open_count -= 1
            if _open_count == 0:
                _open_path = None
