"""The API on port 8318: health, readiness, read-only SQL, re-pricing, re-attribution, Prometheus metrics,
OpenAPI.

Every error has one JSON shape: `{"error": {"status": 400, "code": "bad_request", "message": "..."}}`.

Two scopes (see SECURITY.md):

- reads (`POST /v1/sql`, `GET /v1/caps`, `GET /v1/alerts`) take an `api.read_tokens` or an
  `api.admin_tokens` token; they are open only while neither list has a token;
- admin runs (`POST /v1/reprice`, `POST /v1/reattribute`) take an `api.admin_tokens` token (a read token
  is refused with 403). While `api.admin_tokens` is empty they answer loopback clients only (403 for any
  other address), and those must still show a read token when `api.read_tokens` has one: configuring a
  token never leaves an endpoint open.

`/healthz`, `/readyz`, `/metrics` and `/openapi.json` are open (no spend, no rows, no tokens in them).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..config import Config
from ..enforcer import CapState
from ..errors import OtelCostError, QueryError, UnauthenticatedError
from ..metrics import Metrics
from ..pricing import PriceBook
from ..reattribute import ReattributeResult, reattribute
from ..receiver.auth import BearerTokens
from ..reprice import RepriceResult, parse_when, reprice
from ..rewrite import RewriteBusyError
from ..store.base import Store
from .alerts import alerts_endpoint
from .caps import caps_endpoint
from .openapi import OPENAPI

__all__ = ["api_app", "error_response", "is_loopback"]

logger = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    500: "internal",
    503: "unavailable",
}
_MAX_SQL_BYTES = 1024 * 1024
_ERROR_REF = {"$ref": "#/components/schemas/Error"}


class _Run(Protocol):
    """A re-pricing or re-attribution run's result."""

    def to_dict(self) -> dict[str, Any]: ...


#: A run, given its progress callback (None: no progress wanted).
_Runner = Callable[[Callable[[int, int], None] | None], _Run]


