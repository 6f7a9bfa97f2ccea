"""Receivers hand every export's bytes to `Ingestor.consume`; it returns once the rows are durable.

Acknowledged means durable (DESIGN "Principles" 5): the export's lines are inserted (group commit)
before `consume` returns; a span already stored is not stored again, and a retry that arrives while
its first attempt is still being written waits for that attempt's outcome.
"""

from __future__ import annotations

import asyncio
import logging

from .dedup import RecentSpans, admit
from .faults import crash_point
from .metrics import Metrics
from .model import UNATTRIBUTED
from .pipeline import ProcessedExport
from .receiver.admission import InflightBytes
from .store.wire import INGEST_COLUMNS
from .store.writer import BatchWriter
from .workers import PipelinePool

__all__ = ["Ingestor"]

logger = logging.getLogger(__name__)


class Ingestor:
    def __init__(
        self,
        pool: PipelinePool,
        recent: RecentSpans,
        writer: BatchWriter,
        metrics: Metrics,
        inflight: InflightBytes,
    ) -> None:
        self.pool = pool
        self.recent = recent
        self.writer = writer
        self.metrics = metrics
        self.inflight = inflight
        self._processing = 0  # exports in the pipeline: rows that may still join the pending insert

    async def consume(self, body: bytes, kind: str, *, reserved: int = 0) -> ProcessedExport:
        """Process and store one export (protobuf or JSON bytes). Raises OtelCostError to refuse it.
        `reserved`: bytes the caller already counted in `inflight` for this request (released by it)."""
        extra = max(0, len(body) - reserved)
        self.inflight.reserve(extra)
        try:
            return await self._consume(body, kind)
        finally:
            self.inflight.release(extra)

    async def _consume(self, body: bytes, kind: str) -> ProcessedExport:
        self._processing += 1
        try:
            processed = await self.pool.process(body, kind)
        except BaseException:
            self._processing -= 1
            if not self._processing:
                self.writer.flush_pending()
            raise
        self._processing -= 1
        crash_point("receive")
        metrics = self.metrics
        metrics.spans_received.inc(processed.spans)
        if processed.rejected:
            metrics.spans_rejected.labels("invalid").inc(processed.rejected)
        if processed.redactions:
            metrics.add_redactions(processed.redactions)
        recent = self.recent
        admitted = admit(processed, recent)
        if admitted.duplicates:
            metrics.duplicate_spans.inc(admitted.duplicates)
        waits = admitted.waits
        if admitted.rows:
            write = self.writer.submit(admitted.data, admitted.rows, processed.outcomes, processed.outcome_rows)
            keys, links = admitted.keys, admitted.links
            recent.claim(keys, links, write)
            # Settled whoever is still waiting: a client that gave up must not leave keys pending.
            write.add_done_callback(
                lambda done: recent.settle(keys, links, stored=not done.cancelled() and done.exception() is None)
            )
            waits.append(write)
        elif processed.outcome_rows:
            # A repeat stores its outcomes again: readers count a trace's result once, so that is harmless.
            waits.append(self.writer.submit(b"", 0, processed.outcomes, processed.outcome_rows))
        if not self._processing:
            self.writer.flush_pending()  # no export is on its way to join the insert: do not wait for the timer
        if waits:
            await asyncio.shield(asyncio.gather(*waits))
        metrics.spans_accepted.inc(processed.spans - processed.rejected)
        if processed.outcome_rows:
            metrics.outcomes.labels("accepted").inc(processed.accepted)
            metrics.outcomes.labels("rejected").inc(processed.outcome_rows - processed.accepted)
        if processed.unrecognized_outcomes:
            metrics.outcomes.labels("unrecognized").inc(processed.unrecognized_outcomes)
        if admitted.rows:
            if admitted.changed:  # some rows were stored before or rewritten: count what this export stored
                billable, unpriced, unattributed, spend = _count(admitted.data)
            else:
                billable, unpriced, unattributed = processed.billable, processed.unpriced, processed.unattributed
                spend = processed.spend
            metrics.calls_stored.labels("true").inc(billable)
            metrics.calls_stored.labels("false").inc(admitted.rows - billable)
            metrics.unpriced_calls.inc(unpriced)
            metrics.unattributed_calls.inc(unattributed)
            metrics.add_spend(spend)
        return processed


_PRICED, _TEAM, _BILLABLE, _COST, _PRICED_MODEL, _RESPONSE_MODEL, _REQUEST_MODEL = (
    INGEST_COLUMNS.index(name)
    for name in ("priced", "team", "billable", "cost_units", "priced_model", "response_model", "request_model")
)


def _count(data: bytes) -> tuple[int, int, int, dict[tuple[str, str], int]]:
    billable = unpriced = unattributed = 0
    spend: dict[tuple[str, str], int] = {}
    for line in data.decode().split("\n")[:-1]:
        fields = line.split("\t")
        if fields[_BILLABLE] == "1":
            billable += 1
            unpriced += fields[_PRICED] == "0"
            unattributed += fields[_TEAM] == UNATTRIBUTED
            key = (fields[_TEAM], fields[_PRICED_MODEL] or fields[_RESPONSE_MODEL] or fields[_REQUEST_MODEL])
            spend[key] = spend.get(key, 0) + int(fields[_COST])
    return billable, unpriced, unattributed, spend
