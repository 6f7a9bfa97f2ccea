"""otel-cost's own telemetry, exposed at `GET /metrics` (Prometheus text format)."""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


def peak_rss_bytes() -> int:
    """The process's peak resident set size."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _peak_rss_of(pid: int) -> int:
    """VmHWM (peak RSS) of another process, from /proc; 0 where unavailable."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Metrics:
    """One registry per server, so several servers (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.spans_received = Counter(
            "otel_cost_spans_received", "Spans in exports that reached the pipeline.", registry=registry
        )
        self.spans_rejected = Counter(
            "otel_cost_spans_rejected",
            "Spans refused, by reason (invalid: in partial_success; others: the whole export).",
            ["reason"],
            registry=registry,
        )
        self.calls_stored = Counter(
            "otel_cost_calls_stored",
            "Model calls stored as rows, by billable.",
            ["billable"],
            registry=registry,
        )
        self.duplicate_spans = Counter(
            "otel_cost_duplicate_spans",
            "Spans already stored (exporter retries, replays).",
            registry=registry,
        )
        self.unpriced_calls = Counter(
            "otel_cost_unpriced_calls", "Billable calls stored without a price.", registry=registry
        )
        self.unattributed_calls = Counter(
            "otel_cost_unattributed_calls", "Billable calls stored with no owner.", registry=registry
        )
        self.flush_seconds = Histogram(
            "otel_cost_store_flush_seconds",
            "Time to insert one batch into the store.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.flushed_rows = Counter("otel_cost_store_rows_inserted", "Rows inserted.", registry=registry)
        self.pending_rows = Gauge(
            "otel_cost_store_pending_rows",
            "Rows acknowledged to no one yet, waiting for the store.",
            registry=registry,
        )
        self.peak_rss = Gauge(
            "otel_cost_process_peak_resident_memory_bytes", "Peak resident set size.", registry=registry
        )
        self.peak_rss.set_function(peak_rss_bytes)
        self.workers_peak_rss = Gauge(
            "otel_cost_workers_peak_resident_memory_bytes",
            "Peak resident set size of the pipeline worker processes, summed.",
            registry=registry,
        )

    def track_workers(self, pids: Callable[[], list[int]]) -> None:
        """Peak RSS of the pipeline worker processes, summed (they are part of the server's footprint)."""
        self.workers_peak_rss.set_function(lambda: float(sum(_peak_rss_of(pid) for pid in pids())))

    def track_pending(self, pending: Callable[[], int]) -> None:
        self.pending_rows.set_function(lambda: float(pending()))

    def on_flush(self, rows: int, seconds: float) -> None:
        self.flush_seconds.observe(seconds)
        self.flushed_rows.inc(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)
