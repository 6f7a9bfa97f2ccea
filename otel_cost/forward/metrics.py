"""Cost metrics pushed over OTLP through the OpenTelemetry SDK (`metrics_export` in the config).

The Prometheus endpoint (`otel_cost.metrics`) needs a scraper that can reach the server; this pushes the
same spend and budget figures to any OTLP metrics receiver (a Collector, a vendor backend):

    otel_cost.spend               Counter  USD       billable cost per (provider, model, team, feature, agent)
    otel_cost.tokens              Counter  {token}   the same, by otel_cost.token.class
    otel_cost.calls               Counter  {call}    billable calls, by otel_cost.priced
    otel_cost.budget.utilization  Gauge    1         spent / limit of each cap
    otel_cost.budget.spent        Gauge    USD
    otel_cost.budget.limit        Gauge    USD
    otel_cost.budget.forecast     Gauge    USD
    otel_cost.caps                Gauge    {cap}     caps in the cap state, by otel_cost.cap.action
    otel_cost.cap.changes         Counter  {change}  a cap moved to otel_cost.cap.action

Counters are cumulative (the SDK's default temporality), so a lost export loses no spend: the next one
carries the running total.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import grpc
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GRPCMetricExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HTTPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource

from .. import __version__
from ..config import MetricsExportConfig
from ..errors import ConfigError
from ..metrics import MAX_BUDGET_SERIES
from ..model import units_to_decimal
from .usage import USAGE_FIELDS, UsageKey

__all__ = ["CostMetrics"]

logger = logging.getLogger(__name__)

#: The metric attribute of each `UsageKey` position.
_OWNER_ATTRIBUTES = (
    "gen_ai.provider.name",
    "gen_ai.response.model",
    "otel_cost.team",
    "otel_cost.feature",
    "otel_cost.agent",
)
_OTHER: UsageKey = ("other", "other", "other", "other", "other")
_TOKEN_FIELDS = tuple((index, name) for index, name in enumerate(USAGE_FIELDS) if index >= 3)
_ACTIONS = ("allow", "alert", "downgrade", "block")
# An owner series fans out into at most this many streams of one instrument (one per token class).
_STREAMS_PER_SERIES = len(_TOKEN_FIELDS)

CapSnapshot = Callable[[], tuple[int, list[dict[str, Any]]]]


class CostMetrics:
    """Spend, tokens, calls and budget state as OTLP metrics, exported every `interval_seconds`.

    Cardinality is bounded twice: at most `max_series` (provider, model, team, feature, agent)
    combinations per process keep their own series; every later new combination is recorded with all
    five attributes "other" (so totals stay exact while the series count stays bounded). Budget gauges
    follow `otel_cost.metrics.MAX_BUDGET_SERIES`, as the Prometheus ones do.

    The SDK objects are private to this instance (never the global MeterProvider), so several servers
    in one process export independently. Exports run in the SDK's reader thread: a failing endpoint is
    logged by the SDK and never raises into `record`.
    """

    def __init__(self, config: MetricsExportConfig) -> None:
        if config.endpoint is None:
            raise ConfigError("metrics_export.endpoint is not set")
        self._max_series = config.max_series
        self._series: set[UsageKey] = set()
        self._lock = threading.Lock()
        self._snapshot: CapSnapshot | None = None
        self._last_actions: dict[tuple[str, str], str] | None = None  # None: no document seen yet
        self._closed = False

        self._reader = PeriodicExportingMetricReader(
            _exporter(config, config.endpoint),
            export_interval_millis=config.interval_seconds * 1000,
            export_timeout_millis=config.timeout_seconds * 1000,
        )
        self._provider = MeterProvider(
            metric_readers=[self._reader],
            resource=Resource.create({"service.name": "otel-cost", "service.version": __version__}),
            views=_views(config.max_series),
            # The server owns the lifecycle; an atexit flush towards a dead endpoint would hold the exit.
            shutdown_on_exit=False,
        )
        meter = self._provider.get_meter("otel_cost", __version__)
        self._spend = meter.create_counter("otel_cost.spend", unit="USD", description="Billable cost.")
        self._tokens = meter.create_counter(
            "otel_cost.tokens", unit="{token}", description="Tokens of billable calls, by class."
        )
        self._calls = meter.create_counter(
            "otel_cost.calls", unit="{call}", description="Billable calls; otel_cost.priced=false: no price known."
        )
        self._cap_changes = meter.create_counter(
            "otel_cost.cap.changes", unit="{change}", description="Times a cap moved to otel_cost.cap.action."
        )
        for name, unit, description, field in (
            ("otel_cost.budget.utilization", "1", "Spent / limit of each cap.", "share"),
            ("otel_cost.budget.spent", "USD", "Spent in the current period or window.", "spent"),
            ("otel_cost.budget.limit", "USD", "The cap's limit.", "limit"),
            ("otel_cost.budget.forecast", "USD", "Projected spend at the period's end at the recent pace.", "forecast"),
        ):
            meter.create_observable_gauge(name, [self._budget_callback(field)], unit=unit, description=description)
        meter.create_observable_gauge(
            "otel_cost.caps", [self._observe_caps], unit="{cap}", description="Caps in the cap state, by action."
        )

    def record(self, usage: Mapping[UsageKey, Sequence[int]]) -> None:
        """Add one stored export's billable calls (`forward.usage` sums); cheap, from any thread.

        Zero sums add nothing: a series of unpriced calls has calls and tokens but no $0 of spend."""
        merged: dict[UsageKey, list[int]] = {}
        with self._lock:
            if self._closed:  # the last export is gone: nothing would carry these
                return
            for key, sums in usage.items():
                series = self._admit(key)
                total = merged.get(series)
                if total is None:
                    merged[series] = list(sums)
                else:
                    for index, value in enumerate(sums):
                        total[index] += value
        for series, sums in merged.items():
            attributes = dict(zip(_OWNER_ATTRIBUTES, series, strict=True))
            if sums[0]:
                # Units are summed as integers first: one rounding to float per series per export.
                self._spend.add(float(units_to_decimal(sums[0])), attributes)
            for index, token_class in _TOKEN_FIELDS:
                if sums[index]:
                    self._tokens.add(sums[index], {**attributes, "otel_cost.token.class": token_class})
            unpriced = sums[2]
            if sums[1] - unpriced:
                self._calls.add(sums[1] - unpriced, {**attributes, "otel_cost.priced": True})
            if unpriced:
                self._calls.add(unpriced, {**attributes, "otel_cost.priced": False})

    def track_caps(self, snapshot: CapSnapshot) -> None:
        """The cap state the budget gauges read at every collection: (version, cap documents).

        The state at this moment is also the first document `cap.changes` compares against (counting
        its non-allow caps as first appearances) unless `on_cap_change` saw one already: the server
        registers the listener after its first evaluation, whose document the listener never hears of.
        """
        with self._lock:
            self._snapshot = snapshot
            if self._last_actions is not None:
                return
            changes = self._advance(_actions(snapshot()[1]))
        self._count_changes(changes)

    def on_cap_change(self, version: int, body: bytes) -> None:
        """Count the caps whose action differs from the previous document (a `CapState.on_change` listener).

        A cap absent from a document counts as `allow` (the document may omit allowed caps; an expired
        automatic cap disappears), so a cap first seen in a non-allow action is a change too.
        """
        try:
            actions = _actions(json.loads(body)["caps"])
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.exception("metrics_export: cap state version %s is not a cap document; not counted", version)
            return
        with self._lock:
            changes = self._advance(actions)
        self._count_changes(changes)

    def shutdown(self, timeout_seconds: float = 5.0) -> None:
        """Export what was recorded one last time, then stop; returns within `timeout_seconds` even when
        the endpoint is down (the SDK abandons its retries). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._provider.shutdown(timeout_millis=timeout_seconds * 1000)
        except Exception:
            logger.exception("metrics_export: shutting the OTLP metrics export down failed")

    def _admit(self, key: UsageKey) -> UsageKey:
        """The series `key` is recorded under (called with the lock held)."""
        if key in self._series:
            return key
        if len(self._series) >= self._max_series:
            return _OTHER
        self._series.add(key)
        return key

    def _advance(self, actions: dict[tuple[str, str], str]) -> list[tuple[str, str]]:
        """Make `actions` the latest document; what changed since the previous one (lock held)."""
        previous, self._last_actions = self._last_actions or {}, actions
        return _changes(previous, actions)

    def _count_changes(self, changes: list[tuple[str, str]]) -> None:
        for budget, action in changes:
            self._cap_changes.add(1, {"otel_cost.budget": budget, "otel_cost.cap.action": action})

    def _budget_callback(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(float(Decimal(cap[field])), attributes) for cap, attributes in self._budget_caps()]

        return observe

    def _budget_caps(self) -> list[tuple[dict[str, Any], dict[str, str]]]:
        caps = self._snapshot()[1] if self._snapshot is not None else []
        out = []
        for cap in caps[:MAX_BUDGET_SERIES]:
            if cap.get("automatic"):
                continue
            attributes = {
                "otel_cost.budget": cap["budget"],
                "otel_cost.budget.group": _group(cap["scope"]),
                "otel_cost.cap.action": cap["action"],
            }
            out.append((cap, attributes))
        return out

    def _observe_caps(self, options: CallbackOptions) -> Iterable[Observation]:
        counts = dict.fromkeys(_ACTIONS, 0)
        for cap in self._snapshot()[1] if self._snapshot is not None else []:
            counts[cap["action"]] = counts.get(cap["action"], 0) + 1
        return [Observation(count, {"otel_cost.cap.action": action}) for action, count in counts.items()]


