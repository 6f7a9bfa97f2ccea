"""Every error otel-cost raises on purpose.

    OtelCostError
    ├── ConfigError                 a config file or flag is invalid (names the dotted path)
    ├── ListenError                 a port cannot be bound (in use, no permission)
    ├── StoreError
    │   ├── StoreURLError           the store URL cannot be understood
    │   ├── StoreLockedError        another process owns the embedded store
    │   ├── StoreUnavailableError   the store failed or is unreachable     (retryable)
    │   ├── StoreRejectedError      the store refuses the rows themselves (a parse or type error)
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

import re

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
    "StoreRejectedError",
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


class StoreRejectedError(StoreError):
    """Retrying the same rows cannot help: the writer sets the offending lines aside."""


#: ClickHouse error codes that mean the inserted data itself is bad, not the store.
DATA_ERROR_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        32,  # ATTEMPT_TO_READ_AFTER_EOF
        33,  # CANNOT_READ_ALL_DATA
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        407,  # DECIMAL_OVERFLOW
    }
)


def insert_error(message: str, url: str) -> StoreError:
    """The error for a failed insert: rejected (the data) or unavailable (the store), by its code."""
    found = re.search(r"Code: (\d+)", message)
    if found and int(found.group(1)) in DATA_ERROR_CODES:
        return StoreRejectedError(f"the store {url} rejects the rows: {message}")
    return StoreUnavailableError(f"insert into {url} failed: {message}")


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
