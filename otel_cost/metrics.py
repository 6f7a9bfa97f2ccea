"""otel-cost's own telemetry, exposed at `GET /metrics` (Prometheus text format)."""

from __future__ import annotations

import resource
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["MAX_BUDGET_SERIES", "MAX_REDACTION_SERVICES", "MAX_SPEND_SERIES", "Metrics"]

#: (team, model) label pairs of the spend counter; later pairs are counted as ("other", "other").
MAX_SPEND_SERIES = 500
#: Services the redaction counter names; later ones are counted as service "other".
MAX_REDACTION_SERVICES = 500
#: Budget caps exported per evaluation (a `per` budget has one per group); the rest are counted only.
MAX_BUDGET_SERIES = 500
_UNITS_PER_USD = 10**24


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
        self.spans_accepted = Counter(
            "otel_cost_spans_accepted",
            "Spans in exports that were acknowledged (stored, or already stored), rejected spans excluded.",
            registry=registry,
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
        self.outcomes = Counter(
            "otel_cost_outcomes",
            "Outcomes read from telemetry (accepted, rejected; unrecognized: a value no setting names).",
            ["outcome"],
            registry=registry,
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
        self.spool_batches = Gauge(
            "otel_cost_spool_batches", "Acknowledged batches on local disk, waiting for the store.", registry=registry
        )
        self.inflight_bytes = Gauge(
            "otel_cost_receiver_inflight_bytes",
            "Request bytes being received and processed (bounded by receiver.max_inflight_bytes).",
            registry=registry,
        )
        self.spool_bytes = Gauge("otel_cost_spool_bytes", "Bytes of the spool on local disk.", registry=registry)
        self.spool_events = Counter(
            "otel_cost_spool_events",
            "Batches by what the spool did with them: spooled (acknowledged from disk while the store "
            "failed or stalled), drained (inserted later, oldest first), replayed (inserted at start-up "
            "after a crash), refused (spool full: the export was pushed back), corrupt (quarantined), "
            "rejected (a row the store refuses as data, kept in the spool's rejected/ folder).",
            ["event"],
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

        self.spend = Counter(
            "otel_cost_spend_usd",
            "Billable spend stored, by team and model (approximate: the ledger's exact sums are in the store). "
            f"At most {MAX_SPEND_SERIES} label pairs; later ones are counted as team and model 'other'.",
            ["team", "model"],
            registry=registry,
        )
        self._spend_series: set[tuple[str, str]] = set()
        self._spend_lock = threading.Lock()
        self.redactions = Counter(
            "otel_cost_redactions",
            "Attribute values redacted as secrets in exports received, by the resource's service.name and the "
            "kind of secret (openai, aws_access_key, bearer, ...; secret_attribute: the key names a credential). "
            f"At most {MAX_REDACTION_SERVICES} services; later ones are counted as service 'other'.",
            ["service", "kind"],
            registry=registry,
        )
        self._redaction_services: set[str] = set()
        self.enforcer_poll_seconds = Histogram(
            "otel_cost_enforcer_poll_seconds",
            "Time to evaluate every budget once (rollup queries included).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.enforcer_evaluations = Counter(
            "otel_cost_enforcer_evaluations",
            "Budget evaluations, by outcome (failed: the last cap state is kept).",
            ["outcome"],
            registry=registry,
        )
        self.cap_state_version = Gauge(
            "otel_cost_cap_state_version", "The published cap state document's version.", registry=registry
        )
        self.alerts_fired = Counter(
            "otel_cost_alerts_fired",
            "Alerts fired (each once), by kind and severity.",
            ["kind", "severity"],
            registry=registry,
        )
        self.alert_deliveries = Counter(
            "otel_cost_alert_deliveries",
            "Alert deliveries by sink and outcome: delivered, retried (a failed attempt), failed (given up), "
            "dropped (queue full; re-sent after a restart).",
            ["sink", "outcome"],
            registry=registry,
        )
        self.alert_queue = Gauge(
            "otel_cost_alert_queue_alerts", "Alerts waiting for a sink.", ["sink"], registry=registry
        )
        self.detector_seconds = Histogram(
            "otel_cost_alert_detectors_seconds",
            "Time to run every runaway and hygiene detector once.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.automatic_caps = Gauge(
            "otel_cost_automatic_caps", "Automatic containment caps in force.", registry=registry
        )
        self.forward_spans = Counter(
            "otel_cost_forward_spans",
            "Spans of acknowledged exports handed on (forward.endpoints), by endpoint and outcome: forwarded, "
            "rejected (the downstream refused them, not retryable, or in its partial_success), dropped (its queue "
            "was full, the server stopped, or sending failed), skipped_retry (a client's retry of an export "
            "forwarded before).",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.forward_retries = Counter(
            "otel_cost_forward_retries",
            "Forwarding attempts that failed retryably (downstream unavailable, throttling), by endpoint.",
            ["endpoint"],
            registry=registry,
        )
        self.forward_drops = Counter(
            "otel_cost_forward_dropped_exports",
            "Exports not delivered to a downstream, by endpoint and reason: queue_full (oldest dropped), "
            "refused (not retryable), shutdown (still queued when the server stopped), error.",
            ["endpoint", "reason"],
            registry=registry,
        )
        self.forward_queue_bytes = Gauge(
            "otel_cost_forward_queue_bytes",
            "Bytes of exports waiting for a downstream.",
            ["endpoint"],
            registry=registry,
        )
        self.forward_queue_exports = Gauge(
            "otel_cost_forward_queue_exports", "Exports waiting for a downstream.", ["endpoint"], registry=registry
        )
        self.forward_redactions = Counter(
            "otel_cost_forward_redactions",
            "Values redacted as secrets in forwarded exports (every span, not only model calls), by kind.",
            ["kind"],
            registry=registry,
        )
        self._budgets = _BudgetCollector()
        registry.register(self._budgets)

    def add_spend(self, by_team_model: Mapping[tuple[str, str], int]) -> None:
        """Billable cost units (1e-24 USD) stored per (team, model)."""
        with self._spend_lock:
            for (team, model), units in by_team_model.items():
                pair = (team, model)
                if pair not in self._spend_series:
                    if len(self._spend_series) >= MAX_SPEND_SERIES:
                        pair = ("other", "other")
                    self._spend_series.add(pair)
                self.spend.labels(*pair).inc(units / _UNITS_PER_USD)

    def add_redactions(self, by_service_kind: Mapping[tuple[str, str], int]) -> None:
        """Values redacted per (service.name, kind), from one export."""
        with self._spend_lock:
            for (name, kind), count in by_service_kind.items():
                service = name
                if service not in self._redaction_services:
                    if len(self._redaction_services) >= MAX_REDACTION_SERVICES:
                        service = "other"
                    self._redaction_services.add(service)
                self.redactions.labels(service, kind).inc(count)

    def track_caps(self, snapshot: Callable[[], tuple[int, list[dict[str, Any]]]]) -> None:
        """The cap state to export: (version, cap documents), read at every scrape."""
        self.cap_state_version.set_function(lambda: float(snapshot()[0]))
        self._budgets.snapshot = snapshot

    def track_workers(self, pids: Callable[[], list[int]]) -> None:
        """Peak RSS of the pipeline worker processes, summed (they are part of the server's footprint)."""
        self.workers_peak_rss.set_function(lambda: float(sum(_peak_rss_of(pid) for pid in pids())))

    def track_pending(self, pending: Callable[[], int]) -> None:
        self.pending_rows.set_function(lambda: float(pending()))

    def track_inflight(self, used: Callable[[], int]) -> None:
        self.inflight_bytes.set_function(lambda: float(used()))

    def track_spool(self, batches: Callable[[], int], size: Callable[[], int]) -> None:
        self.spool_batches.set_function(lambda: float(batches()))
        self.spool_bytes.set_function(lambda: float(size()))

    def on_flush(self, rows: int, seconds: float) -> None:
        self.flush_seconds.observe(seconds)
        self.flushed_rows.inc(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _BudgetCollector(Collector):
    """Per-cap gauges from the latest cap state: utilization, spent, limit, forecast; caps by action."""

    def __init__(self) -> None:
        self.snapshot: Callable[[], tuple[int, list[dict[str, Any]]]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        caps = self.snapshot()[1] if self.snapshot is not None else []
        labels = ["budget", "group", "action"]
        utilization = GaugeMetricFamily(
            "otel_cost_budget_utilization_ratio",
            "Spent / limit of each cap (a budget, or a group of a per budget).",
            labels=labels,
        )
        spent = GaugeMetricFamily("otel_cost_budget_spent_usd", "Spent in the current period or window.", labels=labels)
        limit = GaugeMetricFamily("otel_cost_budget_limit_usd", "The cap's limit.", labels=labels)
        forecast = GaugeMetricFamily(
            "otel_cost_budget_forecast_usd", "Projected spend at the period's end at the recent pace.", labels=labels
        )
        by_action = GaugeMetricFamily("otel_cost_caps", "Caps in the cap state, by action.", labels=["action"])
        counts = dict.fromkeys(("allow", "alert", "downgrade", "block"), 0)
        for index, cap in enumerate(caps):
            counts[cap["action"]] = counts.get(cap["action"], 0) + 1
            if index >= MAX_BUDGET_SERIES or cap.get("automatic"):
                continue
            group = ",".join(f"{key}={value}" for key, value in sorted(cap["scope"].items()))
            values = [cap["budget"], group, cap["action"]]
            utilization.add_metric(values, float(Decimal(cap["share"])))
            spent.add_metric(values, float(Decimal(cap["spent"])))
            limit.add_metric(values, float(Decimal(cap["limit"])))
            forecast.add_metric(values, float(Decimal(cap["forecast"])))
        for action, count in counts.items():
            by_action.add_metric([action], count)
        yield from (utilization, spent, limit, forecast, by_action)