def is_loopback(request: Request) -> bool:
    """Whether the request's peer is this machine (127.0.0.0/8, ::1, or IPv4-mapped loopback)."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"status": status, "code": _CODES.get(status, "error"), "message": message}},
        status_code=status,
    )


def api_app(
    store: Store,
    metrics: Metrics,
    read_tokens: BearerTokens,
    ready: Callable[[], bool],
    *,
    config: Config | None = None,
    caps: CapState | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Starlette:
    """The API app. `config` (the server's own) enables `POST /v1/reprice` and `POST /v1/reattribute`:
    they price with the server's price overrides and attribute with its attribution rules. Its
    `api.admin_tokens` guard them, and are accepted on the reads too (see the module docstring)."""
    admin_tokens = BearerTokens(config.api.admin_tokens if config is not None else [])
    readers = read_tokens + admin_tokens  # an admin token reads too

    def authorize(request: Request) -> None:
        readers.check(request.headers.get("authorization"))

    def authorize_admin(request: Request, path: str) -> Response | None:
        """None when the request may run `path`, else the 401/403 answer."""
        authorization = request.headers.get("authorization")
        if admin_tokens.enabled:
            try:
                admin_tokens.check(authorization)
            except UnauthenticatedError as exc:
                if read_tokens.accepts(authorization):
                    return error_response(403, f"{path} needs an api.admin_tokens token; this one may only read")
                return error_response(401, exc.message)
            return None
        if not is_loopback(request):
            return error_response(
                403,
                f"{path} answers only loopback clients while api.admin_tokens is empty; "
                "set api.admin_tokens to run it from another host",
            )
        try:
            read_tokens.check(authorization)
        except UnauthenticatedError as exc:
            return error_response(401, exc.message)
        return None

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not ready():
            return error_response(503, "starting: the receiver or the store is not ready yet")
        return JSONResponse({"status": "ready", "store": store.url})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi(request: Request) -> Response:
        paths = {**OPENAPI["paths"], "/v1/reprice": REPRICE_OPENAPI, "/v1/reattribute": REATTRIBUTE_OPENAPI}
        return JSONResponse({**OPENAPI, "paths": paths})

    async def read_json(request: Request) -> Any:
        """The request's JSON document (None when it is not JSON); HTTPException(413) when too large."""
        body = await request.body()
        if len(body) > _MAX_SQL_BYTES:
            raise HTTPException(413, f"request body over {_MAX_SQL_BYTES} bytes")
        try:
            return json.loads(body or b"{}")
        except ValueError:
            return None

    async def sql(request: Request) -> Response:
        try:
            authorize(request)
        except UnauthenticatedError as exc:
            return error_response(401, exc.message)
        document = await read_json(request)
        if document is None:
            return error_response(400, 'body must be JSON: {"query": "SELECT ...", "format": "json"}')
        if (
            not isinstance(document, dict)
            or not isinstance(document.get("query"), str)
            or not document["query"].strip()
        ):
            return error_response(400, "body must be JSON with a non-empty string field 'query'")
        fmt = document.get("format", "json")
        if fmt not in ("json", "csv"):
            return error_response(400, f"format must be 'json' or 'csv' (got {fmt!r})")
        query = document["query"]
        try:
            if fmt == "csv":
                text = await asyncio.to_thread(store.user_query_text, query, "CSVWithNames")
                return Response(text, media_type="text/csv; charset=utf-8")
            result = await asyncio.to_thread(store.user_query, query)
        except QueryError as exc:
            return error_response(400, exc.message)
        except OtelCostError as exc:
            return error_response(503, exc.message)
        # Money arrives as decimal text; a Decimal here was a Float64 number in ClickHouse's answer.
        body = json.dumps(
            {"columns": [{"name": name, "type": kind} for name, kind in result.columns], "rows": result.rows},
            default=lambda value: float(value) if isinstance(value, Decimal) else str(value),
            ensure_ascii=False,
        )
        return Response(body, media_type="application/json")

    async def rewrite_run(
        request: Request, what: str, needs: str, start: Callable[[datetime, datetime, bool], _Runner]
    ) -> Response:
        """A re-pricing or re-attribution run (`what` names it in messages, `needs` what of the server's
        config it uses) over the body's range: `start(since, until, dry_run)` gives the run to call.
        Streams NDJSON progress when asked."""
        refused = authorize_admin(request, request.url.path)
        if refused is not None:
            return refused
        if config is None:
            return error_response(503, f"{what} is not available: this API was started without {needs}")
        document = await read_json(request)
        if not isinstance(document, dict) or not isinstance(document.get("since"), str):
            return error_response(
                400, 'body must be JSON: {"since": "YYYY-MM-DD", "until": "YYYY-MM-DD", "dry_run": true}'
            )
        try:
            since = parse_when(document["since"])
            until_text = document.get("until")
            until = parse_when(until_text) if isinstance(until_text, str) and until_text else datetime.now(UTC)
            if since >= until:
                raise ValueError(f"since ({document['since']}) must be before until ({until_text or 'now'})")
        except ValueError as exc:
            return error_response(400, str(exc))
        run = start(since, until, document.get("dry_run") is True)
        if document.get("progress") is not True:
            try:
                result = await asyncio.to_thread(run, None)
            except RewriteBusyError as exc:
                return error_response(409, exc.message)
            except QueryError as exc:
                return error_response(400, exc.message)
            except OtelCostError as exc:
                return error_response(503, exc.message)
            except ValueError as exc:  # rules the run cannot apply
                return error_response(400, str(exc))
            return JSONResponse(result.to_dict())
        return StreamingResponse(_progress_lines(run, what), media_type="application/x-ndjson")

    async def reprice_endpoint(request: Request) -> Response:
        def start(since: datetime, until: datetime, dry_run: bool) -> _Runner:
            assert config is not None  # rewrite_run answers 503 without it
            overrides = config.pricing.overrides

            def run(progress: Callable[[int, int], None] | None) -> RepriceResult:
                # A price book is not thread-safe: each run has its own, from the server's own overrides.
                return reprice(store, PriceBook(overrides), since, until, dry_run=dry_run, progress=progress)

            return run

        return await rewrite_run(request, "re-pricing", "its price book", start)

    async def reattribute_endpoint(request: Request) -> Response:
        def start(since: datetime, until: datetime, dry_run: bool) -> _Runner:
            assert config is not None  # rewrite_run answers 503 without it
            rules = config.attribution

            def run(progress: Callable[[int, int], None] | None) -> ReattributeResult:
                # The run builds its own Attributor from the server's rules (one is not thread-safe).
                return reattribute(store, rules, since, until, dry_run=dry_run, progress=progress)

            return run

        return await rewrite_run(request, "re-attribution", "its attribution rules", start)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, str(exc.detail))

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            Route("/openapi.json", openapi),
            Route("/v1/sql", sql, methods=["POST"]),
            Route("/v1/reprice", reprice_endpoint, methods=["POST"]),
            Route("/v1/reattribute", reattribute_endpoint, methods=["POST"]),
            Route("/v1/caps", caps_endpoint(caps or CapState(30), readers)),
            Route("/v1/alerts", alerts_endpoint(store, readers, clock)),
        ],
        exception_handlers={HTTPException: http_error},
    )


