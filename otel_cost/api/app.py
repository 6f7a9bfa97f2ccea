"""The API on port 8318: health, readiness, read-only SQL, Prometheus metrics, OpenAPI.

Every error has one JSON shape: `{"error": {"status": 400, "code": "bad_request", "message": "..."}}`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import OtelCostError, QueryError, UnauthenticatedError
from ..metrics import Metrics
from ..receiver.auth import BearerTokens
from ..store.base import Store
from .openapi import OPENAPI

__all__ = ["api_app", "error_response"]

_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    500: "internal",
    503: "unavailable",
}
_MAX_SQL_BYTES = 1024 * 1024


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"status": status, "code": _CODES.get(status, "error"), "message": message}},
        status_code=status,
    )


def api_app(store: Store, metrics: Metrics, read_tokens: BearerTokens, ready: Callable[[], bool]) -> Starlette:
    def authorize(request: Request) -> None:
        read_tokens.check(request.headers.get("authorization"))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not ready():
            return error_response(503, "starting: the receiver or the store is not ready yet")
        return JSONResponse({"status": "ready", "store": store.url})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    async def sql(request: Request) -> Response:
        try:
            authorize(request)
        except UnauthenticatedError as exc:
            return error_response(401, exc.message)
        body = await request.body()
        if len(body) > _MAX_SQL_BYTES:
            return error_response(413, f"request body over {_MAX_SQL_BYTES} bytes")
        try:
            document: Any = json.loads(body or b"{}")
        except ValueError:
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
                text = await asyncio.to_thread(store.query_text, query, "CSVWithNames")
                return Response(text, media_type="text/csv; charset=utf-8")
            result = await asyncio.to_thread(store.query, query)
        except QueryError as exc:
            return error_response(400, exc.message)
        except OtelCostError as exc:
            return error_response(503, exc.message)
        return JSONResponse(
            {"columns": [{"name": name, "type": kind} for name, kind in result.columns], "rows": result.rows}
        )

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
        ],
        exception_handlers={HTTPException: http_error},
    )
