"""`GET /v1/alerts`: the alerts fired recently, newest first, from the alert ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..alerts.ledger import AlertLedger
from ..config import ALERT_KINDS, window_seconds
from ..errors import OtelCostError, UnauthenticatedError
from ..formats import iso_utc
from ..receiver.auth import BearerTokens
from ..rewrite import parse_when
from ..store import Store

__all__ = ["MAX_ALERTS", "alerts_endpoint", "parse_since"]

MAX_ALERTS = 1000


def parse_since(text: str, now: datetime) -> datetime:
    """`24h`, `7d`, `90m` (before `now`), `YYYY-MM-DD` or an ISO 8601 time. Raises ValueError."""
    try:
        return now - timedelta(seconds=window_seconds(text.strip()))
    except ValueError:
        pass
    try:
        return parse_when(text)
    except ValueError:
        raise ValueError(
            f"since must be a duration (90m, 24h, 7d), a date or an ISO 8601 time (got {text!r})"
        ) from None


def alerts_endpoint(
    store: Store, tokens: BearerTokens, clock: Callable[[], datetime] | None = None
) -> Callable[[Request], Awaitable[Response]]:
    from .app import error_response

    ledger = AlertLedger(store)

    async def alerts(request: Request) -> Response:
        try:
            tokens.check(request.headers.get("authorization"))
        except UnauthenticatedError as exc:
            return error_response(401, exc.message)
        params = request.query_params
        now = clock() if clock else datetime.now(UTC)
        try:
            since = parse_since(params.get("since", "24h"), now)
            limit = int(params.get("limit", "100"))
            if not 1 <= limit <= MAX_ALERTS:
                raise ValueError(f"limit must be 1-{MAX_ALERTS} (got {limit})")
        except ValueError as exc:
            return error_response(400, str(exc))
        kinds = [kind for value in params.getlist("kind") for kind in value.split(",") if kind]
        unknown = sorted(set(kinds) - set(ALERT_KINDS))
        if unknown:
            return error_response(400, f"unknown alert kind(s) {', '.join(unknown)} (known: {', '.join(ALERT_KINDS)})")
        try:
            found = await asyncio.to_thread(ledger.recent, since, kinds=kinds, limit=limit)
        except OtelCostError as exc:
            return error_response(503, exc.message)
        return JSONResponse({"since": iso_utc(since), "alerts": found})

    return alerts
