"""The alert engine: findings in, each alert once, recorded, then delivered.

    enforcer evaluation ──(caps)──► budget rules ─┐
    every alerts.interval_seconds ─► detectors ───┼─► new? (key, cooldown) ─► ledger ─► sinks
                                                  │                            └─► containment caps
                                                  └─ already fired: dropped        (to the enforcer)

One thread of its own: the enforcer only hands it the caps it evaluated (no I/O on the enforcer's
thread), sinks deliver from theirs (a dead sink never slows anything), and the detectors query on
their own store lane. An alert is recorded before any sink sees it; when the store refuses, it is
kept and recorded on the next tick, then delivered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from ..config import Config
from ..enforcer import Enforcer
from ..enforcer.budgets import BudgetState
from ..errors import OtelCostError
from ..metrics import Metrics
from ..store import Store
from .budget_rules import budget_findings, scope_text
from .hygiene import FirstData, detect_floating_aliases, detect_new_owners, detect_unattributed, detect_unpriced
from .ledger import AlertLedger
from .model import Alert, Finding
from .runaway import detect_agent_loops, detect_retry_storms, detect_spend_spikes
from .sinks import AlertDispatcher

__all__ = ["Alerter"]

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Alerter:
    def __init__(self, store: Store, config: Config, *, metrics: Metrics | None = None, clock: Clock | None = None):
        self.store = store
        self.config = config
        self.settings = config.alerts
        self.metrics = metrics
        self.clock = clock or _utc_now
        self.ledger = AlertLedger(store)
        self.dispatcher = AlertDispatcher(
            self.settings.sinks, on_delivered=self._delivered, on_failed=self._failed, metrics=metrics
        )
        self.detector_runs = 0
        self.last_error = ""
        #: Called (from the alerter's thread) when an automatic cap appears: the enforcer publishes it now.
        self.on_containment: Callable[[], None] | None = None
        self._budgets = {budget.name: budget for budget in config.budgets}
        self._fired: dict[str, datetime] = {}
        self._unrecorded: list[Alert] = []
        self._containments: dict[str, Alert] = {}
        self._caps: tuple[list[BudgetState], datetime] | None = None
        self._first_data = FirstData()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def contains(self) -> bool:
        """Whether any detector may ask for an automatic cap (the enforcer must run to publish it)."""
        runaway = self.settings.runaway
        return any(
            detector.contain is not None for detector in (runaway.agent_loop, runaway.retry_storm, runaway.spend_spike)
        )

    def attach(self, enforcer: Enforcer) -> None:
        """Take every evaluation of `enforcer` for budget alerts, and publish automatic caps through it."""
        enforcer.on_evaluated = self.offer_caps
        if self.contains:
            enforcer.extra_caps = self.containment_caps
            self.on_containment = enforcer.nudge

    def load(self) -> None:
        """What survives a restart: fired keys, automatic caps in force, alerts a sink never acknowledged.
        Raises StoreError."""
        now = self.clock()
        self._fired = self.ledger.fired_keys(now)
        with self._lock:
            self._containments = {alert.id: alert for alert in self.ledger.active_containments(now)}
        resend = self.ledger.undelivered(
            self.dispatcher.recorded_sinks, now - timedelta(hours=self.settings.redeliver_hours)
        )
        for alert, sinks in resend:
            self.dispatcher.submit(alert, only=sinks)
        if resend:
            logger.info("alerts: re-sending %d alert(s) no sink acknowledged before the restart", len(resend))

    def start(self) -> None:
        """Load the ledger (raises StoreError), then run detectors every `alerts.interval_seconds`."""
        self.load()
        self._thread = threading.Thread(target=self._run, name="otel-cost-alerts", daemon=True)
        self._thread.start()

    def offer_caps(self, caps: list[BudgetState], now: datetime) -> None:
        """The enforcer's latest evaluation (its listener): evaluated for budget alerts on our thread."""
        if not self.settings.budgets:
            return
        with self._lock:
            self._caps = (caps, now)
        self._wake.set()

    def containment_caps(self, now: datetime) -> list[BudgetState]:
        """The automatic caps in force at `now`, for the enforcer to publish beside the budgets' caps."""
        with self._lock:
            for alert_id in [
                key for key, alert in self._containments.items() if alert.expires_at and alert.expires_at <= now
            ]:
                del self._containments[alert_id]
            active = list(self._containments.values())
        if self.metrics is not None:
            self.metrics.automatic_caps.set(len(active))
        return [_containment_cap(alert) for alert in active]

    # -- evaluation (the alerter's thread, or a test's) -------------------------------------------------

    def process_caps(self, caps: list[BudgetState], now: datetime) -> list[Alert]:
        return self._fire(budget_findings(caps, self._budgets, self.config.enforcer, now), now)

    def run_detectors(self, now: datetime | None = None) -> list[Alert]:
        """Run every enabled detector once; the alerts that are new."""
        moment = now or self.clock()
        started = time.monotonic()
        findings: list[Finding] = []
        for name, detect in self._detectors():
            try:
                findings += detect(moment)
            except OtelCostError as exc:
                self.last_error = f"{name}: {exc.message}"
                logger.error("alerts: the %s detector failed: %s", name, exc.message)
            except Exception as exc:  # one broken detector must not silence the others
                self.last_error = f"{name}: {exc!r}"
                logger.exception("alerts: the %s detector failed", name)
        self.detector_runs += 1
        if self.metrics is not None:
            self.metrics.detector_seconds.observe(time.monotonic() - started)
        return self._fire(findings, moment)

    def _detectors(self) -> list[tuple[str, Callable[[datetime], list[Finding]]]]:
        store, runaway, hygiene = self.store, self.settings.runaway, self.settings.hygiene
        detectors: list[tuple[str, Callable[[datetime], list[Finding]]]] = []
        if runaway.agent_loop.enabled:
            detectors.append(("agent_loop", lambda now: detect_agent_loops(store, runaway.agent_loop, now)))
        if runaway.retry_storm.enabled:
            detectors.append(("retry_storm", lambda now: detect_retry_storms(store, runaway.retry_storm, now)))
        if runaway.spend_spike.enabled and runaway.spend_spike.dimensions:
            detectors.append(("spend_spike", lambda now: detect_spend_spikes(store, runaway.spend_spike, now)))
        if hygiene.unpriced_models:
            detectors.append(("unpriced_model", lambda now: detect_unpriced(store, hygiene, now)))
        if hygiene.unattributed_share is not None:
            zone = self.config.enforcer.timezone
            detectors.append(("unattributed_share", lambda now: detect_unattributed(store, hygiene, now, zone)))
        if hygiene.floating_aliases:
            detectors.append(("floating_alias", lambda now: detect_floating_aliases(store, hygiene, now)))
        if hygiene.new_owners:
            detectors.append(("new_owner", lambda now: detect_new_owners(store, hygiene, now, self._first_data)))
        return detectors

    def _fire(self, findings: list[Finding], now: datetime) -> list[Alert]:
        fired = []
        for finding in findings:
            last = self._fired.get(finding.key)
            if last is not None and (
                finding.cooldown_seconds is None or (now - last).total_seconds() < finding.cooldown_seconds
            ):
                continue
            self._fired[finding.key] = now
            alert = Alert.from_finding(finding, now)
            fired.append(alert)
            self._publish(alert)
        return fired

    def _publish(self, alert: Alert) -> None:
        try:
            self.ledger.record(alert)
        except OtelCostError as exc:
            logger.error("alerts: recording alert %s failed (retrying before it is sent): %s", alert.id, exc.message)
            self._unrecorded.append(alert)
            return
        if self.metrics is not None:
            self.metrics.alerts_fired.labels(alert.kind, alert.severity).inc()
        self.dispatcher.submit(alert)
        if alert.containment is not None and alert.expires_at is not None:
            with self._lock:
                self._containments[alert.id] = alert
            logger.warning(
                "alerts: automatic %s of %s until %s (alert %s)",
                alert.containment.action,
                scope_text(alert.containment.scope),
                alert.expires_at.isoformat(),
                alert.id,
            )
            if self.on_containment is not None:
                self.on_containment()

    def _retry_unrecorded(self) -> None:
        waiting, self._unrecorded = self._unrecorded, []
        for alert in waiting:
            self._publish(alert)

    def _delivered(self, alert: Alert, sink: str, attempts: int) -> None:
        try:
            self.ledger.record_delivery(alert.id, sink, _utc_now(), attempts)
        except OtelCostError as exc:  # it is re-sent after a restart: a receiver dedupes on the alert id
            logger.warning("alerts: recording the delivery of %s to %s failed: %s", alert.id, sink, exc.message)

    def _failed(self, alert: Alert, sink: str, reason: str) -> None:
        logger.error("alerts: %s gave up on alert %s (%s): %s", sink, alert.id, alert.title, reason)
        try:  # refused for good (a 4xx, or past the retry deadline): not re-sent after a restart either
            self.ledger.record_delivery(alert.id, sink, _utc_now(), 0, outcome="failed", reason=reason)
        except OtelCostError as exc:
            logger.warning("alerts: recording the failure of %s to %s failed: %s", alert.id, sink, exc.message)

    def _run(self) -> None:
        interval = self.settings.interval_seconds
        next_run = time.monotonic() + interval  # the first run waits one interval: start-up stays quick
        while not self._stopping.is_set():
            self._wake.wait(max(0.0, next_run - time.monotonic()))
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                with self._lock:
                    caps, self._caps = self._caps, None
                if self._unrecorded:
                    self._retry_unrecorded()
                if caps is not None:
                    self.process_caps(*caps)
                if time.monotonic() >= next_run:
                    self.run_detectors()
                    next_run = time.monotonic() + interval
            except Exception:
                logger.exception("alerts: an evaluation failed; the next tick retries")
                next_run = time.monotonic() + interval

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Stop the detectors and the sinks; idempotent. Undelivered alerts are sent after the next start."""
        if self._stopped:
            logger.debug("alerter already stopped, ignoring call")
            return
        self._stopped = True
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
        self.dispatcher.stop(timeout_seconds)


def _decimal(value: object, default: Decimal) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else default
    except InvalidOperation:
        return default


def _containment_cap(alert: Alert) -> BudgetState:
    assert alert.containment is not None and alert.expires_at is not None
    containment = alert.containment
    spent = _decimal(alert.evidence.get("cost_usd"), Decimal(0))
    limit = _decimal(alert.evidence.get("max_cost_usd"), spent) or Decimal(1)
    return BudgetState(
        budget=f"auto:{alert.kind}",
        scope=dict(containment.scope),
        action=containment.action,
        spent=spent,
        limit=limit,
        period_start=alert.fired_at,
        period_end=alert.expires_at,
        forecast=spent,
        reason=(
            f"automatic {containment.action} for {containment.minutes} minutes (alert {alert.id[:12]}): {alert.title}"
        ),
        downgrade=dict(containment.downgrade) if containment.action == "downgrade" else {},
        automatic=True,
        alert_id=alert.id,
    )
