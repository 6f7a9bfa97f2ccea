"""The one map from our errors to gRPC codes, HTTP statuses, RetryInfo and Retry-After."""

from __future__ import annotations

import math
from typing import NamedTuple

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2

from ..errors import (
    DecodeError,
    OtelCostError,
    OverloadedError,
    PayloadTooLargeError,
    StoreUnavailableError,
    UnauthenticatedError,
    UnsupportedMediaTypeError,
)

__all__ = ["MAX_MESSAGE_CHARS", "Refusal", "refusal_for"]


class Refusal(NamedTuple):
    grpc_code: grpc.StatusCode
    rpc_code: int  # google.rpc.Code, for Status bodies
    http_status: int
    message: str
    retry_after_seconds: float | None  # set only for retryable refusals
    reason: str  # metrics label

    def retry_info(self) -> error_details_pb2.RetryInfo | None:
        if self.retry_after_seconds is None:
            return None
        seconds = float(self.retry_after_seconds)
        whole = math.floor(seconds)
        return error_details_pb2.RetryInfo(retry_delay=Duration(seconds=whole, nanos=int((seconds - whole) * 1e9)))

    @property
    def retry_after_header(self) -> str | None:
        if self.retry_after_seconds is None:
            return None
        return str(max(1, math.ceil(self.retry_after_seconds)))


#: A refusal's message travels in grpc-message and in trailers (8 KiB by default on most clients) and in
#: HTTP bodies: it is cut to this many characters, and made valid UTF-8, whatever the error put in it.
MAX_MESSAGE_CHARS = 1024


def _bounded(message: str) -> str:
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "..."
    if not message.isascii():
        message = message.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate becomes "?"
    return message


def refusal_for(error: BaseException) -> Refusal:
    refusal = _refusal_for(error)
    message = _bounded(refusal.message)
    return refusal if message is refusal.message else refusal._replace(message=message)


def _refusal_for(error: BaseException) -> Refusal:
    if isinstance(error, DecodeError):
        return Refusal(grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT, 400, error.message, None, "decode")
    if isinstance(error, PayloadTooLargeError):
        return Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            code_pb2.RESOURCE_EXHAUSTED,
            413,
            error.message,
            None,
            "too_large",
        )
    if isinstance(error, UnsupportedMediaTypeError):
        return Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            code_pb2.INVALID_ARGUMENT,
            415,
            error.message,
            None,
            "media_type",
        )
    if isinstance(error, UnauthenticatedError):
        return Refusal(
            grpc.StatusCode.UNAUTHENTICATED,
            code_pb2.UNAUTHENTICATED,
            401,
            error.message,
            None,
            "unauthenticated",
        )
    if isinstance(error, OverloadedError):
        return Refusal(
            grpc.StatusCode.UNAVAILABLE,
            code_pb2.UNAVAILABLE,
            503,
            error.message,
            error.retry_after_seconds,
            "overloaded",
        )
    if isinstance(error, StoreUnavailableError):
        return Refusal(grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE, 503, error.message, 2.0, "store_unavailable")
    if isinstance(error, OtelCostError):
        return Refusal(grpc.StatusCode.INTERNAL, code_pb2.INTERNAL, 500, error.message, None, "internal")
    return Refusal(grpc.StatusCode.INTERNAL, code_pb2.INTERNAL, 500, "internal error", None, "internal")