async def _progress_lines(run: _Runner, what: str) -> AsyncIterator[bytes]:
    """A long run as NDJSON: `{"progress": {"rows_examined": n, "rows_total": m}}` lines while it reads,
    then one `{"result": {...}}` or `{"error": {...}}` (the status line went out before the run ended)."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    def progress(done: int, total: int) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (done, total))

    task = asyncio.ensure_future(asyncio.to_thread(run, progress))
    while not task.done() or not events.empty():
        waiter = asyncio.ensure_future(events.get())
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            continue
        done, total = waiter.result()
        yield (json.dumps({"progress": {"rows_examined": done, "rows_total": total}}) + "\n").encode()
    try:
        result = task.result()
    except Exception as exc:
        # The status line went out long ago: the failure is the stream's last line.
        if isinstance(exc, OtelCostError):
            status = 409 if isinstance(exc, RewriteBusyError) else 400 if isinstance(exc, QueryError) else 503
            message = exc.message
        elif isinstance(exc, ValueError):  # rules the run cannot apply
            status, message = 400, str(exc)
        else:
            logger.exception("%s failed", what)
            status, message = 500, f"{what} failed: {exc}"
        error = {"status": status, "code": _CODES.get(status, "error"), "message": message}
        yield (json.dumps({"error": error}) + "\n").encode()
        return
    yield (json.dumps({"result": result.to_dict()}) + "\n").encode()


REPRICE_OPENAPI: dict[str, Any] = {
    "post": {
        "summary": "Re-price stored calls with the server's current price book (used by `otel-cost reprice`)",
        "security": [{"bearer": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["since"],
                        "properties": {
                            "since": {"type": "string", "example": "2026-11-01", "description": "inclusive, UTC"},
                            "until": {"type": "string", "example": "2026-12-01", "description": "exclusive; now"},
                            "dry_run": {"type": "boolean", "default": False},
                            "progress": {
                                "type": "boolean",
                                "default": False,
                                "description": "stream NDJSON progress lines, then the result",
                            },
                        },
                    }
                }
            },
        },
        "responses": {
            "200": {
                "description": "the run: rows examined and changed, billable totals before and after (exact strings)",
                "content": {"application/json": {"schema": {"type": "object"}}, "application/x-ndjson": {}},
            },
            "400": {"description": "invalid dates", "content": {"application/json": {"schema": _ERROR_REF}}},
            "401": {
                "description": "missing or wrong admin token",
                "content": {"application/json": {"schema": _ERROR_REF}},
            },
            "403": {
                "description": "a read token, or (with no api.admin_tokens) a client that is not on loopback",
                "content": {"application/json": {"schema": _ERROR_REF}},
            },
            "409": {"description": "a run is in progress", "content": {"application/json": {"schema": _ERROR_REF}}},
        },
    }
}


REATTRIBUTE_OPENAPI: dict[str, Any] = {
    "post": {
        **REPRICE_OPENAPI["post"],
        "summary": "Apply the server's current attribution rules to stored calls (used by `otel-cost reattribute`)",
        "responses": {
            **REPRICE_OPENAPI["post"]["responses"],
            "200": {
                "description": "the run: rows examined, changed and moved, billable and unattributed totals "
                "(exact strings), the owner changes",
                "content": {"application/json": {"schema": {"type": "object"}}, "application/x-ndjson": {}},
            },
            "400": {
                "description": "invalid dates, or rules that read attributes rows do not store",
                "content": {"application/json": {"schema": _ERROR_REF}},
            },
        },
    }
}
