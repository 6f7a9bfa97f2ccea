"""Alert delivery: a signed JSON webhook, a Slack incoming webhook, or the log.

Each network sink (webhook, slack) has its own thread and FIFO queue, so a slow or dead sink delays
neither `submit` nor the other sinks. A sink delivers its queue in order: the head is retried until it
is delivered or given up, and only then does the next alert go out (a reader sees alerts as they fired).

    outcome of one attempt                          metric outcome   then
    2xx                                             delivered        on_delivered(alert, sink, attempts)
    network error, timeout, 408, 429, 5xx           retried          backoff (Retry-After on 429/503)
      ... the same, give_up_after_seconds passed    failed           on_failed(alert, sink, reason)
    3xx (never followed), other 4xx                 failed           on_failed(alert, sink, reason)
    queue full when submitted (the new alert)       dropped          re-sent after a restart

A webhook request is signed at every attempt (a retry hours later would fail the receiver's five-minute
replay window otherwise) and carries `X-Otel-Cost-Alert-Id`, which stays the same across attempts and
restarts: receivers deduplicate on it.

The log sink writes one line inside `submit` (INFO for info alerts, WARNING for the others); it is not
recorded and never fails.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import Counter

from ..config import AlertSinkConfig
from ..formats import iso_utc
from ..metrics import Metrics
from ..signing import signed_headers
from .model import SEVERITIES, Alert, Containment, severity_rank

__all__ = ["AlertDispatcher", "slack_message", "webhook_request"]

logger = logging.getLogger(__name__)

_OUTCOMES = ("delivered", "retried", "failed", "dropped")
_RETRYABLE_STATUSES = frozenset({408, 429})
_RETRY_AFTER_STATUSES = frozenset({429, 503})
_MAX_RESPONSE_BYTES = 64 * 1024
_MAX_DETAIL_CHARS = 200
_JITTER = 0.1

# Slack Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
_HEADER_CHARS = 150
_SECTION_CHARS = 3000
_FIELD_CHARS = 2000
_MAX_FIELDS = 10
_MAX_BLOCKS = 50
_LIST_SECTIONS = 5
_LIST_ITEMS = 5
_LIST_ITEM_CHARS = 300
_SEVERITY_MARKERS = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}

OnDelivered = Callable[[Alert, str, int], None]
OnFailed = Callable[[Alert, str, str], None]


# --- requests ----------------------------------------------------------------------------------------


def webhook_request(alert: Alert, secret: str) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a webhook delivery, signed now."""
    body = alert.body()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "otel-cost",
        **signed_headers(secret, body),
        "X-Otel-Cost-Alert-Id": alert.id,
        "X-Otel-Cost-Event": "alert",
    }
    return body, headers


def slack_message(alert: Alert) -> dict[str, Any]:
    """The alert as a Slack incoming-webhook message (Block Kit), within Slack's size limits.

    Every text is escaped, so span attributes quoted in an alert can neither mention (`<!channel>`) nor
    link; the full evidence is in the webhook document, Slack shows the headline.
    """
    marker = _SEVERITY_MARKERS.get(alert.severity, "")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _clip(f"{marker} {_escape(_one_line(alert.title))}", _HEADER_CHARS),
                "emoji": True,
            },
        }
    ]
    if alert.message.strip():
        blocks.append(_mrkdwn_section(_escape(alert.message)))
    fields = _fields(alert)
    if fields:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": field} for field in fields]})
    if alert.containment is not None:
        blocks.append(_mrkdwn_section(_containment_text(alert.containment, alert.expires_at)))
    lists = [(key, value) for key, value in alert.evidence.items() if isinstance(value, list) and value]
    for key, items in lists[:_LIST_SECTIONS]:
        blocks.append(_mrkdwn_section(_list_text(key, items)))
    context = f"otel-cost · {alert.kind} · alert {alert.id[:12]} · {iso_utc(alert.fired_at)}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(_escape(context), _FIELD_CHARS)}]})
    return {
        "text": _clip(f"[{_escape(alert.severity)}] {_escape(_one_line(alert.title))}", _SECTION_CHARS),
        "blocks": blocks[:_MAX_BLOCKS],
    }


