"""Cap state pushed to gateways: every version change is POSTed to each configured webhook, signed.

Signature (verifiable in any language):

    X-Otel-Cost-Timestamp: 1796000000                 (Unix seconds when the request was signed)
    X-Otel-Cost-Signature: sha256=<hex>               HMAC-SHA256(secret, timestamp + "." + raw body)
    X-Otel-Cost-Version:   17                         (the document's version)

A receiver recomputes the HMAC over the exact bytes it received, compares in constant time, and rejects
timestamps more than five minutes away from its clock (replays); in Python, `otel_cost.signing.
WebhookVerifier` does that and also refuses a delivery replayed within those five minutes. Each attempt
is signed when it is sent: a retry in a later second has a new signature, one in the same second the
same (answer a `replayed` delivery as delivered, without acting on it again).

Each target has its own thread and holds only the newest document: a slow or dead target retries with
backoff (0.5 s doubling to 30 s) without delaying the others, and a newer version replaces one not yet
delivered.
"""

from __future__ import annotations

import functools
import logging
import threading
import urllib.error
import urllib.request

from ..config import GatewayConfig
from ..signing import sign, signed_headers

__all__ = ["WebhookSender", "sign"]

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 30.0


class _Target:
    def __init__(self, gateway: GatewayConfig) -> None:
        self.gateway = gateway
        self.pending: tuple[int, bytes] | None = None
        self.delivered_version = 0
        self.failures = 0
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name=f"otel-cost-webhook-{gateway.name}", daemon=True)
        self.stopping = False

    def offer(self, version: int, body: bytes) -> None:
        with self.cond:
            self.pending = (version, body)
            self.cond.notify()

    def _post(self, version: int, body: bytes) -> None:
        request = urllib.request.Request(
            self.gateway.webhook,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "otel-cost",
                **signed_headers(self.gateway.secret, body),
                "X-Otel-Cost-Version": str(version),
            },
        )
        with urllib.request.urlopen(request, timeout=self.gateway.timeout_seconds) as response:
            response.read()

    def _superseded(self, version: int) -> bool:
        """Stop waiting to retry `version`: stopping, or a newer document is waiting."""
        return self.stopping or (self.pending is not None and self.pending[0] != version)

    def _run(self) -> None:
        backoff = 0.5
        while True:
            with self.cond:
                while self.pending is None and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                assert self.pending is not None
                version, body = self.pending
            try:
                self._post(version, body)
            except (OSError, urllib.error.URLError) as exc:
                self.failures += 1
                logger.warning(
                    "webhook %s (%s): delivering version %d failed (%s); retrying in %.1fs",
                    self.gateway.name,
                    self.gateway.webhook,
                    version,
                    exc,
                    backoff,
                )
                with self.cond:
                    self.cond.wait_for(functools.partial(self._superseded, version), backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            backoff = 0.5
            with self.cond:
                self.delivered_version = version
                if self.pending is not None and self.pending[0] == version:
                    self.pending = None


class WebhookSender:
    """Delivers each new cap state to every gateway; `notify` is the CapState change listener."""

    def __init__(self, gateways: list[GatewayConfig]) -> None:
        self.targets = [_Target(gateway) for gateway in gateways]
        for target in self.targets:
            target.thread.start()

    def notify(self, version: int, body: bytes) -> None:
        for target in self.targets:
            target.offer(version, body)

    def delivered(self) -> dict[str, int]:
        """gateway name -> the last version it acknowledged (2xx)."""
        return {target.gateway.name: target.delivered_version for target in self.targets}

    def stop(self) -> None:
        for target in self.targets:
            with target.cond:
                target.stopping = True
                target.cond.notify_all()
        for target in self.targets:
            target.thread.join(5)
