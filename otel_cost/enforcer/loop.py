"""The enforcer: evaluates every budget from the burn-rate rollups on an interval and publishes the cap
state. One thread; a failed evaluation keeps the last state (its `generated_at` ages, so gateways can
tell) and is retried on the next tick.

Two hooks connect it to the alerts without making it wait for them: `on_evaluated(caps, now)` hands
each evaluation to the alert engine (which works on its own thread), and `extra_caps(now)` adds the
automatic containment caps runaway alerts asked for to the published document."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ..config import Config
from ..errors import OtelCostError
from ..formats import stored_decimal
from ..metrics import Metrics
from ..store import Store
from .budgets import BudgetState, evaluate_budget
from .state import CapState

__all__ = ["Enforcer", "snapshot_rows"]

logger = logging.getLogger(__name__)


CapsHook = Callable[[datetime], list[BudgetState]]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _seconds(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def snapshot_rows(caps: list[BudgetState], moment: datetime) -> list[dict[str, Any]]:
    """`budget_snapshots` rows (JSONEachRow) for one evaluation; money as exact decimal text."""
    rows = []
    for cap in caps:
        rows.append(
            {
                "evaluated_at": _seconds(moment),
                "budget": cap.budget,
                "scope": cap.scope,
                "scope_key": ",".join(f"{key}={value}" for key, value in sorted(cap.scope.items())),
                "action": cap.action,
                "spent": stored_decimal(cap.spent),
                "limit_amount": stored_decimal(cap.limit),
                "forecast": stored_decimal(cap.forecast),
                "period_start": _seconds(cap.period_start),
                "period_end": _seconds(cap.period_end),
                "limit_at": _seconds(cap.limit_at) if cap.limit_at else None,
                "automatic": int(cap.automatic),
                "reason": cap.reason,
            }
        )
    return rows


class Enforcer:
    def __init__(
        self,
        store: Store,
        config: Config,
        state: CapState | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.state = state or CapState(config.enforcer.stale_after_seconds)
        self.clock = clock or _utc_now
        self.metrics = metrics
        self.on_evaluated: Callable[[list[BudgetState], datetime], None] | None = None
        self.extra_caps: CapsHook | None = None
        self.evaluations = 0
        self.failures = 0
        self._snapshot_at: datetime | None = None
        # The loop's thread and callers (tests, the API, nudges) may poll at once; an evaluation
        # read before new spend landed must not be applied after one read since.
        self._polling = threading.Lock()
        self.last_error = ""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def evaluate(self, now: datetime | None = None) -> list[BudgetState]:
        """Every budget's caps at `now` (default: the current time)."""
        moment = now or self.clock()
        caps: list[BudgetState] = []
        for budget in self.config.budgets:
            caps += evaluate_budget(self.store, budget, self.config.enforcer, moment)
        return caps

    def poll_once(self, now: datetime | None = None) -> bool:
        """Evaluate and publish; True when a decision changed. Errors are logged, not raised."""
        with self._polling:
            return self._poll(now)

    def _poll(self, now: datetime | None) -> bool:
        moment = now or self.clock()
        started = time.monotonic()
        try:
            caps = self.evaluate(moment)
        except OtelCostError as exc:
            self.failures += 1
            self.last_error = exc.message
            logger.error("enforcer: evaluating budgets failed (keeping the last cap state): %s", exc.message)
            if self.metrics is not None:
                self.metrics.enforcer_evaluations.labels("failed").inc()
            return False
        self.evaluations += 1
        self.last_error = ""
        if self.metrics is not None:
            self.metrics.enforcer_poll_seconds.observe(time.monotonic() - started)
            self.metrics.enforcer_evaluations.labels("ok").inc()
        if self.on_evaluated is not None:
            self.on_evaluated(caps, moment)
        if self.extra_caps is not None:
            caps = caps + self.extra_caps(moment)
        changed = self.state.update(caps, moment)
        self._snapshot(caps, moment, changed)
        return changed

    def _snapshot(self, caps: list[BudgetState], moment: datetime, changed: bool) -> None:
        """Record every cap in `budget_snapshots` once a `snapshot_seconds`, and whenever a decision
        changed: the history the weekly review and the budgets dashboard read."""
        every = self.config.enforcer.snapshot_seconds
        last = self._snapshot_at
        if not every or not caps:
            return
        if not changed and last is not None and last <= moment < last + timedelta(seconds=every):
            return
        self._snapshot_at = moment
        try:
            self.store.insert_rows("budget_snapshots", snapshot_rows(caps, moment), uuid.uuid4().hex)
        except OtelCostError as exc:
            logger.warning("enforcer: recording the cap snapshot failed (the cap state is unaffected): %s", exc.message)

    def nudge(self) -> None:
        """Evaluate now rather than at the next tick (new spend was just stored)."""
        self._wake.set()

    def start(self, on_tick: Callable[[], None] | None = None) -> None:
        if self._thread is not None or not (self.config.budgets or self.extra_caps is not None):
            return
        self._thread = threading.Thread(target=self._run, args=(on_tick,), name="otel-cost-enforcer", daemon=True)
        self._thread.start()

    def _run(self, on_tick: Callable[[], None] | None) -> None:
        interval = self.config.enforcer.interval_seconds
        while not self._stop.is_set():
            started = time.monotonic()
            self.poll_once()
            if on_tick is not None:
                on_tick()
            self._wake.wait(max(0.0, interval - (time.monotonic() - started)))
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
