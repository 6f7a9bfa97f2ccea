"""Signed HTTP deliveries: the cap state webhooks and the alert webhooks share one scheme.

    X-Otel-Cost-Timestamp: 1796000000                 (Unix seconds when the request was signed)
    X-Otel-Cost-Signature: sha256=<hex>               HMAC-SHA256(secret, timestamp + "." + raw body)

A receiver recomputes the HMAC over the exact bytes it received, compares in constant time, and rejects
timestamps more than five minutes away from its clock (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["sign", "signed_headers"]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Otel-Cost-Signature value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The timestamp and signature headers for `body`, signed now (or at `timestamp`)."""
    moment = int(time.time()) if timestamp is None else timestamp
    return {"X-Otel-Cost-Timestamp": str(moment), "X-Otel-Cost-Signature": sign(secret, moment, body)}
