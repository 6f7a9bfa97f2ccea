"""Receivers hand every export's bytes to `Ingestor.consume`; it returns once the rows are durable.

Acknowledged means durable (DESIGN "Principles" 5): the export's lines are inserted (group commit)
before `consume` returns; a span already stored is not stored again, and a retry that arrives while
its first attempt is still being written waits for that attempt's outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .dedup import RecentSpans, admit
from .faults import crash_point
from .forward.forwarder import Forwarder
from .forward.usage import Usage, add_usage
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
        *,
        forwarder: Forwarder | None = None,
        on_usage: Callable[[Usage], None] | None = None,
    ) -> None:
        """`forwarder`: where each acknowledged export goes on to (processor mode); `on_usage`: given
        what each stored export added, per owner and model (the OTLP cost metrics)."""
        self.pool = pool
        self.recent = recent
        self.writer = writer
        self.metrics = metrics
        self.inflight = inflight
        self.forwarder = forwarder
        self.on_usage = on_usage
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
        forwarder = self.forwarder
        if forwarder is not None and processed.spans:
            if processed.rows and not admitted.rows:
                forwarder.skip_retry(processed.spans)  # every call was stored (and forwarded) before
            else:
                forwarder.submit(body if processed.forward_as_received else processed.forward, processed.spans)
            for secret, count in processed.forward_redactions.items():
                metrics.forward_redactions.labels(secret).inc(count)
        if admitted.rows:
            usage = processed.usage
            if admitted.changed:  # some rows were stored before or rewritten: count what this export stored
                billable, unpriced, unattributed, spend = _count(admitted.data, usage if usage else None)
            else:
                billable, unpriced, unattributed = processed.billable, processed.unpriced, processed.unattributed
                spend = processed.spend
            if self.on_usage is not None and usage:
                self.on_usage(usage)
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
_PROVIDER, _FEATURE, _AGENT, _INPUT, _CACHE_READ, _CACHE_WRITE, _OUTPUT, _REASONING = (
    INGEST_COLUMNS.index(name)
    for name in (
        "provider",
        "feature",
        "agent",
        "input_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
    )
)


def _count(data: bytes, usage: Usage | None = None) -> tuple[int, int, int, dict[tuple[str, str], int]]:
    """Counts over the lines an export actually stored; `usage`, if given, is rebuilt from them too."""
    billable = unpriced = unattributed = 0
    spend: dict[tuple[str, str], int] = {}
    if usage is not None:
        usage.clear()
    for line in data.decode().split("\n")[:-1]:
        fields = line.split("\t")
        if fields[_BILLABLE] == "1":
            billable += 1
            unpriced += fields[_PRICED] == "0"
            unattributed += fields[_TEAM] == UNATTRIBUTED
            key = (fields[_TEAM], fields[_PRICED_MODEL] or fields[_RESPONSE_MODEL] or fields[_REQUEST_MODEL])
            units = int(fields[_COST])
            spend[key] = spend.get(key, 0) + units
            if usage is not None:
                add_usage(
                    usage,
                    (fields[_PROVIDER], key[1], key[0], fields[_FEATURE], fields[_AGENT]),
                    units,
                    fields[_PRICED] == "1",
                    int(fields[_INPUT]),
                    int(fields[_CACHE_READ]),
                    int(fields[_CACHE_WRITE]),
                    int(fields[_OUTPUT]),
                    int(fields[_REASONING]),
                )
    return billable, unpriced, unattributed, spend
