"""Alert delivery against real HTTP servers on 127.0.0.1: signatures, Slack's format, retries, dead sinks."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from typing import Any

import pytest

from otel_cost.alerts.model import Alert, Containment
from otel_cost.alerts.sinks import AlertDispatcher, slack_message
from otel_cost.config import AlertSinkConfig
from otel_cost.metrics import Metrics

SECRET = "alert-webhook-secret-0123456789"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SINKS_LOGGER = "otel_cost.alerts.sinks"
FAST = {"initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.2}


# --- a receiver ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    at: float  # time.monotonic() when the request arrived
    path: str
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, dict[str, str], bytes]


class Receiver(http.server.ThreadingHTTPServer):
    """Records every POST; `answer(request, index)` scripts the response (default 200 "ok")."""

    def __init__(self, answer: Callable[[Request, int], Answer] | None = None) -> None:
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = Request(time.monotonic(), self.path, self.headers, body)
                with outer.lock:
                    index = len(outer.requests)
                    outer.requests.append(request)
                status, headers, payload = answer(request, index) if answer else (200, {}, b"ok")
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, path: str = "/alerts") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def received(self, path: str | None = None) -> list[Request]:
        with self.lock:
            return [request for request in self.requests if path is None or request.path == path]


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def make(answer: Callable[[Request, int], Answer] | None = None) -> Receiver:
        receiver = Receiver(answer)
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.shutdown()
        receiver.server_close()


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def closed_port() -> int:
    """A port with nothing listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Calls:
    delivered: list[tuple[str, str, int]]
    failed: list[tuple[str, str, str]]


@pytest.fixture
def calls() -> Calls:
    return Calls([], [])


@pytest.fixture
def make_dispatcher(calls: Calls) -> Iterator[Callable[..., AlertDispatcher]]:
    started: list[AlertDispatcher] = []

    def make(sinks: list[AlertSinkConfig], **options: Any) -> AlertDispatcher:
        dispatcher = AlertDispatcher(
            sinks,
            on_delivered=lambda alert, sink, attempts: calls.delivered.append((alert.id, sink, attempts)),
            on_failed=lambda alert, sink, reason: calls.failed.append((alert.id, sink, reason)),
            **{**FAST, **options},
        )
        started.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in started:
        dispatcher.stop(1.0)


# --- helpers ------------------------------------------------------------------------------------------


def make_alert(
    n: int = 0,
    *,
    severity: str = "warning",
    kind: str = "agent_loop",
    title: str | None = None,
    message: str = "412 calls in 3 minutes",
    subject: dict[str, str] | None = None,
    evidence: dict[str, Any] | None = None,
    containment: Containment | None = None,
) -> Alert:
    return Alert(
        id=uuid.uuid4().hex,
        key=f"{kind}:test:{n}",
        kind=kind,
        severity=severity,
        fired_at=datetime.now(UTC),
        title=title or f"alert {n}",
        message=message,
        subject={"agent": "doc-triage"} if subject is None else subject,
        evidence={} if evidence is None else evidence,
        containment=containment,
    )


def webhook(url: str, name: str = "hooks", **options: Any) -> AlertSinkConfig:
    return AlertSinkConfig(kind="webhook", name=name, url=url, secret=SECRET, **{"timeout_seconds": 2, **options})


def slack(url: str, name: str = "slack", **options: Any) -> AlertSinkConfig:
    return AlertSinkConfig(kind="slack", name=name, url=url, **{"timeout_seconds": 2, **options})


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(0.01)


def drained(dispatcher: AlertDispatcher) -> bool:
    # An alert leaves its queue only once delivered or given up (callbacks done).
    return sum(dispatcher.queued().values()) == 0


def count(metrics: Metrics, sink: str, outcome: str) -> float | None:
    return metrics.registry.get_sample_value("otel_cost_alert_deliveries_total", {"sink": sink, "outcome": outcome})


def outcomes(metrics: Metrics, sink: str) -> dict[str, float | None]:
    return {outcome: count(metrics, sink, outcome) for outcome in ("delivered", "retried", "failed", "dropped")}


def alert_ids(requests: list[Request]) -> list[str | None]:
    return [request.headers["X-Otel-Cost-Alert-Id"] for request in requests]


