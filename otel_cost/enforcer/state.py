"""The cap state document and its version: what gateways read (`GET /v1/caps`, webhooks).

`version` changes only when a decision does: a cap appearing or going, or its action or downgrade map
changing. It is derived from the decisions themselves (48 bits of their SHA-256), so every enforcer
replica reading the same store publishes the same version for the same state. Spend, forecast and
reason text refresh on every evaluation without a new version, so a gateway long-polling on the
version wakes when there is something to do, not every second. The ETag is weak for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .budgets import BudgetState, severity

__all__ = ["CapState"]


def _decisions(caps: list[BudgetState]) -> list[tuple[Any, ...]]:
    return sorted(
        (cap.budget, tuple(sorted(cap.scope.items())), cap.action, tuple(sorted(cap.downgrade.items()))) for cap in caps
    )


class CapState:
    """Thread-safe holder of the current document; the enforcer writes, the API and webhooks read."""

    def __init__(self, stale_after_seconds: int) -> None:
        self.stale_after_seconds = stale_after_seconds
        self.version = 0
        self._decisions: list[tuple[Any, ...]] | None = None
        self._lock = threading.Lock()
        self._document: dict[str, Any] = self._build([], None)
        self._body = json.dumps(self._document).encode()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._listeners: list[Callable[[int, bytes], None]] = []
        self._closed = False

    def _build(self, caps: list[BudgetState], generated_at: datetime | None) -> dict[str, Any]:
        ordered = sorted(caps, key=lambda cap: (-severity(cap.action), cap.budget, sorted(cap.scope.items())))
        return {
            "version": self.version,
            "generated_at": (generated_at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "stale_after_seconds": self.stale_after_seconds,
            "default_action": "allow",
            "caps": [cap.document() for cap in ordered],
        }

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    def snapshot(self) -> tuple[int, bytes]:
        with self._lock:
            return self.version, self._body

    def document(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(self._body)  # type: ignore[no-any-return]

    def update(self, caps: list[BudgetState], generated_at: datetime) -> bool:
        """Publish a fresh evaluation; True when a decision changed (and the version moved)."""
        decisions = _decisions(caps)
        with self._lock:
            changed = decisions != self._decisions
            if changed:
                self.version = _version(decisions)
                self._decisions = decisions
            self._document = self._build(caps, generated_at)
            self._body = json.dumps(self._document).encode()
            version, body = self.version, self._body
            waiters, self._waiters = (self._waiters, []) if changed else (self._waiters, self._waiters)
            listeners = list(self._listeners) if changed else []
        if changed:
            for loop, future in waiters:
                with contextlib.suppress(RuntimeError):  # that loop is gone: nobody is waiting
                    loop.call_soon_threadsafe(_wake, future)
            for listener in listeners:
                listener(version, body)
        return changed

    def close(self) -> None:
        """The server is stopping: every held long-poll answers now, and later ones do not wait."""
        with self._lock:
            self._closed = True
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, future)

    def on_change(self, listener: Callable[[int, bytes], None]) -> None:
        """Call `listener(version, body)` after every version change (from the enforcer's thread)."""
        with self._lock:
            self._listeners.append(listener)

    async def wait_for_change(self, version: int, timeout: float) -> None:
        """Return when the version is no longer `version`, or after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self.version != version or self._closed:
                return
            self._waiters.append((loop, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                if (loop, future) in self._waiters:
                    self._waiters.remove((loop, future))


def _version(decisions: list[tuple[Any, ...]]) -> int:
    digest = hashlib.sha256(json.dumps(decisions, separators=(",", ":")).encode()).digest()
    return int.from_bytes(digest[:6], "big") or 1


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
