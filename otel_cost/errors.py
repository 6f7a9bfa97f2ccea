"""Every error otel-cost raises on purpose.

    OtelCostError
    ├── ConfigError                 a config file or flag is invalid (names the dotted path)
    ├── ListenError                 a port cannot be bound (in use, no permission)
    ├── StoreError
    │   ├── StoreURLError           the store URL cannot be understood
    │   ├── StoreLockedError        another process owns the embedded store
    │   ├── StoreUnavailableError   the store failed or is unreachable     (retryable)
    │   └── QueryError              a query was rejected (syntax, read-only, unknown table)
    └── IngestError                 an OTLP export was refused
        ├── DecodeError             undecodable payload            gRPC INVALID_ARGUMENT / HTTP 400
        ├── PayloadTooLargeError    over receiver.max_request_bytes gRPC RESOURCE_EXHAUSTED / HTTP 413
        ├── UnsupportedMediaTypeError                              HTTP 415
        ├── UnauthenticatedError    missing or wrong bearer token   gRPC UNAUTHENTICATED / HTTP 401
        └── OverloadedError         the receiver must push back     gRPC UNAVAILABLE / HTTP 503  (retryable)

Third-party exceptions are translated once, where they enter (`raise StoreError(...) from exc`), and
`receiver.status` is the one place that maps these classes to gRPC codes and HTTP statuses.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "IngestError",
    "ListenError",
    "OtelCostError",
    "OverloadedError",
    "PayloadTooLargeError",
    "QueryError",
    "StoreError",
    "StoreLockedError",
    "StoreURLError",
    "StoreUnavailableError",
    "UnauthenticatedError",
    "UnsupportedMediaTypeError",
]


class OtelCostError(Exception):
    """Base class. `retryable` tells a caller whether the same request may succeed later."""

    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(OtelCostError):
    """A configuration error; the message starts with the dotted path of the offending key."""


class ListenError(OtelCostError):
    pass


class StoreError(OtelCostError):
    pass


class StoreURLError(StoreError):
    pass


class StoreLockedError(StoreError):
    pass


class StoreUnavailableError(StoreError):
    retryable = True


class QueryError(StoreError):
    pass


class IngestError(OtelCostError):
    pass


class DecodeError(IngestError):
    pass


class PayloadTooLargeError(IngestError):
    pass


class UnsupportedMediaTypeError(IngestError):
    pass


class UnauthenticatedError(IngestError):
    pass


class OverloadedError(IngestError):
    retryable = True

    def __init__(self, message: str, retry_after_seconds: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
