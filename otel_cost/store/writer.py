"""Group commit: rows from concurrent exports share one insert; each export learns when its rows are
durable.

Exports hand their rows to `submit()` and await the returned future. One writer thread inserts what
is pending as one batch once `max_batch_rows` are waiting, the oldest has waited `max_delay_millis`, or
the caller says no more rows are on their way (`flush_pending`: nothing left to batch with, so waiting
would only delay the acknowledgement).
An insert has a large fixed cost in ClickHouse (tens of milliseconds and three new parts to merge:
measured, 2,500-row inserts cost twice the CPU per row of 20,000-row ones), so under load fewer,
larger inserts leave the CPU to the pipeline; a lone export waits at most `max_delay_millis`.

With a spool (`store.spool_dir`), every batch is journaled before its insert and removed after it, so a
crash mid-insert is repaired at the next start. A failed insert is retried with the same
deduplication token (never duplicated); when the store still fails, or does not answer within
`insert_timeout_seconds`, the batch stays in the spool, is fsynced and its exports are acknowledged
from disk. From then on batches go to the spool, and the oldest is inserted again with growing
pauses until the store takes it: the backlog drains in order. A full spool refuses exports with a
retryable error; a hung insert it has no room for is waited for (refusing it could let the client's
retry store the rows twice). Lines the store rejects as data are found by halving and set aside
(`Spool.set_aside`), so they never block what follows. Without a spool, a failed insert fails the
exports (retryable). When more than
`max_pending_rows` wait in memory, `submit()` refuses at once (`OverloadedError`): backpressure
instead of unbounded memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable

from ..errors import OtelCostError, OverloadedError, StoreRejectedError, StoreUnavailableError
from ..faults import crash_point
from .base import Store
from .spool import Spool, SpoolFullError

__all__ = ["BatchWriter", "WriterStats"]

logger = logging.getLogger(__name__)


class WriterStats:
    __slots__ = (
        "batches",
        "corrupt",
        "drained",
        "failed_batches",
        "last_flush_seconds",
        "refused",
        "rejected",
        "replayed",
        "rows",
        "spooled",
    )

    def __init__(self) -> None:
        self.batches = 0
        self.rows = 0
        self.failed_batches = 0
        self.last_flush_seconds = 0.0
        self.spooled = 0  # acknowledged from disk
        self.drained = 0  # inserted from the spool after an outage
        self.replayed = 0  # inserted from the spool left by an earlier process
        self.refused = 0  # the spool was full
        self.rejected = 0  # lines the store refused as data, set aside
        self.corrupt = 0


class _Inserter:
    """One thread that talks to the store, so the writer can stop waiting for an insert that stalls."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], concurrent.futures.Future[None]]] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="otel-cost-insert", daemon=True).start()

    def run(self, job: Callable[[], None]) -> concurrent.futures.Future[None]:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._jobs.put((job, future))
        return future

    def _run(self) -> None:
        while True:
            job, future = self._jobs.get()
            try:
                job()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)


