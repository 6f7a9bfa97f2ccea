"""OTLP/HTTP: `POST /v1/traces` (default port 4318), protobuf or JSON by Content-Type, gzip.

Errors are google.rpc.Status bodies in the request's content type; retryable ones carry Retry-After.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import DecodeError, OtelCostError, PayloadTooLargeError
from ..pipeline import ProcessedExport
from .admission import InflightBytes
from .auth import BearerTokens
from .codec import JSON, decompress, encode_response, encode_status, media_type
from .status import refusal_for

__all__ = ["otlp_http_app"]

logger = logging.getLogger(__name__)

Consume = Callable[..., Awaitable[ProcessedExport]]  # (body, kind, *, reserved=bytes already counted)
OnRefusal = Callable[[str, int], None]


async def _read_body(request: Request, limit: int, grow: Callable[[int], None]) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
            grow(size)
            chunks.append(chunk)
    except ClientDisconnect:  # a truncated body: broken input, not a server error
        raise DecodeError(f"the client disconnected after {size} bytes of the body") from None
    return b"".join(chunks)


def otlp_http_app(
    consume: Consume,
    tokens: BearerTokens,
    max_request_bytes: int,
    on_refusal: OnRefusal,
    admission: InflightBytes,
) -> Starlette:

    async def export_traces(request: Request) -> Response:
        kind = JSON
        reserved = 0

        def grow(size: int) -> None:
            # memory is counted before it is taken: the declared length first, then what arrives
            nonlocal reserved
            if size > reserved:
                admission.reserve(size - reserved)
                reserved = size

        try:
            kind = media_type(request.headers.get("content-type"))
            tokens.check(request.headers.get("authorization"))
            declared = request.headers.get("content-length", "")
            if declared.isdigit():
                grow(min(int(declared), max_request_bytes))
            body = await _read_body(request, max_request_bytes, grow)
            body = decompress(body, request.headers.get("content-encoding"), max_request_bytes)
            grow(len(body))
            result = await consume(body, kind, reserved=reserved)
        except Exception as exc:
            if not isinstance(exc, OtelCostError):
                logger.exception("export failed unexpectedly")
            refusal = refusal_for(exc)
            on_refusal(refusal.reason, 1)
            retry = refusal.retry_info()
            headers = {"Retry-After": refusal.retry_after_header} if refusal.retry_after_header else {}
            return Response(
                encode_status(refusal.rpc_code, refusal.message, kind, [retry] if retry else None),
                status_code=refusal.http_status,
                media_type=kind,
                headers=headers,
            )
        finally:
            admission.release(reserved)
        response = ExportTraceServiceResponse()
        if result.rejected:
            response.partial_success.rejected_spans = result.rejected
            response.partial_success.error_message = result.error_message
        return Response(encode_response(response, kind), media_type=kind)

    return Starlette(routes=[Route("/v1/traces", export_traces, methods=["POST"])])
