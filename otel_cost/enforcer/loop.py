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
from collections.abc import Callable
from datetime import UTC, datetime

from ..config import Config
from ..errors import OtelCostError
from ..metrics import Metrics
from ..store import Store
from .budgets import BudgetState, evaluate_budget
from .state import CapState

__all__ = ["Enforcer"]

logger = logging.getLogger(__name__)


CapsHook = Callable[[datetime], list[BudgetState]]


def _utc_now() -> datetime:
    return datetime.now(UTC)


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
        return self.state.update(caps, moment)

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