def _escape(text: str) -> str:
    # Slack's three control characters; everything else is literal.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, cut with "…" and never inside an escaped entity."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _code(value: Any) -> str:
    # Slack has no escape for a backtick inside inline code: one would end the code span.
    return "`" + _escape(_one_line(str(value))).replace("`", "'") + "`"


def _mrkdwn_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, _SECTION_CHARS)}}


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _fields(alert: Alert) -> list[str]:
    """Subject entries first (what it is about), then scalar evidence (how much), ten at most."""
    fields = [_clip(f"*{_escape(key)}*\n{_code(value)}", _FIELD_CHARS) for key, value in alert.subject.items()]
    for key, value in alert.evidence.items():
        if _is_scalar(value):
            fields.append(_clip(f"*{_escape(key)}*\n{_escape(str(value))}", _FIELD_CHARS))
    return fields[:_MAX_FIELDS]


def _containment_text(containment: Containment, expires_at: datetime | None) -> str:
    scope = ", ".join(f"{key}={value}" for key, value in sorted(containment.scope.items())) or "everything"
    text = f"*Automatic {_escape(containment.action)}* on {_code(scope)} for {containment.minutes} min"
    if expires_at is not None:
        text += f" (until {iso_utc(expires_at)})"
    if containment.downgrade:
        moves = ", ".join(f"{_code(src)} → {_code(dst)}" for src, dst in sorted(containment.downgrade.items()))
        text += f": {moves}"
    return text


def _list_item(item: Any) -> str:
    if isinstance(item, dict):
        parts = []
        for key, value in item.items():
            if _is_scalar(value) and (key == "id" or key.endswith("_id")):
                parts.append(_code(value))
            elif _is_scalar(value):
                parts.append(f"{_escape(str(key))} {_escape(str(value))}")
            else:
                parts.append(f"{_escape(str(key))} {_code(json.dumps(value, separators=(',', ':')))}")
        text = " · ".join(parts)
    elif isinstance(item, str):
        text = _code(item)
    elif _is_scalar(item):
        text = _escape(str(item))
    else:
        text = _code(json.dumps(item, separators=(",", ":")))
    return _clip(text, _LIST_ITEM_CHARS)


def _list_text(key: str, items: list[Any]) -> str:
    lines = [f"*{_escape(key)}*"]
    lines += [f"• {_list_item(item)}" for item in items[:_LIST_ITEMS]]
    if len(items) > _LIST_ITEMS:
        lines.append(f"… and {len(items) - _LIST_ITEMS} more")
    return "\n".join(lines)


# --- delivery ----------------------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a bodiless GET, whose 2xx would count as delivered.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class _Attempt:
    outcome: Literal["delivered", "retry", "permanent"]
    reason: str = ""
    retry_after_seconds: float | None = None


@dataclass(frozen=True)
class _Queued:
    alert: Alert
    give_up_at: float  # time.monotonic()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason) or type(exc.reason).__name__
    return str(exc) or type(exc).__name__


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class _Retries:
    initial_backoff_seconds: float
    max_backoff_seconds: float


