"""OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` (default port 4317).

The request arrives as raw bytes and is parsed by the pipeline (possibly in a worker process), so
an undecodable payload is INVALID_ARGUMENT (not grpc's generic INTERNAL). grpc enforces the size
limit (after decompression) with RESOURCE_EXHAUSTED. Retryable refusals carry RetryInfo twice: in
`grpc-status-details-bin` (the Collector reads it there) and as `google.rpc.retryinfo-bin` (the
Python exporter reads that).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ..errors import OtelCostError
from ..pipeline import ProcessedExport
from .auth import BearerTokens
from .codec import PROTOBUF
from .status import refusal_for

__all__ = ["SERVICE", "add_trace_service"]

logger = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"

Consume = Callable[[bytes, str], Awaitable[ProcessedExport]]
OnRefusal = Callable[[str, int], None]


def add_trace_service(server: grpc.aio.Server, consume: Consume, tokens: BearerTokens, on_refusal: OnRefusal) -> None:
    async def export(body: bytes, context: grpc.aio.ServicerContext) -> ExportTraceServiceResponse:
        try:
            if tokens.enabled:
                metadata = dict(context.invocation_metadata() or ())
                tokens.check(metadata.get("authorization"))
            result = await consume(body, PROTOBUF)
        except Exception as exc:
            await _refuse(context, exc, on_refusal)
            raise AssertionError("unreachable: abort raises") from exc
        response = ExportTraceServiceResponse()
        if result.rejected:
            response.partial_success.rejected_spans = result.rejected
            response.partial_success.error_message = result.error_message
        return response

    handler = grpc.unary_unary_rpc_method_handler(
        export,
        request_deserializer=None,  # raw bytes: we parse, so bad data maps to INVALID_ARGUMENT
        response_serializer=ExportTraceServiceResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),))


async def _refuse(context: Any, error: Exception, on_refusal: OnRefusal) -> None:
    if not isinstance(error, OtelCostError):
        logger.exception("export failed unexpectedly")
    refusal = refusal_for(error)
    on_refusal(refusal.reason, 1)
    status = status_pb2.Status(code=refusal.rpc_code, message=refusal.message)
    trailing: list[tuple[str, bytes]] = []
    retry = refusal.retry_info()
    if retry is not None:
        status.details.add().Pack(retry)
        trailing.append(("google.rpc.retryinfo-bin", retry.SerializeToString()))
    trailing.append(("grpc-status-details-bin", status.SerializeToString()))
    await context.abort(refusal.grpc_code, refusal.message, tuple(trailing))
