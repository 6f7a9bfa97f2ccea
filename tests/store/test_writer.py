"""Group commit on the real store: acknowledged rows are stored, batches form under load, a lone export is
not held back by the batching timer, and a full queue refuses at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from otel_cost.errors import OverloadedError
from otel_cost.store import Store
from otel_cost.store.writer import BatchWriter

from .test_store import batch, line


def _count(store: Store) -> int:
    return int(store.query("SELECT count() FROM requests").rows[0][0])


def test_rows_are_stored_when_the_future_resolves(store: Store) -> None:
    writer = BatchWriter(store, max_delay_millis=5)

    async def submit() -> None:
        await writer.submit(batch([line("00f067aa0ba902b7", 10**21), line("00f067aa0ba902b8", 10**21)]), 2)

    try:
        asyncio.run(submit())
        assert _count(store) == 2
        assert writer.stats.rows == 2
    finally:
        writer.shutdown()


def test_flush_pending_inserts_before_the_timer(store: Store) -> None:
    """A lone export is acknowledged in the time of one insert, not after the batching delay."""
    writer = BatchWriter(store, max_delay_millis=60_000)

    async def submit() -> float:
        started = time.monotonic()
        future = writer.submit(batch([line("00f067aa0ba902b7", 10**21)]), 1)
        writer.flush_pending()
        await asyncio.wait_for(future, 30)
        return time.monotonic() - started

    try:
        assert asyncio.run(submit()) < 30
        assert _count(store) == 1
    finally:
        writer.shutdown()


def test_concurrent_submissions_share_one_insert(store: Store) -> None:
    writer = BatchWriter(store, max_batch_rows=4, max_delay_millis=60_000)

    async def submit() -> None:
        futures = [writer.submit(batch([line(f"00f067aa0ba902{n:02x}", 10**21)]), 1) for n in range(4)]
        await asyncio.wait_for(asyncio.gather(*futures), 30)  # four rows: the batch is full, no timer

    try:
        asyncio.run(submit())
        assert _count(store) == 4
        assert writer.stats.batches == 1
    finally:
        writer.shutdown()


def test_a_full_queue_refuses_with_a_retryable_error(store: Store) -> None:
    writer = BatchWriter(store, max_batch_rows=100, max_pending_rows=2, max_delay_millis=60_000)

    async def submit() -> None:
        first = writer.submit(batch([line("00f067aa0ba902b7", 1), line("00f067aa0ba902b8", 1)]), 2)
        with pytest.raises(OverloadedError) as refused:
            writer.submit(batch([line("00f067aa0ba902b9", 1)]), 1)
        assert refused.value.retry_after_seconds == 1
        writer.flush_pending()
        await asyncio.wait_for(first, 30)

    try:
        asyncio.run(submit())
        assert _count(store) == 2
    finally:
        writer.shutdown()
