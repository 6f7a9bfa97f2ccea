"""Receivers hand every decoded export to `Ingestor.consume`; it returns once the rows are durable.

Acknowledged means durable (DESIGN "Principles" 5): the export's rows are inserted (group commit)
before `consume` returns; a span already stored is not stored again, and a retry that arrives while
its first attempt is still being written waits for that attempt's outcome.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .metrics import Metrics
from .model import REQUEST_COLUMNS
from .pipeline import ExportResult, Pipeline
from .store.writer import BatchWriter

__all__ = ["Ingestor"]

logger = logging.getLogger(__name__)

_BILLABLE = REQUEST_COLUMNS.index("billable")


class Ingestor:
    def __init__(self, pipeline: Pipeline, writer: BatchWriter, metrics: Metrics) -> None:
        self.pipeline = pipeline
        self.writer = writer
        self.metrics = metrics

    async def consume(self, request: Any) -> ExportResult:
        """Process and store one export. Raises OtelCostError (retryable ones included) to refuse it."""
        result = self.pipeline.process(request)
        metrics = self.metrics
        metrics.spans_received.inc(result.spans)
        if result.rejected:
            metrics.spans_rejected.labels("invalid").inc(result.rejected)
        if result.duplicates:
            metrics.duplicate_spans.inc(result.duplicates)
        waits: list[asyncio.Future[None]] = list(result.waits)
        if result.rows:
            write = self.writer.submit(result.rows)
            recent = self.pipeline.recent
            recent.claim(result.entries, write)
            keys = [key for key, _ in result.entries]
            # Settled whoever is still waiting: a client that gave up must not leave keys pending.
            write.add_done_callback(
                lambda done: recent.settle(keys, stored=not done.cancelled() and done.exception() is None)
            )
            waits.append(write)
        if waits:
            await asyncio.shield(asyncio.gather(*waits))
        if result.rows:
            billable = sum(row[_BILLABLE] for row in result.rows)
            metrics.calls_stored.labels("true").inc(billable)
            metrics.calls_stored.labels("false").inc(len(result.rows) - billable)
            metrics.unpriced_calls.inc(result.unpriced)
            metrics.unattributed_calls.inc(result.unattributed)
        return result