def verify(secret: bytes, headers: Message, body: bytes) -> bool:
    """Exactly as the README documents it for cap webhooks."""
    timestamp = headers["X-Otel-Cost-Timestamp"]
    expected = "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= 300
    return fresh and hmac.compare_digest(expected, headers["X-Otel-Cost-Signature"])


def texts(payload: Any) -> Iterator[str]:
    """Every "text" string in a Slack payload, at any depth."""
    if isinstance(payload, dict):
        for key, value in payload.items():
            if key == "text" and isinstance(value, str):
                yield value
            else:
                yield from texts(value)
    elif isinstance(payload, list):
        for item in payload:
            yield from texts(item)


def assert_slack_limits(payload: dict[str, Any]) -> None:
    assert set(payload) == {"text", "blocks"}
    blocks = payload["blocks"]
    assert 1 <= len(blocks) <= 50
    assert {block["type"] for block in blocks} <= {"header", "section", "context"}
    for block in blocks:
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= 150
        elif block["type"] == "section":
            assert ("text" in block) != ("fields" in block)
            if "text" in block:
                assert block["text"]["type"] == "mrkdwn"
                assert 0 < len(block["text"]["text"]) <= 3000
            else:
                assert 1 <= len(block["fields"]) <= 10
                for field in block["fields"]:
                    assert field["type"] == "mrkdwn"
                    assert 0 < len(field["text"]) <= 2000
        else:
            assert 1 <= len(block["elements"]) <= 10
    for text in texts(payload):
        # Slack's control characters only as entities, none cut in half by a truncation.
        assert "<" not in text and ">" not in text, text
        assert re.sub(r"&(amp|lt|gt);", "", text).count("&") == 0, text


# --- webhook ------------------------------------------------------------------------------------------


def test_a_webhook_delivery_is_signed_as_the_readme_documents(
    make_receiver: Callable[..., Receiver], make_dispatcher: Callable[..., AlertDispatcher], calls: Calls
) -> None:
    receiver = make_receiver()
    metrics = Metrics()
    dispatcher = make_dispatcher([webhook(receiver.url("/finops"))], metrics=metrics)
    alert = make_alert(evidence={"calls": 412, "cost_usd": "18.40", "sample_span_ids": ["00f067aa0ba902b7"]})

    dispatcher.submit(alert)
    wait_for(lambda: drained(dispatcher))

    [request] = receiver.received()
    assert request.path == "/finops"
    assert verify(SECRET.encode(), request.headers, request.body)
    assert not verify(b"some-other-secret-0123456789", request.headers, request.body)
    assert request.body == alert.body()
    assert request.json() == alert.document()
    assert request.headers["X-Otel-Cost-Alert-Id"] == alert.id
    assert request.headers["X-Otel-Cost-Event"] == "alert"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "otel-cost"
    assert calls.delivered == [(alert.id, "hooks", 1)]
    assert calls.failed == []
    assert outcomes(metrics, "hooks") == {"delivered": 1, "retried": 0, "failed": 0, "dropped": 0}
    assert metrics.registry.get_sample_value("otel_cost_alert_queue_alerts", {"sink": "hooks"}) == 0
    assert dispatcher.recorded_sinks == ["hooks"]


# --- slack --------------------------------------------------------------------------------------------


