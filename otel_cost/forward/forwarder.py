"""Hands acknowledged exports on to the configured downstreams, each from its own bounded queue.

`Forwarder.submit` is called in the event loop once an export is stored: it appends the export's
bytes to every endpoint's queue and returns (no I/O, no waiting), so a slow or absent downstream
never slows ingestion, storage or caps. Each endpoint's thread sends the oldest queued exports, merged
into one request up to `max_batch_bytes` (serialized OTLP requests concatenate into one request),
and retries a retryable failure with growing pauses, or the pause the server asks for, until it is
delivered. A queue past `queue_max_bytes` drops its oldest exports: in an outage the freshest traces
are the ones kept. Everything is counted in /metrics: spans forwarded, rejected by the downstream
and dropped, failed attempts, and what waits in each queue.

The queues are in memory: what waits in them when the process stops gets `stop`'s grace period to
be delivered, and is counted as dropped after it (the store has every span either way).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Sequence

from ..config import ForwardEndpointConfig
from ..metrics import Metrics
from .senders import Sender, new_sender

__all__ = ["Forwarder"]

logger = logging.getLogger(__name__)


class _Lane:
    """One endpoint: its queue, its sender and the thread between them."""

    def __init__(self, config: ForwardEndpointConfig, metrics: Metrics) -> None:
        self.config = config
        self.name = config.label
        self.metrics = metrics
        self.sender: Sender = new_sender(config)
        self._queue: deque[tuple[bytes, int]] = deque()  # (serialized export, spans in it)
        self.queued_bytes = 0
        self._condition = threading.Condition()
        self._stopping = False
        self._deadline = 0.0  # once stopping: when what is left is dropped
        self._thread = threading.Thread(target=self._run, name=f"otel-cost-forward-{self.name}", daemon=True)
        self._idle = True  # nothing queued and nothing in flight (`wait_idle`)
        labels = (self.name,)
        self._forwarded = metrics.forward_spans.labels(self.name, "forwarded")
        self._rejected = metrics.forward_spans.labels(self.name, "rejected")
        self._dropped = metrics.forward_spans.labels(self.name, "dropped")
        self._retries = metrics.forward_retries.labels(*labels)
        metrics.forward_queue_bytes.labels(*labels).set_function(lambda: float(self.queued_bytes))
        metrics.forward_queue_exports.labels(*labels).set_function(lambda: float(len(self._queue)))

    def start(self) -> None:
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, export: bytes, spans: int) -> None:
        limit = self.config.queue_max_bytes
        with self._condition:
            self._queue.append((export, spans))
            self.queued_bytes += len(export)
            self._idle = False
            while self.queued_bytes > limit and len(self._queue) > 1:
                old, old_spans = self._queue.popleft()
                self.queued_bytes -= len(old)
                self._drop(old_spans, "queue_full")
            self._condition.notify()

    def _drop(self, spans: int, reason: str) -> None:
        self._dropped.inc(spans)
        self.metrics.forward_drops.labels(self.name, reason).inc()

    def _take(self) -> tuple[bytes, int] | None:
        """The oldest exports, merged up to max_batch_bytes; None once stopped and drained (or out of time)."""
        with self._condition:
            while not self._queue:
                self._idle = True
                self._condition.notify_all()
                if self._stopping:
                    return None
                self._condition.wait()
            if self._stopping and time.monotonic() >= self._deadline:
                return None
            parts: list[bytes] = []
            spans = size = 0
            limit = self.config.max_batch_bytes
            while self._queue and (not parts or size + len(self._queue[0][0]) <= limit):
                export, count = self._queue.popleft()
                parts.append(export)
                size += len(export)
                spans += count
            self.queued_bytes -= size
        # Concatenated serialized messages parse as one whose repeated fields hold every part's items.
        return (parts[0] if len(parts) == 1 else b"".join(parts)), spans

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                break
            self._deliver(*batch)
        with self._condition:  # out of time: what is left is dropped, and counted
            while self._queue:
                _, spans = self._queue.popleft()
                self._drop(spans, "shutdown")
            self.queued_bytes = 0
            self._idle = True
            self._condition.notify_all()
        self.sender.close()

    def _deliver(self, payload: bytes, spans: int) -> None:
        pause = self.config.retry_initial_seconds
        while True:
            try:
                answer = self.sender.send(payload)
            except Exception:
                logger.exception("forwarding to %s failed unexpectedly; %d spans dropped", self.name, spans)
                self._drop(spans, "error")
                return
            if answer.delivered:
                rejected = min(answer.rejected_spans, spans)
                self._forwarded.inc(spans - rejected)
                if rejected:
                    self._rejected.inc(rejected)
                    logger.warning("%s rejected %d forwarded spans: %s", self.name, rejected, answer.error)
                return
            if not answer.retry:
                logger.warning("%s refused %d forwarded spans, not retryable: %s", self.name, spans, answer.error)
                self._rejected.inc(spans)
                self.metrics.forward_drops.labels(self.name, "refused").inc()
                return
            self._retries.inc()
            wait = answer.retry_after if answer.retry_after is not None else pause * random.uniform(0.8, 1.2)
            pause = min(pause * 2, self.config.retry_max_seconds)
            logger.debug("forwarding to %s failed (%s); retrying in %.2fs", self.name, answer.error, wait)
            with self._condition:
                if self._stopping:
                    remaining = self._deadline - time.monotonic()
                    if remaining <= 0:
                        self._drop(spans, "shutdown")
                        return
                    wait = min(wait, remaining)
                self._condition.wait(wait)

    def stop(self, deadline: float) -> None:
        with self._condition:
            self._stopping = True
            self._deadline = deadline
            self._condition.notify_all()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._condition:
            while not self._idle:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
        return True


class Forwarder:
    """The downstreams of `forward.endpoints`. `start`, then `submit` from anywhere, then `stop`."""

    def __init__(self, endpoints: Sequence[ForwardEndpointConfig], metrics: Metrics) -> None:
        self._lanes = [_Lane(config, metrics) for config in endpoints]
        self.metrics = metrics

    def start(self) -> None:
        for lane in self._lanes:
            lane.start()

    def submit(self, export: bytes, spans: int) -> None:
        """Queue one acknowledged export (serialized ExportTraceServiceRequest) for every endpoint."""
        for lane in self._lanes:
            lane.submit(export, spans)

    def skip_retry(self, spans: int) -> None:
        """An export whose calls were all stored and forwarded before (a client's retry): not sent twice."""
        for lane in self._lanes:
            self.metrics.forward_spans.labels(lane.name, "skipped_retry").inc(spans)

    def queued(self) -> dict[str, int]:
        """Exports waiting, per endpoint."""
        return {lane.name: lane.queued for lane in self._lanes}

    def wait_idle(self, timeout: float) -> bool:
        """True once every queue is empty and nothing is in flight (tests, benchmarks)."""
        end = time.monotonic() + timeout
        return all(lane.wait_idle(max(0.0, end - time.monotonic())) for lane in self._lanes)

    def stop(self, grace_seconds: float) -> None:
        """Deliver what is queued for up to `grace_seconds`, then drop (and count) the rest."""
        deadline = time.monotonic() + grace_seconds
        for lane in self._lanes:
            lane.stop(deadline)
        for lane in self._lanes:
            lane.join(max(0.0, deadline - time.monotonic()) + lane.config.timeout_seconds + 1)
