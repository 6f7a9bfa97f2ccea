"""How many request bytes the receivers hold at once (`receiver.max_inflight_bytes`).

Offered load above capacity is refused at the door, retryably (gRPC UNAVAILABLE / HTTP 503 with
RetryInfo and Retry-After), instead of holding more requests in memory, each decoded several times
its size. OTLP/HTTP reserves a request's bytes before reading its body (its Content-Length, then
what arrives and what it decompresses to); OTLP/gRPC once grpc has received it (grpc itself holds at
most `receiver.max_concurrent_exports` requests). Both receivers run on one event loop, so the
count needs no lock. One request is always admitted, whatever its size, so a large export cannot be
refused forever.
"""

from __future__ import annotations

from ..errors import OverloadedError

__all__ = ["InflightBytes"]


class InflightBytes:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self, size: int) -> None:
        """Count `size` more bytes in flight; OverloadedError (nothing counted) when over the limit."""
        if size <= 0:
            return
        if self.used and self.used + size > self.limit:
            raise OverloadedError(
                f"{self.used} bytes of exports are in progress (receiver.max_inflight_bytes={self.limit})",
                retry_after_seconds=1,
            )
        self.used += size

    def release(self, size: int) -> None:
        self.used -= size