def test_a_slack_delivery_is_block_kit_with_every_text_escaped(
    make_receiver: Callable[..., Receiver], make_dispatcher: Callable[..., AlertDispatcher], calls: Calls
) -> None:
    receiver = make_receiver()
    dispatcher = make_dispatcher([slack(receiver.url("/services/T000/B000/XXXX"))])
    alert = make_alert(
        severity="critical",
        title="Loop in <doc-triage> & co",
        message="<!channel> 412 calls & $18.40 in 3 minutes > the 200-call limit",
        subject={"agent": "doc<triage>", "trace_id": TRACE_ID},
        evidence={
            "calls": 412,
            "cost_usd": "18.40",
            "top_traces": [{"trace_id": TRACE_ID, "cost_usd": "18.40", "calls": 412}],
            "sample_span_ids": [f"00f067aa0ba902b{i}" for i in range(8)],
        },
    )

    dispatcher.submit(alert)
    wait_for(lambda: drained(dispatcher))

    [request] = receiver.received()
    assert request.headers["Content-Type"] == "application/json"
    payload = request.json()
    assert_slack_limits(payload)
    assert payload["text"] == "[critical] Loop in &lt;doc-triage&gt; &amp; co"
    header, message, fields, *lists, context = payload["blocks"]
    assert header["type"] == "header"
    assert header["text"]["text"] == ":red_circle: Loop in &lt;doc-triage&gt; &amp; co"
    assert message["text"]["text"] == "&lt;!channel&gt; 412 calls &amp; $18.40 in 3 minutes &gt; the 200-call limit"
    assert [field["text"] for field in fields["fields"]] == [
        "*agent*\n`doc&lt;triage&gt;`",
        f"*trace_id*\n`{TRACE_ID}`",
        "*calls*\n412",
        "*cost_usd*\n18.40",
    ]
    assert [block["text"]["text"] for block in lists] == [
        f"*top_traces*\n• `{TRACE_ID}` · cost_usd 18.40 · calls 412",
        "*sample_span_ids*\n" + "\n".join(f"• `00f067aa0ba902b{i}`" for i in range(5)) + "\n… and 3 more",
    ]
    assert context["type"] == "context"
    fired = alert.fired_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert context["elements"] == [
        {"type": "mrkdwn", "text": f"otel-cost · agent_loop · alert {alert.id[:12]} · {fired}"}
    ]
    assert calls.delivered == [(alert.id, "slack", 1)]


def test_a_slack_message_stays_within_slacks_limits() -> None:
    containment = Containment(scope={"agent": "doc-triage"}, action="block", minutes=30)
    alert = make_alert(
        severity="info",
        title="&" * 400,  # every cut would fall inside "&amp;"
        message="spend <rose> " * 1000,
        subject={f"key{i}": "v&" * 1500 for i in range(15)},
        evidence={**{f"list{i}": [{"trace_id": "t" * 500, "nested": {"a": [1, 2]}}] * 50 for i in range(60)}},
        containment=containment,
    )

    payload = slack_message(alert)

    assert_slack_limits(payload)
    header = payload["blocks"][0]["text"]["text"]
    assert header.startswith(":large_blue_circle: &amp;") and header.endswith("&amp;…")
    assert len(payload["blocks"]) <= 10  # a few list sections, not one per evidence entry
    assert "*Automatic block* on `agent=doc-triage` for 30 min" in json.dumps(payload)


# --- retries ------------------------------------------------------------------------------------------


def test_5xx_is_retried_with_backoff_until_delivered(
    make_receiver: Callable[..., Receiver], make_dispatcher: Callable[..., AlertDispatcher], calls: Calls
) -> None:
    receiver = make_receiver(lambda request, index: (500, {}, b"oops") if index < 2 else (200, {}, b"ok"))
    metrics = Metrics()
    dispatcher = make_dispatcher([webhook(receiver.url())], metrics=metrics)
    alert = make_alert()

    dispatcher.submit(alert)
    wait_for(lambda: drained(dispatcher))

    requests = receiver.received()
    assert alert_ids(requests) == [alert.id] * 3
    assert all(verify(SECRET.encode(), request.headers, request.body) for request in requests)
    assert requests[1].at - requests[0].at >= 0.045  # 0.05 s, jitter -10%
    assert requests[2].at - requests[1].at >= 0.09  # doubled
    assert calls.delivered == [(alert.id, "hooks", 3)]
    assert outcomes(metrics, "hooks") == {"delivered": 1, "retried": 2, "failed": 0, "dropped": 0}


def test_retry_after_is_honoured(
    make_receiver: Callable[..., Receiver], make_dispatcher: Callable[..., AlertDispatcher], calls: Calls
) -> None:
    receiver = make_receiver(
        lambda request, index: (429, {"Retry-After": "1"}, b"slow down") if index == 0 else (200, {}, b"ok")
    )
    dispatcher = make_dispatcher([slack(receiver.url())], initial_backoff_seconds=0.05, max_backoff_seconds=5)
    alert = make_alert()

    dispatcher.submit(alert)
    wait_for(lambda: drained(dispatcher))

    first, second = receiver.received()
    assert 1.0 <= second.at - first.at < 3.0  # the server's second, not our 0.05 s nor the 5 s cap
    assert calls.delivered == [(alert.id, "slack", 2)]