class _Sink:
    """One network sink: its queue, its thread, its retries."""

    def __init__(
        self,
        config: AlertSinkConfig,
        retries: _Retries,
        delivered: OnDelivered,
        failed: OnFailed,
        metrics: Metrics | None,
    ) -> None:
        if not config.url:
            raise ValueError(f"alert sink {config.label}: a {config.kind} sink needs a url")
        if config.kind == "webhook" and not config.secret:
            raise ValueError(f"alert sink {config.label}: a webhook sink needs a secret")
        self.config = config
        self.label = config.label
        self.url = config.url
        self.secret = config.secret or ""
        self.retries = retries
        self.delivered = delivered
        self.failed = failed
        self.queue: deque[_Queued] = deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.dropped_in_burst = 0
        self.opener = urllib.request.build_opener(_NoRedirects)
        self.counters: dict[str, Counter] = {}
        if metrics is not None:
            self.counters = {outcome: metrics.alert_deliveries.labels(self.label, outcome) for outcome in _OUTCOMES}
            queue = self.queue
            metrics.alert_queue.labels(self.label).set_function(lambda: float(len(queue)))
        self.thread = threading.Thread(target=self._run, name=f"otel-cost-alerts-{self.label}", daemon=True)

    def _count(self, outcome: str) -> None:
        counter = self.counters.get(outcome)
        if counter is not None:
            counter.inc()

    # --- the caller's side

    def offer(self, alert: Alert, give_up_at: float, max_queue: int) -> None:
        burst_ended = 0
        with self.cond:
            if len(self.queue) >= max_queue:
                self.dropped_in_burst += 1
                dropped = self.dropped_in_burst
            else:
                dropped = 0
                burst_ended, self.dropped_in_burst = self.dropped_in_burst, 0
                self.queue.append(_Queued(alert, give_up_at))
                if len(self.queue) == 1:  # the thread waits only on an empty queue
                    self.cond.notify()
        if dropped:
            self._count("dropped")
            if dropped == 1:
                logger.warning(
                    "alert sink %s: queue full (%d alerts waiting), dropping alert %s and later ones until it drains",
                    self.label,
                    max_queue,
                    alert.id,
                )
        if burst_ended:
            logger.warning("alert sink %s: dropped %d alerts while its queue was full", self.label, burst_ended)

    def request_stop(self) -> None:
        with self.cond:
            self.stopping = True
            burst, self.dropped_in_burst = self.dropped_in_burst, 0
            self.cond.notify_all()
        if burst:
            logger.warning("alert sink %s: dropped %d alerts while its queue was full", self.label, burst)

    # --- the sink's thread

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                head = self.queue[0]
            try:
                finished = self._deliver(head)
            except Exception as exc:
                # A bug must not silence the sink for good: give this alert up, keep the thread.
                logger.exception("alert sink %s: delivering alert %s failed unexpectedly", self.label, head.alert.id)
                self._count("failed")
                self.failed(head.alert, self.label, f"unexpected error: {exc!r}")
                finished = True
            if not finished:
                return  # stopping: the alert stays queued, the caller re-sends it after a restart
            with self.cond:
                self.queue.popleft()

    def _deliver(self, queued: _Queued) -> bool:
        """Deliver or give up `queued` (True), or notice the dispatcher stopping (False)."""
        alert = queued.alert
        backoff = self.retries.initial_backoff_seconds
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            result = self._attempt(alert)
            if result.outcome == "delivered":
                self._count("delivered")
                logger.debug("alert sink %s: delivered alert %s (attempt %d)", self.label, alert.id, attempts)
                self.delivered(alert, self.label, attempts)
                return True
            if result.outcome == "permanent":
                return self._give_up(alert, attempts, result.reason)
            now = time.monotonic()
            if now >= queued.give_up_at:
                reason = f"still failing after {attempts} attempts over {now - started:.0f}s: {result.reason}"
                return self._give_up(alert, attempts, reason)
            maximum = self.retries.max_backoff_seconds
            delay = min(backoff * random.uniform(1 - _JITTER, 1 + _JITTER), maximum)
            if result.retry_after_seconds is not None:
                # The server's word is a floor, never a way to skip our own backoff.
                delay = max(delay, min(result.retry_after_seconds, maximum))
            delay = min(delay, queued.give_up_at - now)  # one last attempt at the deadline
            backoff = min(backoff * 2, maximum)
            self._count("retried")
            logger.warning(
                "alert sink %s: delivering alert %s failed (attempt %d: %s); retrying in %.2fs",
                self.label,
                alert.id,
                attempts,
                result.reason,
                delay,
            )
            with self.cond:
                if self.cond.wait_for(lambda: self.stopping, delay):
                    return False

    def _give_up(self, alert: Alert, attempts: int, reason: str) -> bool:
        self._count("failed")
        logger.error(
            "alert sink %s: gave up on alert %s after %d attempt(s): %s", self.label, alert.id, attempts, reason
        )
        self.failed(alert, self.label, reason)
        return True

    def _request(self, alert: Alert) -> urllib.request.Request:
        if self.config.kind == "webhook":
            body, headers = webhook_request(alert, self.secret)
        else:
            body = json.dumps(slack_message(alert)).encode()
            headers = {"Content-Type": "application/json", "User-Agent": "otel-cost"}
        return urllib.request.Request(self.url, data=body, method="POST", headers=headers)

    def _attempt(self, alert: Alert) -> _Attempt:
        """One POST, bounded by the sink's timeout per socket operation. Never raises for the network."""
        request = self._request(alert)
        try:
            with self.opener.open(request, timeout=self.config.timeout_seconds) as response:
                response.read(_MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as exc:
            return _http_error(exc)
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, bad responses
            return _Attempt("retry", _describe(exc))
        return _Attempt("delivered")


def _http_error(exc: urllib.error.HTTPError) -> _Attempt:
    try:
        detail = _one_line(exc.read(_MAX_RESPONSE_BYTES).decode("utf-8", "replace"))
    except (OSError, http.client.HTTPException):
        detail = ""
    finally:
        exc.close()
    code = exc.code
    reason = f"HTTP {code} {exc.reason}".rstrip()
    if detail:
        reason += f": {_clip(detail, _MAX_DETAIL_CHARS)}"
    if 300 <= code < 400:
        return _Attempt("permanent", f"{reason} (redirects are not followed: configure the final url)")
    if code >= 500 or code in _RETRYABLE_STATUSES:
        retry_after = _retry_after(exc.headers.get("Retry-After")) if code in _RETRY_AFTER_STATUSES else None
        return _Attempt("retry", reason, retry_after)
    return _Attempt("permanent", reason)


class AlertDispatcher:
    """Hands each alert to the sinks that want it; network sinks deliver on their own threads.

    `submit` never blocks and never raises for delivery problems. `on_delivered(alert, sink, attempts)`
    follows a 2xx, `on_failed(alert, sink, reason)` a give-up, both on the sink's thread; callers record
    them and re-send what no sink of `recorded_sinks` acknowledged after a restart (`submit(alert, only=...)`).
    """

    def __init__(
        self,
        sinks: Sequence[AlertSinkConfig],
        *,
        on_delivered: OnDelivered | None = None,
        on_failed: OnFailed | None = None,
        metrics: Metrics | None = None,
        give_up_after_seconds: float = 86_400,
        max_queue: int = 10_000,
        initial_backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 60.0,
    ) -> None:
        labels = [sink.label for sink in sinks]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"alert sink names must be unique (set `name`): {', '.join(repeated)}")
        if give_up_after_seconds <= 0:
            raise ValueError(f"give_up_after_seconds must be > 0 (got {give_up_after_seconds})")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1 (got {max_queue})")
        if not 0 < initial_backoff_seconds <= max_backoff_seconds:
            raise ValueError(
                "initial_backoff_seconds must be > 0 and <= max_backoff_seconds "
                f"(got {initial_backoff_seconds} and {max_backoff_seconds})"
            )
        self._on_delivered = on_delivered
        self._on_failed = on_failed
        self._give_up_after_seconds = give_up_after_seconds
        self._max_queue = max_queue
        retries = _Retries(initial_backoff_seconds, max_backoff_seconds)
        self._log_sinks = [sink for sink in sinks if sink.kind == "log"]
        self._sinks = [
            _Sink(sink, retries, self._report_delivered, self._report_failed, metrics)
            for sink in sinks
            if sink.kind != "log"
        ]
        self._unknown_only: set[str] = set()
        self._lock = threading.Lock()
        self._stopped = False
        for sink in self._sinks:
            sink.thread.start()

    @property
    def recorded_sinks(self) -> list[str]:
        """Labels of the network sinks: the ones whose deliveries are recorded and re-sent."""
        return [sink.label for sink in self._sinks]

    def queued(self) -> dict[str, int]:
        """Sink label -> alerts waiting (the one being delivered included)."""
        return {sink.label: len(sink.queue) for sink in self._sinks}

    def submit(self, alert: Alert, only: Collection[str] | None = None) -> None:
        """Queue `alert` for every sink whose min_severity and kinds admit it; with `only`, just those of
        the named sinks (filters still apply: a sink narrowed since the alert fired does not get it)."""
        if alert.severity not in SEVERITIES:
            raise ValueError(f"alert {alert.id}: unknown severity {alert.severity!r} (known: {', '.join(SEVERITIES)})")
        if isinstance(only, str):
            raise TypeError(f"only takes a collection of sink labels, not the string {only!r}")
        if self._stopped:
            logger.warning("alert dispatcher stopped: alert %s not delivered (it is re-sent after a restart)", alert.id)
            return
        wanted = None if only is None else set(only)
        if wanted is not None:
            self._warn_unknown(wanted)
        for config in self._log_sinks:
            if (wanted is None or config.label in wanted) and _admits(config, alert):
                logger.log(
                    logging.INFO if alert.severity == "info" else logging.WARNING,
                    "alert %s [%s] %s: %s",
                    alert.id,
                    alert.severity,
                    _one_line(alert.title),
                    _one_line(alert.message),
                )
        give_up_at = time.monotonic() + self._give_up_after_seconds
        for sink in self._sinks:
            if (wanted is None or sink.label in wanted) and _admits(sink.config, alert):
                sink.offer(alert, give_up_at, self._max_queue)

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Stop the sinks' threads, waiting at most `timeout_seconds` in all; idempotent.

        Undelivered alerts are left (re-sent after a restart). A thread inside a request cannot be
        interrupted: it is left to finish (daemon), and may still report that request's outcome.
        """
        deadline = time.monotonic() + timeout_seconds
        with self._lock:
            first = not self._stopped
            self._stopped = True
        if first:
            for sink in self._sinks:
                sink.request_stop()
        for sink in self._sinks:
            sink.thread.join(max(0.0, deadline - time.monotonic()))
        busy = [sink.label for sink in self._sinks if sink.thread.is_alive()]
        if busy and first:
            logger.warning(
                "alert sinks %s still in a request after %.1fs; left to time out", ", ".join(busy), timeout_seconds
            )

    # --- called from the sinks' threads

    def _report_delivered(self, alert: Alert, label: str, attempts: int) -> None:
        if self._on_delivered is None:
            return
        try:
            self._on_delivered(alert, label, attempts)
        except Exception:
            logger.exception("alert sink %s: on_delivered failed for alert %s", label, alert.id)

    def _report_failed(self, alert: Alert, label: str, reason: str) -> None:
        if self._on_failed is None:
            return
        try:
            self._on_failed(alert, label, reason)
        except Exception:
            logger.exception("alert sink %s: on_failed failed for alert %s", label, alert.id)

    def _warn_unknown(self, wanted: set[str]) -> None:
        known = {sink.label for sink in self._sinks} | {sink.label for sink in self._log_sinks}
        with self._lock:
            unknown = sorted(wanted - known - self._unknown_only)
            self._unknown_only.update(unknown)
        if unknown:
            # A sink removed from the config since the alert fired: nothing to re-send it to.
            logger.warning("alert sinks %s are not configured: alerts re-sent to them are skipped", ", ".join(unknown))


def _admits(config: AlertSinkConfig, alert: Alert) -> bool:
    if severity_rank(alert.severity) < severity_rank(config.min_severity):
        return False
    return not config.kinds or alert.kind in config.kinds
