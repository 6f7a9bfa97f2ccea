"""The spool on a real directory and the writer over the real engine: batches are journaled before
their insert, acknowledged from disk while the store fails or stalls, drained oldest first when it
answers, and a full spool refuses retryably. Every count is checked in the raw table and the rollups."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

import pytest

from otel_cost.errors import OverloadedError
from otel_cost.store import Store
from otel_cost.store.spool import Spool, SpoolFullError
from otel_cost.store.writer import BatchWriter

from ..helpers import wait_for
from .test_store import batch, line

UNITS = 10**21  # $0.001 per row


def totals(store: Store) -> tuple[int, int, int]:
    """(raw rows, minute-rollup calls, hour-rollup calls): equal when nothing is partial or doubled."""
    raw = store.query("SELECT count() FROM requests").scalar()
    minute = store.query("SELECT sum(calls) FROM spend_minute").scalar()
    hour = store.query("SELECT sum(calls) FROM spend_hour").scalar()
    return int(raw), int(minute or 0), int(hour or 0)


def rows(first: int, count: int) -> bytes:
    return batch([line(f"{n:016x}", UNITS) for n in range(first, first + count)])


def test_entries_survive_a_new_process_in_order_and_leftovers_are_dropped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    tokens = [uuid.uuid4().hex for _ in range(3)]
    for index, token in enumerate(tokens):
        spool.append(token, 1, rows(index, 1), b"outcome\n" if index == 1 else b"")
    (tmp_path / "0000000000000099.tmp").write_bytes(b"half a batch")  # a write the crash cut short
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert [entry.token for entry in reopened.entries()] == tokens
    assert reopened.read(reopened.entries()[1]) == (rows(1, 1), b"outcome\n")
    assert not list(tmp_path.glob("*.tmp"))
    assert reopened.append(uuid.uuid4().hex, 1, rows(9, 1), b"").sequence == 4  # numbering goes on
    reopened.close()


def test_a_damaged_file_is_quarantined_never_inserted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    entry = spool.append(uuid.uuid4().hex, 2, rows(0, 2), b"")
    spool.close()
    blob = bytearray(entry.path.read_bytes())
    blob[-5] ^= 0xFF  # a flipped byte in the data
    entry.path.write_bytes(bytes(blob))
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    (loaded,) = reopened.entries()
    assert reopened.read(loaded) is None
    assert len(reopened) == 0 and reopened.corrupt == 1
    assert (tmp_path / "corrupt" / entry.path.name).exists()  # kept for a human
    reopened.close()


def test_one_process_owns_a_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    with pytest.raises(Exception, match="in use by another otel-cost process"):
        Spool(tmp_path, max_bytes=1 << 20)
    spool.close()


def test_the_batch_in_flight_is_always_journaled_the_backlog_is_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=0)
    entry = spool.append(uuid.uuid4().hex, 1, rows(0, 1), b"")  # journaled for crash repair
    with pytest.raises(SpoolFullError, match=r"store\.spool_max_bytes=0"):
        spool.sync(entry)  # but not acknowledged from disk
    with pytest.raises(SpoolFullError):
        spool.append(uuid.uuid4().hex, 1, rows(1, 1), b"")
    spool.remove(entry)
    assert len(spool) == 0 and spool.size == 0
    spool.close()


async def _submit_all(writer: BatchWriter, batches: list[tuple[bytes, int]]) -> list[BaseException | None]:
    results = await asyncio.gather(*(writer.submit(data, count) for data, count in batches), return_exceptions=True)
    return [result if isinstance(result, BaseException) else None for result in results]


def test_an_outage_is_acknowledged_from_disk_and_drained_in_order(store: Store, tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    writer = BatchWriter(store, max_delay_millis=1, spool=spool, max_drain_backoff_seconds=0.2, insert_attempts=1)
    try:
        store.execute("RENAME TABLE requests TO requests_away")
        try:
            for index in range(5):  # five exports, one batch each, all while the store is away
                assert asyncio.run(_submit_all(writer, [(rows(index * 10, 10), 10)])) == [None]
            assert len(spool) == 5 and writer.stats.spooled == 5
            order = [entry.sequence for entry in spool.entries()]
            assert order == sorted(order)
        finally:
            store.execute("RENAME TABLE requests_away TO requests")
        wait_for(lambda: len(spool) == 0, timeout=15, what="the spool to drain")
        assert totals(store) == (50, 50, 50)
        # oldest first: ingestion order follows the spool's order
        first_ids = store.query("SELECT span_id FROM requests ORDER BY ingested_at, span_id LIMIT 1").scalar()
        assert first_ids == f"{0:016x}"
        assert writer.stats.drained == 5
    finally:
        writer.shutdown()
        spool.close()


def test_a_full_spool_refuses_retryably_until_the_backlog_shrinks(store: Store, tmp_path: Path) -> None:
    one = rows(0, 10)
    spool = Spool(tmp_path, max_bytes=len(one) * 2 + 200)  # room for two batches
    writer = BatchWriter(store, max_delay_millis=1, spool=spool, max_drain_backoff_seconds=0.2, insert_attempts=1)
    try:
        store.execute("RENAME TABLE requests TO requests_away")
        try:
            results = [asyncio.run(_submit_all(writer, [(rows(index * 10, 10), 10)]))[0] for index in range(3)]
            assert results[:2] == [None, None]
            assert isinstance(results[2], OverloadedError) and results[2].retry_after_seconds == 5
            with pytest.raises(OverloadedError, match="the spool is full"):
                asyncio.run(_submit_all_raise(writer, rows(40, 10)))  # refused at the door now
        finally:
            store.execute("RENAME TABLE requests_away TO requests")
        wait_for(lambda: len(spool) == 0, timeout=15)
        assert asyncio.run(_submit_all(writer, [(rows(20, 10), 10)])) == [None]  # the refused one, retried
        assert totals(store) == (30, 30, 30)
    finally:
        writer.shutdown()
        spool.close()


async def _submit_all_raise(writer: BatchWriter, data: bytes) -> None:
    await writer.submit(data, 10)


class StallingStore(Store):
    """Fault injection around the real store: inserts hang while `stalled` is set (a server that
    stops answering), then go through to the real engine."""

    def __init__(self, real: Store) -> None:
        self.real = real
        self.url = real.url
        self.stalled = threading.Event()
        self.released = threading.Event()

    def execute(self, sql: str) -> None:
        self.real.execute(sql)

    def insert_batch(self, data: bytes, token: str) -> None:
        if self.stalled.is_set():
            self.released.wait(60)
        self.real.insert_batch(data, token)

    def insert_outcomes(self, data: bytes, token: str) -> None:
        self.real.insert_outcomes(data, token)

    def query(self, sql: str, *, readonly: bool = True):  # type: ignore[no-untyped-def]
        return self.real.query(sql, readonly=readonly)

    def query_text(self, sql: str, fmt: str, *, readonly: bool = True) -> bytes:
        return self.real.query_text(sql, fmt, readonly=readonly)

    def close(self) -> None:
        self.real.close()


def test_a_stalled_store_is_spooled_after_the_timeout_and_nothing_doubles(store: Store, tmp_path: Path) -> None:
    stalling = StallingStore(store)
    spool = Spool(tmp_path, max_bytes=1 << 20)
    writer = BatchWriter(
        stalling, max_delay_millis=1, spool=spool, insert_timeout_seconds=0.5, max_drain_backoff_seconds=0.2
    )
    try:
        stalling.stalled.set()
        started = time.monotonic()
        assert asyncio.run(_submit_all(writer, [(rows(0, 10), 10)])) == [None]  # acknowledged from disk
        assert time.monotonic() - started < 5
        assert asyncio.run(_submit_all(writer, [(rows(10, 10), 10)])) == [None]
        assert len(spool) == 2 and totals(store) == (0, 0, 0)
        stalling.stalled.clear()
        stalling.released.set()  # the hung insert lands late; its replay must not double it
        wait_for(lambda: len(spool) == 0, timeout=15)
        assert totals(store) == (20, 20, 20)
    finally:
        writer.shutdown()
        spool.close()


def _poisoned(first: int, count: int, bad_at: int) -> bytes:
    lines = rows(first, count).splitlines(keepends=True)
    fields = lines[bad_at].split(b"\t")
    fields[0] = b"not-a-number"  # timestamp_ns: the engine parses an integer
    lines[bad_at] = b"\t".join(fields)
    return b"".join(lines)


def test_a_row_the_store_rejects_is_set_aside_and_the_rest_stored(store: Store, tmp_path: Path) -> None:
    """One bad line in a group commit must not refuse (or, spooled, block) every export with it."""
    spool = Spool(tmp_path, max_bytes=1 << 20)
    writer = BatchWriter(store, max_delay_millis=1, spool=spool, insert_attempts=1)
    try:
        assert asyncio.run(_submit_all(writer, [(_poisoned(0, 9, bad_at=4), 9)])) == [None]
        assert totals(store) == (8, 8, 8)
        assert writer.stats.rejected == 1 and len(spool) == 0
        (kept,) = (tmp_path / "rejected").iterdir()
        assert b"not-a-number" in kept.read_bytes()
    finally:
        writer.shutdown()
        spool.close()


def test_a_spooled_batch_with_a_rejected_row_does_not_block_the_drain(store: Store, tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    writer = BatchWriter(store, max_delay_millis=1, spool=spool, max_drain_backoff_seconds=0.2, insert_attempts=1)
    try:
        store.execute("RENAME TABLE requests TO requests_away")
        try:
            assert asyncio.run(_submit_all(writer, [(_poisoned(0, 10, bad_at=0), 10)])) == [None]
            assert asyncio.run(_submit_all(writer, [(rows(100, 10), 10)])) == [None]
        finally:
            store.execute("RENAME TABLE requests_away TO requests")
        wait_for(lambda: len(spool) == 0, timeout=15)
        assert totals(store) == (19, 19, 19)
        assert writer.stats.rejected == 1
    finally:
        writer.shutdown()
        spool.close()


def test_a_hung_insert_with_no_room_on_disk_is_waited_for_not_refused(store: Store, tmp_path: Path) -> None:
    """Refusing while the hung insert may still land would let the client's retry store it twice."""
    stalling = StallingStore(store)
    spool = Spool(tmp_path, max_bytes=0)
    writer = BatchWriter(stalling, max_delay_millis=1, spool=spool, insert_timeout_seconds=0.3)
    try:
        stalling.stalled.set()
        threading.Timer(2, stalling.released.set).start()
        started = time.monotonic()
        assert asyncio.run(_submit_all(writer, [(rows(0, 10), 10)])) == [None]  # stored, then acknowledged
        assert time.monotonic() - started >= 1.5
        assert totals(store) == (10, 10, 10) and len(spool) == 0
    finally:
        stalling.released.set()
        writer.shutdown()
        spool.close()