def test_retry_after_is_capped_at_max_backoff(
    make_receiver: Callable[..., Receiver], make_dispatcher: Callable[..., AlertDispatcher], calls: Calls
) -> None:
    receiver = make_receiver(
        lambda request, index: (503, {"Retry-After": "30"}, b"") if index == 0 else (200, {}, b"ok")
    )
    dispatcher = make_dispatcher([slack(receiver.url())])  # max_backoff_seconds 0.2
    alert = make_alert()

    dispatcher.submit(alert)
    wait_for(lambda: drained(dispatcher), timeout=5)

    first, second = receiver.received()
    assert second.at - first.at < 2.0
    assert calls.delivered == [(alert.id, "slack", 2)]


def test_a_permanent_4xx_gives_up_at_once_and_the_next_alert_goes_out(
    make_receiver: Callable[..., Receiver],
    make_dispatcher: Callable[..., AlertDispatcher],
    calls: Calls,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = make_receiver(lambda request, index: (400, {}, b"invalid_payload") if index == 0 else (200, {}, b"ok"))
    metrics = Metrics()
    dispatcher = make_dispatcher([slack(receiver.url())], metrics=metrics)
    rejected, accepted = make_alert(1), make_alert(2)

    with caplog.at_level(logging.WARNING, logger=SINKS_LOGGER):
        dispatcher.submit(rejected)
        dispatcher.submit(accepted)
        wait_for(lambda: drained(dispatcher))

    assert [request.json()["text"] for request in receiver.received()] == ["[warning] alert 1", "[warning] alert 2"]
    [(alert_id, sink, reason)] = calls.failed
    assert (alert_id, sink) == (rejected.id, "slack")
    assert reason == "HTTP 400 Bad Request: invalid_payload"
    assert calls.delivered == [(accepted.id, "slack", 1)]
    assert outcomes(metrics, "slack") == {"delivered": 1, "retried": 0, "failed": 1, "dropped": 0}
    [record] = [record for record in caplog.records if record.name == SINKS_LOGGER]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        f"alert sink slack: gave up on alert {rejected.id} after 1 attempt(s): HTTP 400 Bad Request: invalid_payload"
    )


def test_a_redirect_is_a_permanent_failure_not_a_bodiless_get(
    make_receiver: Callable[..., Receiver], make_dispatcher: Callable[..., AlertDispatcher], calls: Calls
) -> None:
    receiver = make_receiver(lambda request, index: (302, {"Location": "/elsewhere"}, b""))
    dispatcher = make_dispatcher([webhook(receiver.url())])
    alert = make_alert()

    dispatcher.submit(alert)
    wait_for(lambda: drained(dispatcher))

    assert [request.path for request in receiver.received()] == ["/alerts"]
    assert calls.failed == [(alert.id, "hooks", "HTTP 302 Found (redirects are not followed: configure the final url)")]


def test_an_alert_is_given_up_after_give_up_after_seconds_and_the_next_goes_out(
    make_receiver: Callable[..., Receiver], make_dispatcher: Callable[..., AlertDispatcher], calls: Calls
) -> None:
    stuck, fine = make_alert(1), make_alert(2)
    receiver = make_receiver(
        lambda request, index: (503, {}, b"") if request.headers["X-Otel-Cost-Alert-Id"] == stuck.id else (204, {}, b"")
    )
    metrics = Metrics()
    dispatcher = make_dispatcher(
        [webhook(receiver.url())],
        metrics=metrics,
        give_up_after_seconds=0.3,
        initial_backoff_seconds=0.05,
        max_backoff_seconds=0.1,
    )

    submitted = time.monotonic()
    dispatcher.submit(stuck)
    dispatcher.submit(fine)
    wait_for(lambda: drained(dispatcher))

    requests = receiver.received()
    attempts = len(requests) - 1
    assert attempts >= 2  # the first attempt and one at the deadline
    assert alert_ids(requests) == [stuck.id] * attempts + [fine.id]
    assert requests[-2].at - submitted >= 0.29
    [(alert_id, sink, reason)] = calls.failed
    assert (alert_id, sink) == (stuck.id, "hooks")
    assert re.fullmatch(rf"still failing after {attempts} attempts over 0s: HTTP 503 Service Unavailable", reason)
    assert calls.delivered == [(fine.id, "hooks", 1)]
    assert outcomes(metrics, "hooks") == {"delivered": 1, "retried": attempts - 1, "failed": 1, "dropped": 0}


