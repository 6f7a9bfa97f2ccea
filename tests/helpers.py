"""Builders for OTLP payloads and a server running in a background thread, for tests."""

from __future__ import annotations

import asyncio
import http.server
import importlib.util
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from otel_cost.config import load_config
from otel_cost.server import Server
from otel_cost.store import QueryResult

NOW_NS = 1_795_991_404_000_000_000  # 2026-11-30T...Z, a fixed instant so prices are reproducible


def load_script(path: Path, name: str) -> ModuleType:
    """A script outside the package (`bench/`, `grafana/`) as a module, for testing its functions."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(item) for item in value)
        return out
    if isinstance(value, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(KeyValue(key=k, value=any_value(v)) for k, v in value.items())
        return out
    return AnyValue(string_value=str(value))


def key_values(attributes: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=any_value(value)) for key, value in attributes.items()]


def make_span(
    attributes: Mapping[str, Any],
    *,
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
    parent_span_id: bytes = b"",
    name: str = "chat",
    start_ns: int = NOW_NS,
    duration_ns: int = 1_000_000_000,
    error: bool = False,
) -> Span:
    span = Span(
        trace_id=trace_id or os.urandom(16),
        span_id=span_id or os.urandom(8),
        parent_span_id=parent_span_id,
        name=name,
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + duration_ns,
    )
    span.attributes.extend(key_values(attributes))
    if error:
        span.status.code = Status.STATUS_CODE_ERROR
    return span


def make_request(
    spans: list[Span],
    *,
    resource: Mapping[str, Any] | None = None,
    scope: str = "opentelemetry.instrumentation.openai.v1",
    scope_version: str = "0.62.4",
) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        key_values(resource if resource is not None else {"service.name": "checkout-assistant", "team": "payments"})
    )
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = scope
    scope_spans.scope.version = scope_version
    scope_spans.spans.extend(spans)
    return request


def chat_attributes(**extra: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 300,
    }
    attributes.update(extra)
    return attributes


class RunningServer:
    """A real `Server` on 127.0.0.1 with ports chosen by the OS, in its own thread and event loop."""

    def __init__(
        self,
        store_url: str,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        sections: dict[str, dict[str, Any]] = {
            "receiver": {"grpc_endpoint": "127.0.0.1:0", "http_endpoint": "127.0.0.1:0", "workers": 0},
            "api": {"endpoint": "127.0.0.1:0"},
            "store": {"url": store_url, "flush_interval_millis": 5},
        }
        for section, values in (overrides or {}).items():
            if isinstance(values, Mapping):
                sections.setdefault(section, {}).update(values)
            else:
                sections[section] = values  # a list section: budgets, gateways
        self.config = load_config(overrides=sections, environ={})
        self.server = Server(self.config, clock=clock)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-server", daemon=True)
        self._thread.start()
        try:
            self.run(self.server.start())
        except BaseException:
            self.close()
            raise

    def run(self, coroutine: Any, timeout: float = 60) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.server.api_port}"

    def query(self, sql: str) -> QueryResult:
        assert self.server.store is not None
        return self.server.store.query(sql)

    def scalar(self, sql: str) -> Any:
        return self.query(sql).scalar()

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def close(self) -> None:
        if self.loop.is_running():
            try:
                self.run(self.server.stop(grace_seconds=1))
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(10)
        self.loop.close()


def send_with_sdk_span(
    server: RunningServer,
    attributes: Mapping[str, Any],
    *,
    resource: Mapping[str, Any] | None = None,
    scope: str = "opentelemetry.instrumentation.openai_v2",
    version: str = "2.3b0",
    start_ns: int | None = None,
) -> str:
    """One span made by the real OTel SDK and sent by the real OTLP/gRPC exporter; its span id (hex)."""
    owner = {"service.name": "checkout-assistant", "team": "payments"} if resource is None else resource
    provider = TracerProvider(resource=Resource.create(dict(owner)))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.grpc_target, insecure=True)))
    tracer = provider.get_tracer(scope, version)
    span = tracer.start_span("chat", kind=SpanKind.CLIENT, attributes=dict(attributes), start_time=start_ns)
    span_id = format(span.get_span_context().span_id, "016x")
    span.end(end_time=None if start_ns is None else start_ns + 2_000_000_000)
    provider.shutdown()
    return span_id


def export(server: RunningServer, request: ExportTraceServiceRequest) -> Any:
    """One export over a real gRPC channel to the server's OTLP receiver; its response once acknowledged."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        return trace_service_pb2_grpc.TraceServiceStub(channel).Export(request, timeout=30)


class FakeClock:
    """What a server calls "now", set by the test (spans carry timestamps of the same time)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    @property
    def ns(self) -> int:
        return int(self.now.timestamp() * 1_000_000_000)


def wait_for(predicate: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.02)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HookServer:
    """A real HTTP server on 127.0.0.1 that records every POST (a webhook or Slack endpoint in tests).
    `status` is what it answers; `hang` makes it accept and never answer (a dead sink)."""

    status: int = 200
    hang: bool = False
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if hook.hang:
                    hook._release.wait(30)
                    return
                hook.received.append(Received(self.path, dict(self.headers.items()), body, time.monotonic()))
                self.send_response(hook.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._release = threading.Event()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def bodies(self) -> list[Any]:
        return [item.json() for item in list(self.received)]

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


def detector_runs(server: RunningServer, runs: int = 2) -> None:
    """Wait until the server's alert detectors ran `runs` more times (time for a repeat to show)."""
    alerter = server.server.alerter
    assert alerter is not None
    seen = alerter.detector_runs
    wait_for(lambda: alerter.detector_runs >= seen + runs, what=f"{runs} detector runs")
