"""Signed HTTP deliveries: the cap state webhooks and the alert webhooks share one scheme.

    X-Otel-Cost-Timestamp: 1796000000                 (Unix seconds when the request was signed)
    X-Otel-Cost-Signature: sha256=<hex>               HMAC-SHA256(secret, timestamp + "." + raw body)

A receiver recomputes the HMAC over the exact bytes it received, compares in constant time, and rejects
timestamps more than five minutes away from its clock (replays). `WebhookVerifier` does all of that in
Python, and also remembers the signatures it accepted until their timestamps leave the window, so a
captured delivery replayed *inside* the window is refused too:

    verifier = WebhookVerifier(secret)              # or [new_secret, old_secret] while rotating
    try:
        verifier.verify(request.headers, body)
    except SignatureError as exc:
        status = 200 if exc.replayed else 401       # a replay was already handled: acknowledge, do nothing
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from .errors import OtelCostError

__all__ = [
    "REPLAY_WINDOW_SECONDS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SignatureError",
    "WebhookVerifier",
    "sign",
    "signed_headers",
]

TIMESTAMP_HEADER = "X-Otel-Cost-Timestamp"
SIGNATURE_HEADER = "X-Otel-Cost-Signature"
#: How far a delivery's timestamp may be from the receiver's clock, either way.
REPLAY_WINDOW_SECONDS = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Otel-Cost-Signature value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The timestamp and signature headers for `body`, signed now (or at `timestamp`)."""
    moment = int(time.time()) if timestamp is None else timestamp
    return {TIMESTAMP_HEADER: str(moment), SIGNATURE_HEADER: sign(secret, moment, body)}


class SignatureError(OtelCostError):
    """A delivery that must not be acted on. `replayed`: its signature was valid and already accepted
    (answer it as delivered, without acting again); otherwise it is forged, tampered with or stale."""

    retryable = False

    def __init__(self, message: str, *, replayed: bool = False) -> None:
        super().__init__(message)
        self.replayed = replayed


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, found in headers.items():  # a plain dict from a framework that kept the sender's case
        if key.lower() == lowered:
            return found
    return None


class WebhookVerifier:
    """Verifies signed deliveries for one receiver. Thread-safe.

    `secrets`: the gateway's (or alert sink's) `secret`, or several while rotating (any may sign).
    Accepted signatures are remembered until their timestamp leaves the window; at most `max_remembered`
    of them (the oldest are forgotten first: a sender that signs more than that many deliveries in
    ten minutes is far above what cap state or alerts send)."""

    def __init__(
        self,
        secrets: str | Sequence[str],
        *,
        window_seconds: int = REPLAY_WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
        max_remembered: int = 100_000,
    ) -> None:
        keys = [secrets] if isinstance(secrets, str) else list(secrets)
        if not keys or any(not key for key in keys):
            raise ValueError("a webhook verifier needs at least one non-empty secret")
        self._keys = [key.encode() for key in keys]
        self.window_seconds = window_seconds
        self._clock = clock
        self._max = max_remembered
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature -> when it may be forgotten
        self._lock = threading.Lock()

    def verify(self, headers: Mapping[str, str], body: bytes) -> int:
        """Accept the delivery (returns its timestamp) or raise SignatureError saying why not."""
        stamp = _header(headers, TIMESTAMP_HEADER)
        signature = _header(headers, SIGNATURE_HEADER)
        if stamp is None or signature is None:
            raise SignatureError(f"unsigned delivery: {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required")
        try:
            timestamp = int(stamp.strip())
        except ValueError:
            raise SignatureError(f"{TIMESTAMP_HEADER} must be Unix seconds (got {stamp[:40]!r})") from None
        signed = stamp.strip().encode() + b"." + body
        offered = signature.strip().encode()
        valid = False
        for secret in self._keys:  # every secret, no early exit; both sides are 71 bytes when well formed
            expected = b"sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest().encode()
            valid |= hmac.compare_digest(expected, offered)
        if not valid:
            raise SignatureError("bad signature: the body was changed, or it was signed with another secret")
        now = self._clock()
        if abs(now - timestamp) > self.window_seconds:
            raise SignatureError(
                f"stale delivery: signed at {timestamp}, {abs(now - timestamp):.0f} s from this clock "
                f"(the window is {self.window_seconds} s): a replay, or a clock that is off"
            )
        seen = offered.decode()
        with self._lock:
            while self._seen:  # forget what left the window (arrival order is close to timestamp order)
                oldest, forget_at = next(iter(self._seen.items()))
                if forget_at > now:
                    break
                del self._seen[oldest]
            if seen in self._seen:
                raise SignatureError("replayed delivery: this signature was already accepted", replayed=True)
            while len(self._seen) >= self._max:
                self._seen.popitem(last=False)
            self._seen[seen] = timestamp + self.window_seconds
        return timestamp