def test_callback_exceptions_are_logged_and_the_sink_keeps_going(
    make_receiver: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    receiver = make_receiver()
    seen: list[str] = []

    def on_delivered(alert: Alert, sink: str, attempts: int) -> None:
        seen.append(alert.id)
        raise RuntimeError("the store is closed")

    dispatcher = AlertDispatcher([webhook(receiver.url())], on_delivered=on_delivered, **FAST)
    first, second = make_alert(1), make_alert(2)
    try:
        with caplog.at_level(logging.ERROR, logger=SINKS_LOGGER):
            dispatcher.submit(first)
            dispatcher.submit(second)
            wait_for(lambda: drained(dispatcher))
    finally:
        dispatcher.stop(1.0)

    assert seen == [first.id, second.id]
    assert [record.getMessage() for record in caplog.records if record.name == SINKS_LOGGER] == [
        f"alert sink hooks: on_delivered failed for alert {first.id}",
        f"alert sink hooks: on_delivered failed for alert {second.id}",
    ]
    assert all(record.exc_info is not None for record in caplog.records if record.name == SINKS_LOGGER)


# --- isolation ----------------------------------------------------------------------------------------


def test_a_dead_sink_never_slows_the_caller_or_the_other_sinks(
    make_receiver: Callable[..., Receiver],
    hung_port: int,
    closed_port: int,
    make_dispatcher: Callable[..., AlertDispatcher],
    calls: Calls,
) -> None:
    healthy = make_receiver()
    metrics = Metrics()
    dispatcher = make_dispatcher(
        [
            webhook(f"http://127.0.0.1:{hung_port}/alerts", name="hung", timeout_seconds=0.5),
            webhook(f"http://127.0.0.1:{closed_port}/alerts", name="refused", timeout_seconds=0.5),
            webhook(healthy.url(), name="healthy"),
        ],
        metrics=metrics,
    )
    alerts = [make_alert(n) for n in range(20)]

    started = time.perf_counter()
    for alert in alerts:
        dispatcher.submit(alert)
    elapsed = time.perf_counter() - started

    assert elapsed < 0.05
    wait_for(lambda: len(healthy.received()) == 20)
    assert alert_ids(healthy.received()) == [alert.id for alert in alerts]
    wait_for(lambda: (count(metrics, "hung", "retried") or 0) >= 1 and (count(metrics, "refused", "retried") or 0) >= 2)
    assert [entry for entry in calls.delivered if entry[1] != "healthy"] == []
    assert calls.failed == []
    assert dispatcher.queued() == {"hung": 20, "refused": 20, "healthy": 0}

    started = time.monotonic()
    dispatcher.stop(1.0)
    assert time.monotonic() - started < 1.5
    dispatcher.stop(1.0)  # idempotent


def test_a_full_queue_drops_the_new_alerts(
    hung_port: int,
    make_dispatcher: Callable[..., AlertDispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    dispatcher = make_dispatcher(
        [webhook(f"http://127.0.0.1:{hung_port}/alerts", name="hung", timeout_seconds=0.5)],
        metrics=metrics,
        max_queue=3,
    )
    alerts = [make_alert(n) for n in range(10)]

    with caplog.at_level(logging.WARNING, logger=SINKS_LOGGER):
        for alert in alerts:
            dispatcher.submit(alert)
        dispatcher.stop(1.0)

    assert count(metrics, "hung", "dropped") == 7
    assert dispatcher.queued() == {"hung": 3}  # the one in flight included
    assert metrics.registry.get_sample_value("otel_cost_alert_queue_alerts", {"sink": "hung"}) == 3
    burst = [record.getMessage() for record in caplog.records if "queue" in record.getMessage()]
    assert burst == [
        f"alert sink hung: queue full (3 alerts waiting), dropping alert {alerts[3].id} and later ones until it drains",
        "alert sink hung: dropped 7 alerts while its queue was full",
    ]


# --- filters and the log sink -------------------------------------------------------------------------


def test_min_severity_kinds_and_only_choose_the_sinks(
    make_receiver: Callable[..., Receiver], make_dispatcher: Callable[..., AlertDispatcher]
) -> None:
    receiver = make_receiver()
    dispatcher = make_dispatcher(
        [
            webhook(receiver.url("/critical"), name="critical", min_severity="critical"),
            webhook(receiver.url("/budgets"), name="budgets", kinds=["budget_threshold", "budget_forecast"]),
            webhook(receiver.url("/everything"), name="everything"),
        ]
    )
    info = make_alert(1, severity="info", kind="agent_loop")
    critical = make_alert(2, severity="critical", kind="agent_loop")
    budget = make_alert(3, severity="warning", kind="budget_threshold")
    resent = make_alert(4, severity="critical", kind="budget_forecast")

    dispatcher.submit(info)
    dispatcher.submit(critical)
    dispatcher.submit(budget)
    dispatcher.submit(resent, only=["budgets"])  # "critical" admits it too, but was not named
    dispatcher.submit(info, only=["critical", "retired-sink"])  # named, but below its min_severity
    wait_for(lambda: drained(dispatcher))

    assert alert_ids(receiver.received("/critical")) == [critical.id]
    assert alert_ids(receiver.received("/budgets")) == [budget.id, resent.id]
    assert alert_ids(receiver.received("/everything")) == [info.id, critical.id, budget.id]
    assert dispatcher.recorded_sinks == ["critical", "budgets", "everything"]


def test_the_log_sink_logs_one_warning_line(
    make_dispatcher: Callable[..., AlertDispatcher], calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = make_dispatcher([AlertSinkConfig(kind="log", min_severity="warning")])
    alert = make_alert(severity="critical", title="Runaway agent doc-triage", message="412 calls\nin 3 minutes")

    with caplog.at_level(logging.DEBUG, logger=SINKS_LOGGER):
        dispatcher.submit(alert)
        dispatcher.submit(make_alert(severity="info"))  # below the sink's min_severity

    [record] = [record for record in caplog.records if record.name == SINKS_LOGGER]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"alert {alert.id} [critical] Runaway agent doc-triage: 412 calls in 3 minutes"
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=SINKS_LOGGER):
        make_dispatcher([AlertSinkConfig(kind="log")]).submit(make_alert(severity="info"))
    assert [record.levelno for record in caplog.records if record.name == SINKS_LOGGER] == [logging.INFO]
    assert dispatcher.recorded_sinks == []
    assert dispatcher.queued() == {}
    assert calls.delivered == []


def test_a_stopped_dispatcher_ignores_submit(
    make_receiver: Callable[..., Receiver],
    make_dispatcher: Callable[..., AlertDispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = make_receiver()
    dispatcher = make_dispatcher([webhook(receiver.url())])
    dispatcher.stop(1.0)
    alert = make_alert()

    with caplog.at_level(logging.WARNING, logger=SINKS_LOGGER):
        dispatcher.submit(alert)

    assert [record.getMessage() for record in caplog.records if record.name == SINKS_LOGGER] == [
        f"alert dispatcher stopped: alert {alert.id} not delivered (it is re-sent after a restart)"
    ]
    assert dispatcher.queued() == {"hooks": 0}
    assert receiver.received() == []


def test_bad_arguments_are_refused_with_a_message() -> None:
    with pytest.raises(ValueError, match=r"^alert sink names must be unique \(set `name`\): hooks$"):
        AlertDispatcher([webhook("http://127.0.0.1:9/a"), webhook("http://127.0.0.1:9/b")])
    with pytest.raises(ValueError, match=r"^max_queue must be >= 1 \(got 0\)$"):
        AlertDispatcher([], max_queue=0)
    with pytest.raises(
        ValueError,
        match=r"^initial_backoff_seconds must be > 0 and <= max_backoff_seconds \(got 2 and 1\)$",
    ):
        AlertDispatcher([], initial_backoff_seconds=2, max_backoff_seconds=1)
    dispatcher = AlertDispatcher([])
    with pytest.raises(TypeError, match=r"^only takes a collection of sink labels, not the string 'slack'$"):
        dispatcher.submit(make_alert(), only="slack")
    with pytest.raises(ValueError, match=r"unknown severity 'urgent' \(known: info, warning, critical\)$"):
        dispatcher.submit(make_alert(severity="urgent"))
    dispatcher.stop()