class _Submission:
    __slots__ = ("data", "future", "loop", "outcomes", "rows", "submitted")

    def __init__(self, data: bytes, rows: int, loop: asyncio.AbstractEventLoop, outcomes: bytes) -> None:
        self.data = data
        self.rows = rows
        self.outcomes = outcomes
        self.loop = loop
        self.submitted = time.monotonic()
        self.future: asyncio.Future[None] = loop.create_future()


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class BatchWriter:
    def __init__(
        self,
        store: Store,
        *,
        max_batch_rows: int = 20_000,
        max_pending_rows: int = 200_000,
        max_delay_millis: float = 200,
        insert_attempts: int = 3,
        retry_backoff_seconds: float = 0.2,
        insert_timeout_seconds: float = 30,
        max_drain_backoff_seconds: float = 10,
        spool: Spool | None = None,
        on_flush: Callable[[int, float], None] | None = None,
        on_spool: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._max_batch_rows = max_batch_rows
        self._max_pending_rows = max_pending_rows
        self._max_delay = max_delay_millis / 1000
        self._attempts = insert_attempts
        self._backoff = retry_backoff_seconds
        self._insert_timeout = insert_timeout_seconds
        self._max_drain_backoff = max_drain_backoff_seconds
        self._spool = spool
        self._on_flush = on_flush
        self._on_spool = on_spool
        self._queue: deque[_Submission] = deque()
        self._pending_rows = 0
        self._in_flight = 0
        self._flush_requested = False
        self._cond = threading.Condition()
        self._stopping = False
        self._shutdown = False
        self._inserter = _Inserter()
        self._stalled: concurrent.futures.Future[None] | None = None
        self._drain_at = 0.0  # monotonic time of the next attempt at the spool's oldest batch
        self._drain_pause = 0.0
        self._outage_since: float | None = None
        # Entries left by an earlier process: their inserts may have stopped halfway.
        self._replaying = {entry.sequence for entry in spool.entries()} if spool is not None else set()
        self._refusing = ""  # the spool is full: refuse at submit() instead of queueing
        self.stats = WriterStats()
        self._thread = threading.Thread(target=self._run, name="otel-cost-writer", daemon=True)
        self._thread.start()

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    @property
    def spooled_batches(self) -> int:
        """Batches in the spool not yet confirmed in the store (0 without a spool)."""
        return len(self._spool) if self._spool is not None else 0

    def submit(self, data: bytes, rows: int, outcomes: bytes = b"", outcome_rows: int = 0) -> asyncio.Future[None]:
        """Queue `rows` wire lines (and outcome lines); the future resolves once they are durable. Call
        from the event loop."""
        loop = asyncio.get_running_loop()
        rows += outcome_rows  # both count against the batch size and the memory bound
        submission = _Submission(data, rows, loop, outcomes)
        with self._cond:
            if self._stopping:
                raise OverloadedError("otel-cost is shutting down", retry_after_seconds=5)
            if self._refusing:
                self.stats.refused += 1
                if self._on_spool is not None:
                    self._on_spool("refused")
                raise SpoolFullError(self._refusing, retry_after_seconds=5)
            if self._pending_rows and self._pending_rows + rows > self._max_pending_rows:
                raise OverloadedError(
                    f"{self._pending_rows} rows are waiting for the store (limit {self._max_pending_rows})",
                    retry_after_seconds=1,
                )
            self._queue.append(submission)
            self._pending_rows += rows
            self._cond.notify()
        return submission.future

    def flush_pending(self) -> None:
        """Insert what is waiting now instead of at its deadline: the caller knows nothing else is coming."""
        with self._cond:
            if self._queue:
                self._flush_requested = True
                self._cond.notify()

    def wait_for_spool(self, timeout_seconds: float) -> bool:
        """Wait until the spool is empty (True), the store refuses it, or the time is up (False)."""
        deadline = time.monotonic() + timeout_seconds
        with self._cond:
            while self.spooled_batches:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._outage_since is not None:
                    return False
                self._cond.wait(min(remaining, 0.1))
        return True

    def _take_batch(self) -> list[_Submission]:
        taken: list[_Submission] = []
        size = 0
        while self._queue and (not taken or size + self._queue[0].rows <= self._max_batch_rows):
            submission = self._queue.popleft()
            taken.append(submission)
            size += submission.rows
        self._in_flight = size
        self._flush_requested = False
        return taken

    def _drain_due(self) -> bool:
        return bool(self._spool) and time.monotonic() >= self._drain_at

    def _run(self) -> None:
        while True:
            batch: list[_Submission] = []
            with self._cond:
                while not self._queue and not self._stopping and not self._drain_due():
                    self._cond.wait(max(0.01, self._drain_at - time.monotonic()) if self._spool else None)
                if self._queue:
                    if self._batch_ready():
                        batch = self._take_batch()
                    elif not self._drain_due():
                        # exports on their way may join this insert; the spool's backlog may not wait
                        until = self._queue[0].submitted + self._max_delay
                        if self._spool:
                            until = min(until, max(self._drain_at, time.monotonic() + 0.01))
                        self._cond.wait(max(0.0, until - time.monotonic()))
                        continue
                elif self._stopping:
                    return
            if batch:
                error = self._commit(batch)
                with self._cond:
                    self._pending_rows -= self._in_flight
                    self._in_flight = 0
                    self._cond.notify_all()
                for submission in batch:
                    # RuntimeError: the export's event loop is gone, so nobody is waiting.
                    with contextlib.suppress(RuntimeError):
                        submission.loop.call_soon_threadsafe(_settle, submission.future, error)
            if not self._stopping and self._drain_due():
                self._drain_one()
                with self._cond:
                    self._cond.notify_all()

    def _batch_ready(self) -> bool:
        if self._stopping or self._pending_rows >= self._max_batch_rows:
            return True
        if time.monotonic() >= self._queue[0].submitted + self._max_delay:
            return True
        # Nothing else is coming: insert now. While a backlog drains, batches reach the spool, not
        # the store: fewer, larger ones drain faster.
        return self._flush_requested and not self._spool

    def _commit(self, batch: list[_Submission]) -> BaseException | None:
        """Make one batch durable: inserted, or (with a spool) journaled on disk. None when it is."""
        rows = self._in_flight
        data = b"".join(submission.data for submission in batch)
        outcomes = b"".join(submission.outcomes for submission in batch)
        token = uuid.uuid4().hex  # the same on every retry and replay of this batch: never inserted twice
        spool = self._spool
        if spool is None:
            return self._insert(data, rows, outcomes, token)
        backlog = len(spool) > 0  # older batches wait for the store: this one queues behind them
        try:
            entry = spool.append(token, rows, data, outcomes, sync=backlog)
        except SpoolFullError as exc:
            if backlog:
                return self._refuse(exc)
            logger.error("%s; inserting without the journal", exc.message)
            return self._insert(data, rows, outcomes, token)
        crash_point("journaled")
        if backlog:
            self._spooled(1)
            return None
        error = self._insert(data, rows, outcomes, token)
        if error is None:
            crash_point("inserted")
            spool.remove(entry)
            return None
        if not getattr(error.__cause__, "retryable", True):
            spool.remove(entry)  # the store rejects this batch itself: replaying it would block the rest
            return error
        try:
            spool.sync(entry)
        except SpoolFullError as exc:
            if self._stalled is not None and self._landed(self._stalled):
                spool.remove(entry)  # the hung insert went in after all
                return None
            spool.remove(entry)  # refused, so the client keeps the data; a replay would duplicate its retry
            return self._refuse(exc)
        self._begin_outage(str(error))
        self._spooled(1)
        return None

    def _landed(self, stalled: concurrent.futures.Future[None]) -> bool:
        """Wait for a hung insert the spool has no room for. Refusing while it may still land would let
        the client's retry (a new batch, a new token) store the rows twice; meanwhile new exports
        queue, then are refused at `max_pending_rows`."""
        logger.error("the store hangs and the spool is full: waiting for the insert in progress")
        try:
            stalled.result()
        except Exception:
            return False
        finally:
            self._stalled = None
        return True

    def _refuse(self, exc: SpoolFullError) -> BaseException:
        self.stats.refused += 1
        if self._spool:  # refuse at the door until the backlog shrinks (else the next batch tries the store)
            with self._cond:
                self._refusing = exc.message
        if self._on_spool is not None:
            self._on_spool("refused")
        return exc

    def _spooled(self, batches: int) -> None:
        self.stats.spooled += batches
        if self._on_spool is not None:
            self._on_spool("spooled")

    def _begin_outage(self, reason: str) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self._drain_pause = 0.5
            logger.error("the store failed (%s); acknowledging batches from the spool until it is back", reason)
        self._drain_at = time.monotonic() + self._drain_pause

    def _drain_one(self) -> None:
        """Insert the spool's oldest batch with its own token; pause longer after each failure."""
        spool = self._spool
        assert spool is not None
        entry = spool.oldest()
        if entry is None:
            return
        loaded = spool.read(entry)
        if loaded is None:
            self.stats.corrupt += 1
            if self._on_spool is not None:
                self._on_spool("corrupt")
            return
        data, outcomes = loaded
        started = time.perf_counter()
        error = self._attempt(data, outcomes, entry.token)
        if error is not None:
            if not getattr(error, "retryable", True):
                logger.error("the store rejects spooled batch %s: %s", entry.path.name, error)
                spool.quarantine(entry, f"the store rejects it: {error}")  # kept on disk; the rest drains
                self.stats.corrupt += 1
                if self._on_spool is not None:
                    self._on_spool("corrupt")
                return
            self._begin_outage(str(error))
            self._drain_pause = min(self._drain_pause * 2, self._max_drain_backoff)
            logger.warning(
                "the spool's oldest batch did not go in (%s); next attempt in %.1f s", error, self._drain_pause
            )
            return
        spool.remove(entry)
        self._flushed(entry.rows, time.perf_counter() - started)
        event = "replayed" if entry.sequence in self._replaying else "drained"
        self._replaying.discard(entry.sequence)
        if event == "replayed":
            self.stats.replayed += 1
        else:
            self.stats.drained += 1
        if self._on_spool is not None:
            self._on_spool(event)
        with self._cond:
            self._refusing = ""
        if not spool:
            if self._outage_since is not None:
                logger.warning(
                    "the store is back: the spool drained %.1f s after the outage began",
                    time.monotonic() - self._outage_since,
                )
            self._outage_since = None
            self._drain_pause = 0.0

    def _attempt(self, data: bytes, outcomes: bytes, token: str) -> OtelCostError | None:
        """Insert a batch's rows and outcomes. Lines the store rejects as data (a parse or type error:
        retrying cannot help, and a spooled batch would block the ones behind it) are found by
        halving, each half with a token derived from the batch's, so a replay stays deduplicated; they
        are set aside in the spool's `rejected/` folder, logged and counted, and the rest is stored."""
        crash_point("insert")
        error = self._isolate(self._store.insert_batch, data, token)
        if error is None:
            error = self._isolate(self._store.insert_outcomes, outcomes, token)
        return error

    def _isolate(self, insert: Callable[[bytes, str], None], data: bytes, token: str) -> OtelCostError | None:
        if not data:
            return None
        error = self._call(lambda: insert(data, token))
        if not isinstance(error, StoreRejectedError):
            return error
        lines = data.splitlines(keepends=True)
        if len(lines) == 1:
            self._set_aside(data, token, error)
            return None
        middle = len(lines) // 2
        for part, suffix in ((lines[:middle], "l"), (lines[middle:], "r")):
            failed = self._isolate(insert, b"".join(part), token + suffix)
            if failed is not None:
                return failed
        return None

    def _set_aside(self, line: bytes, token: str, error: StoreRejectedError) -> None:
        self.stats.rejected += 1
        where = self._spool.set_aside(line, token) if self._spool is not None else None
        logger.error("the store rejects a row (%s); it is kept in %s", error.message, where or "the log: " + repr(line))
        if self._on_spool is not None:
            self._on_spool("rejected")

    def _call(self, job: Callable[[], None]) -> OtelCostError | None:
        """One insert on the inserter thread, bounded by `insert_timeout_seconds`."""
        if self._stalled is not None:
            if not self._stalled.done():
                return StoreUnavailableError("the store has not finished an earlier insert")
            self._stalled = None
        future = self._inserter.run(job)
        try:
            future.result(self._insert_timeout or None)
        except concurrent.futures.TimeoutError:
            self._stalled = future  # it may still land; its replay then deduplicates
            return StoreUnavailableError(f"the store did not answer an insert within {self._insert_timeout:g} s")
        except OtelCostError as exc:
            return exc
        except Exception as exc:
            logger.exception("an insert failed unexpectedly")
            return StoreUnavailableError(f"the store could not take the batch: {exc}")
        return None

    def _insert(self, data: bytes, rows: int, outcomes: bytes, token: str) -> BaseException | None:
        started = time.perf_counter()
        for attempt in range(1, self._attempts + 1):
            exc = self._attempt(data, outcomes, token)
            if exc is None:
                self._flushed(rows, time.perf_counter() - started)
                return None
            stalled = self._stalled is not None
            if not exc.retryable or attempt == self._attempts or stalled:
                logger.error("insert of %d rows failed (attempt %d): %s", rows, attempt, exc.message)
                self.stats.failed_batches += 1
                error = StoreUnavailableError(f"the store could not take the batch: {exc.message}")
                error.__cause__ = exc
                return error
            logger.warning("insert of %d rows failed (attempt %d), retrying: %s", rows, attempt, exc)
            time.sleep(self._backoff * attempt)
        return StoreUnavailableError("the store could not take the batch")  # pragma: no cover

    def _flushed(self, rows: int, elapsed: float) -> None:
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.last_flush_seconds = elapsed
        if self._on_flush is not None:
            self._on_flush(rows, elapsed)

    def force_flush(self, timeout_millis: float = 30_000) -> bool:
        """Wait until everything submitted so far is durable (or failed). False on timeout."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._cond:
            while self._pending_rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        """Stop taking rows, finish what was submitted, stop the thread. Idempotent. Batches still in
        the spool stay there for the next start."""
        if self._shutdown:
            logger.debug("writer already shut down, ignoring call")
            return
        self._shutdown = True
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout_millis / 1000)
        if self.spooled_batches:
            logger.warning(
                "%d batches stay in the spool at %s; they are inserted when otel-cost starts again",
                self.spooled_batches,
                self._spool.directory if self._spool is not None else "",
            )
