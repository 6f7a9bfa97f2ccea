"""The enforcer: evaluates every budget from the burn-rate rollups on an interval and publishes the cap
state. One thread; a failed evaluation keeps the last state (its `generated_at` ages, so gateways can
tell) and is retried on the next tick."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from ..config import Config
from ..errors import OtelCostError
from ..store import Store
from .budgets import BudgetState, evaluate_budget
from .state import CapState

__all__ = ["Enforcer"]

logger = logging.getLogger(__name__)


class Enforcer:
    def __init__(self, store: Store, config: Config, state: CapState | None = None) -> None:
        self.store = store
        self.config = config
        self.state = state or CapState(config.enforcer.stale_after_seconds)
        self.evaluations = 0
        self.failures = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def evaluate(self, now: datetime | None = None) -> list[BudgetState]:
        """Every budget's caps at `now` (default: the current time)."""
        moment = now or datetime.now(UTC)
        caps: list[BudgetState] = []
        for budget in self.config.budgets:
            caps += evaluate_budget(self.store, budget, self.config.enforcer, moment)
        return caps

    def poll_once(self, now: datetime | None = None) -> bool:
        """Evaluate and publish; True when a decision changed. Errors are logged, not raised."""
        moment = now or datetime.now(UTC)
        try:
            caps = self.evaluate(moment)
        except OtelCostError as exc:
            self.failures += 1
            self.last_error = exc.message
            logger.error("enforcer: evaluating budgets failed (keeping the last cap state): %s", exc.message)
            return False
        self.evaluations += 1
        self.last_error = ""
        return self.state.update(caps, moment)

    def nudge(self) -> None:
        """Evaluate now rather than at the next tick (new spend was just stored)."""
        self._wake.set()

    def start(self, on_tick: Callable[[], None] | None = None) -> None:
        if self._thread is not None or not self.config.budgets:
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
