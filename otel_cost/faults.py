"""Crash points for the fault-injection tests and `bench/chaos.py`.

`OTEL_COST_CRASH_AT=POINT[:NTH[:DELAY]]` makes the process SIGKILL itself the NTH time (default 1)
it reaches POINT, DELAY seconds later (default 0: at once; a delay lands the kill inside the work
that follows, e.g. halfway through an insert and its materialized views). Unset, a crash point costs
one comparison. The points, in the order a batch meets them:

- `receive`: an export is decoded and priced, nothing of it is journaled;
- `journaled`: its batch is in the spool, the insert has not started;
- `insert`: the insert into the raw table and the rollups has started (use a DELAY);
- `inserted`: the insert returned, the exports are not acknowledged yet.
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["crash_point"]

_POINT, _, _rest = os.environ.get("OTEL_COST_CRASH_AT", "").partition(":")
_nth_text, _, _delay_text = _rest.partition(":")
_NTH = int(_nth_text or 1)
_DELAY = float(_delay_text or 0)
_seen = 0
_lock = threading.Lock()


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def crash_point(name: str) -> None:
    """SIGKILL this process here if OTEL_COST_CRASH_AT names this point and its turn has come."""
    global _seen
    if name != _POINT:
        return
    with _lock:
        _seen += 1
        due = _seen == _NTH
    if not due:
        return
    if _DELAY:
        timer = threading.Timer(_DELAY, _kill)
        timer.daemon = True
        timer.start()
    else:
        _kill()