def _group(scope: Mapping[str, Any]) -> str:
    """A cap's scope as one attribute value, "k=v,k=v" sorted (as the Prometheus `group` label)."""
    return ",".join(f"{key}={value}" for key, value in sorted(scope.items()))


def _actions(caps: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    return {(str(cap["budget"]), _group(cap["scope"])): str(cap["action"]) for cap in caps}


def _changes(previous: Mapping[tuple[str, str], str], current: Mapping[tuple[str, str], str]) -> list[tuple[str, str]]:
    """(budget, new action) of every cap whose action moved; a cap missing from a document is `allow`."""
    keys = sorted(previous.keys() | current.keys())
    return [
        (budget, current.get((budget, group), "allow"))
        for budget, group in keys
        if previous.get((budget, group), "allow") != current.get((budget, group), "allow")
    ]


def _views(max_series: int) -> list[View]:
    """Raise the SDK's per-instrument stream limit (2000) above ours, so the SDK never folds our series
    into its `otel.metric.overflow` point: `max_series` owners plus "other", times the token classes."""
    return [View(instrument_type=Counter, aggregation_cardinality_limit=(max_series + 1) * _STREAMS_PER_SERIES)]


def _exporter(config: MetricsExportConfig, endpoint: str) -> MetricExporter:
    timeout = config.timeout_seconds
    if config.protocol == "grpc":
        secure = endpoint.startswith("https://")
        return GRPCMetricExporter(
            endpoint=endpoint,
            insecure=not secure,
            credentials=_grpc_credentials(config) if secure else None,
            headers=dict(config.headers),
            timeout=timeout,
            compression=grpc.Compression.Gzip if config.compression == "gzip" else grpc.Compression.NoCompression,
        )
    tls = config.tls
    return HTTPMetricExporter(
        endpoint=_http_url(endpoint),
        certificate_file=str(tls.ca_file) if tls and tls.ca_file else None,
        client_certificate_file=str(tls.cert_file) if tls and tls.cert_file else None,
        client_key_file=str(tls.key_file) if tls and tls.key_file else None,
        headers=dict(config.headers),
        timeout=timeout,
        compression=Compression.Gzip if config.compression == "gzip" else Compression.NoCompression,
    )


def _http_url(endpoint: str) -> str:
    """OTLP/HTTP's signal path goes on a base URL; a URL with a path is used as given."""
    if urlparse(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/metrics"
    return endpoint


def _grpc_credentials(config: MetricsExportConfig) -> grpc.ChannelCredentials:
    tls = config.tls
    if tls is None:
        return grpc.ssl_channel_credentials()
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca_file.read_bytes() if tls.ca_file else None,
        private_key=tls.key_file.read_bytes() if tls.key_file else None,
        certificate_chain=tls.cert_file.read_bytes() if tls.cert_file else None,
    )
