"""Cost metrics over OTLP: the real SDK and OTLP exporters against real metrics endpoints on loopback.

Counters are cumulative, so the last request that carries a metric holds every stream's total; the
tests read that (`Sink.points`) and wait for it to equal the expected values, since a collection may
run between two `add`s of one `record` call and show a partial export first.

Spend is a double counter: each `record` rounds one exact Decimal per series to the nearest double
(relative error <= 2**-53) and the SDK adds doubles, so n records are within about n * 2**-53 of the
Decimal total. The tests allow 1e-12 relative: far looser than that bound, far tighter than any
per-call float accumulation of 1e-24 units would pass.
"""

from __future__ import annotations

import gzip
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otel_cost.config import MetricsExportConfig
from otel_cost.forward.metrics import CostMetrics
from otel_cost.forward.usage import UsageKey
from otel_cost.model import units_to_decimal

from ..helpers import HookServer, RunningServer, chat_attributes, export, make_request, make_span, wait_for
from ..tls import make_certificate

Attributes = frozenset[tuple[str, Any]]
USD = 10**24  # cost units per dollar

OPENAI: UsageKey = ("openai", "gpt-4o", "payments", "checkout", "refund-bot")
ANTHROPIC: UsageKey = ("anthropic", "claude-haiku-4-5", "search", "ranking", "unassigned")
OTHER: UsageKey = ("other", "other", "other", "other", "other")


def owner(key: UsageKey, **extra: Any) -> Attributes:
    names = ("gen_ai.provider.name", "gen_ai.response.model", "otel_cost.team", "otel_cost.feature", "otel_cost.agent")
    return frozenset({**dict(zip(names, key, strict=True)), **extra}.items())


def attrs(**values: Any) -> Attributes:
    return frozenset({key.replace("__", "."): value for key, value in values.items()}.items())


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class Sink:
    """What an OTLP metrics endpoint received, in order."""

    def __init__(self) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self.lock = threading.Lock()

    def add(self, request: ExportMetricsServiceRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def metrics(self, name: str) -> list[Any]:
        with self.lock:
            requests = list(self.requests)
        return [
            metric
            for request in requests
            for resource in request.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
        ]

    def points(self, name: str) -> dict[Attributes, Any]:
        """The metric's streams in the last request that carried it: {attributes: value}."""
        found = self.metrics(name)
        if not found:
            return {}
        metric = found[-1]
        data = getattr(metric, metric.WhichOneof("data"))
        return {
            frozenset((item.key, _value(item.value)) for item in point.attributes): getattr(
                point, point.WhichOneof("value")
            )
            for point in data.data_points
        }

    def resource(self) -> dict[str, Any]:
        with self.lock:
            request = self.requests[-1]
        return {item.key: _value(item.value) for item in request.resource_metrics[0].resource.attributes}


class GrpcSink(Sink):
    """An OTLP/gRPC metrics endpoint (opentelemetry-proto's MetricsService) recording requests and metadata."""

    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        super().__init__()
        self.metadata: list[dict[str, str]] = []
        sink = self

        class Service(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(  # noqa: N802 (the gRPC method name)
                self, request: ExportMetricsServiceRequest, context: grpc.ServicerContext
            ) -> ExportMetricsServiceResponse:
                sink.metadata.append({key: str(value) for key, value in context.invocation_metadata()})
                sink.add(request)
                return ExportMetricsServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Service(), self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()

    def close(self) -> None:
        self.server.stop(0)


class HttpSink(Sink):
    """An OTLP/HTTP metrics endpoint: POST protobuf (gzip or not) to any path; records paths and headers."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict[str, str]]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {key.lower(): value for key, value in self.headers.items()}
                if headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                sink.seen.append((self.path, headers))
                sink.add(ExportMetricsServiceRequest.FromString(body))
                answer = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GrpcTap:
    """A TCP relay in front of a gRPC endpoint that reads the client's HTTP/2 DATA frames.

    Every gRPC message on the wire starts with a one-byte compressed flag and a four-byte length; the
    tap records the flag of each message the client sent (1: compressed with the negotiated encoding)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.flags: list[int] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._relay, args=(upstream, client, None), daemon=True).start()
            threading.Thread(target=self._relay, args=(client, upstream, self._read_frames()), daemon=True).start()

    def _relay(self, source: socket.socket, target: socket.socket, parser: Any) -> None:
        if parser is not None:
            next(parser)
        try:
            while chunk := source.recv(65536):
                if parser is not None:
                    parser.send(chunk)
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, target):
                end.close()

    def _read_frames(self) -> Any:
        """A coroutine fed the client's bytes: HTTP/2 preface, then 9-byte frame headers and payloads."""
        buffer = b""
        messages: dict[int, bytes] = {}  # stream id -> DATA bytes not yet split into gRPC messages
        while len(buffer) < 24:
            buffer += yield
        buffer = buffer[24:]
        while True:
            while len(buffer) < 9 or len(buffer) < 9 + int.from_bytes(buffer[:3], "big"):
                buffer += yield
            length, kind, flags = int.from_bytes(buffer[:3], "big"), buffer[3], buffer[4]
            stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            payload, buffer = buffer[9 : 9 + length], buffer[9 + length :]
            if kind != 0:  # not DATA
                continue
            if flags & 0x8:  # PADDED
                payload = payload[1 : len(payload) - payload[0]]
            data = messages.get(stream, b"") + payload
            while len(data) >= 5 and len(data) >= 5 + int.from_bytes(data[1:5], "big"):
                self.flags.append(data[0])
                data = data[5 + int.from_bytes(data[1:5], "big") :]
            messages[stream] = data

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def grpc_sink() -> Iterator[GrpcSink]:
    sink = GrpcSink()
    yield sink
    sink.close()


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    sink = HttpSink()
    yield sink
    sink.close()


@pytest.fixture
def make_metrics() -> Iterator[Callable[..., CostMetrics]]:
    made: list[CostMetrics] = []

    def make(endpoint: str, **options: Any) -> CostMetrics:
        metrics = CostMetrics(MetricsExportConfig(endpoint=endpoint, **{"interval_seconds": 0.1, **options}))
        made.append(metrics)
        return metrics

    yield make
    for metrics in made:
        metrics.shutdown(timeout_seconds=2)


def eventually(sink: Sink, name: str, expected: dict[Attributes, Any], timeout: float = 10) -> None:
    """Wait for the metric's streams to equal `expected` exactly; then show the difference if not."""
    try:
        wait_for(lambda: sink.points(name) == expected, timeout=timeout, what=name)
    except AssertionError:
        assert sink.points(name) == expected
        raise


def spend_close(received: dict[Attributes, float], expected: dict[Attributes, Decimal]) -> bool:
    return received.keys() == expected.keys() and all(
        math.isclose(received[key], float(total), rel_tol=1e-12) for key, total in expected.items()
    )


def usage(cost_units: int, calls: int, unpriced: int, *tokens: int) -> list[int]:
    """A `Usage` value: tokens are (input, cache_read, cache_write, output excl. reasoning, reasoning)."""
    return [cost_units, calls, unpriced, *tokens]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cap(
    budget: str, scope: dict[str, str], action: str, spent: str, limit: str, forecast: str, **extra: Any
) -> dict[str, Any]:
    share = str((Decimal(spent) / Decimal(limit)).quantize(Decimal("0.0001")))
    return {
        "budget": budget,
        "scope": scope,
        "action": action,
        "spent": spent,
        "limit": limit,
        "share": share,
        "forecast": forecast,
        **extra,
    }


def test_spend_tokens_and_calls_are_exact(grpc_sink: GrpcSink, make_metrics: Callable[..., CostMetrics]) -> None:
    metrics = make_metrics(f"http://127.0.0.1:{grpc_sink.port}")
    # Amounts with more digits than a double holds: 1e-24 units summed per call would drift.
    first = 1_234_567_890_123_456_789_012_345
    second = 987_654_321_987_654_321_987
    third = 3 * USD + 1
    metrics.record({OPENAI: usage(first, 3, 1, 1200, 800, 0, 250, 50), ANTHROPIC: usage(0, 2, 2, 40, 0, 10, 7, 0)})
    metrics.record({OPENAI: usage(second, 1, 0, 100, 0, 0, 30, 0)})
    metrics.record({OPENAI: usage(third, 2, 0, 5, 0, 0, 5, 5)})

    expected = {owner(OPENAI): units_to_decimal(first) + units_to_decimal(second) + units_to_decimal(third)}
    wait_for(lambda: spend_close(grpc_sink.points("otel_cost.spend"), expected), what="spend")
    # Only billed money is spend: the all-unpriced Anthropic series has calls and tokens, no $0 spend.
    eventually(
        grpc_sink,
        "otel_cost.tokens",
        {
            owner(OPENAI, **{"otel_cost.token.class": "input"}): 1305,
            owner(OPENAI, **{"otel_cost.token.class": "cache_read"}): 800,
            owner(OPENAI, **{"otel_cost.token.class": "output"}): 285,
            owner(OPENAI, **{"otel_cost.token.class": "reasoning"}): 55,
            owner(ANTHROPIC, **{"otel_cost.token.class": "input"}): 40,
            owner(ANTHROPIC, **{"otel_cost.token.class": "cache_write"}): 10,
            owner(ANTHROPIC, **{"otel_cost.token.class": "output"}): 7,
        },
    )
    eventually(
        grpc_sink,
        "otel_cost.calls",
        {
            owner(OPENAI, **{"otel_cost.priced": True}): 5,
            owner(OPENAI, **{"otel_cost.priced": False}): 1,
            owner(ANTHROPIC, **{"otel_cost.priced": False}): 2,
        },
    )
    units = {
        name: grpc_sink.metrics(name)[-1].unit for name in ("otel_cost.spend", "otel_cost.tokens", "otel_cost.calls")
    }
    assert units == {"otel_cost.spend": "USD", "otel_cost.tokens": "{token}", "otel_cost.calls": "{call}"}
    spend = grpc_sink.metrics("otel_cost.spend")[-1]
    assert spend.sum.is_monotonic and spend.sum.aggregation_temporality == 2  # CUMULATIVE
    assert spend.sum.data_points[0].WhichOneof("value") == "as_double"
    assert grpc_sink.metrics("otel_cost.tokens")[-1].sum.data_points[0].WhichOneof("value") == "as_int"
    resource = grpc_sink.resource()
    assert resource["service.name"] == "otel-cost"
    assert resource["service.version"]


def test_combinations_past_max_series_are_other(grpc_sink: GrpcSink, make_metrics: Callable[..., CostMetrics]) -> None:
    metrics = make_metrics(f"http://127.0.0.1:{grpc_sink.port}", max_series=2)
    third: UsageKey = ("openai", "gpt-4o-mini", "payments", "checkout", "refund-bot")
    fourth: UsageKey = ("google", "gemini-2.5-pro", "legal", "review", "contracts")
    metrics.record(
        {
            OPENAI: usage(USD, 1, 0, 10, 0, 0, 1, 0),
            ANTHROPIC: usage(2 * USD, 1, 0, 20, 0, 0, 2, 0),
            third: usage(4 * USD + 7, 1, 0, 40, 0, 0, 4, 0),
            fourth: usage(8 * USD + 9, 2, 1, 80, 0, 0, 8, 0),
        }
    )
    # A known combination keeps its series after the cap is reached; new ones keep going to "other".
    fifth: UsageKey = ("mistral", "mistral-large", "ops", "triage", "pager")
    metrics.record({OPENAI: usage(USD, 1, 0, 1, 0, 0, 0, 0), fifth: usage(16 * USD, 1, 0, 160, 0, 0, 0, 0)})

    expected = {
        owner(OPENAI): Decimal(2),
        owner(ANTHROPIC): Decimal(2),
        owner(OTHER): units_to_decimal(4 * USD + 7) + units_to_decimal(8 * USD + 9) + Decimal(16),
    }
    wait_for(lambda: spend_close(grpc_sink.points("otel_cost.spend"), expected), what="spend with other")
    eventually(
        grpc_sink,
        "otel_cost.calls",
        {
            owner(OPENAI, **{"otel_cost.priced": True}): 2,
            owner(ANTHROPIC, **{"otel_cost.priced": True}): 1,
            owner(OTHER, **{"otel_cost.priced": True}): 3,
            owner(OTHER, **{"otel_cost.priced": False}): 1,
        },
    )
    assert grpc_sink.points("otel_cost.tokens")[owner(OTHER, **{"otel_cost.token.class": "input"})] == 280


def test_budget_gauges_follow_the_cap_state(grpc_sink: GrpcSink, make_metrics: Callable[..., CostMetrics]) -> None:
    metrics = make_metrics(f"http://127.0.0.1:{grpc_sink.port}")
    caps = [
        cap("payments-monthly", {"team": "payments"}, "downgrade", "4512.10", "5000.00", "6210.55"),
        cap("agent-hourly", {"environment": "prod", "agent": "doc-triage"}, "block", "51.25", "50", "80.00"),
        cap("agent-hourly", {"environment": "prod", "agent": "summarizer"}, "allow", "0.50", "50", "1.00"),
        # An automatic containment cap is counted by action but has no budget gauges.
        cap("auto:runaway", {"agent": "loop-bot"}, "block", "12", "10", "12", automatic=True),
    ]
    state = {"caps": caps}
    metrics.track_caps(lambda: (7, list(state["caps"])))

    payments = attrs(
        otel_cost__budget="payments-monthly",
        otel_cost__budget__group="team=payments",
        otel_cost__cap__action="downgrade",
    )
    triage = attrs(
        otel_cost__budget="agent-hourly",
        otel_cost__budget__group="agent=doc-triage,environment=prod",
        otel_cost__cap__action="block",
    )
    summarizer = attrs(
        otel_cost__budget="agent-hourly",
        otel_cost__budget__group="agent=summarizer,environment=prod",
        otel_cost__cap__action="allow",
    )
    eventually(grpc_sink, "otel_cost.budget.spent", {payments: 4512.10, triage: 51.25, summarizer: 0.5})
    eventually(grpc_sink, "otel_cost.budget.limit", {payments: 5000.0, triage: 50.0, summarizer: 50.0})
    eventually(grpc_sink, "otel_cost.budget.forecast", {payments: 6210.55, triage: 80.0, summarizer: 1.0})
    eventually(grpc_sink, "otel_cost.budget.utilization", {payments: 0.9024, triage: 1.025, summarizer: 0.01})
    eventually(
        grpc_sink,
        "otel_cost.caps",
        {
            attrs(otel_cost__cap__action="allow"): 1,
            attrs(otel_cost__cap__action="alert"): 0,
            attrs(otel_cost__cap__action="downgrade"): 1,
            attrs(otel_cost__cap__action="block"): 2,
        },
    )
    units = {name: grpc_sink.metrics(f"otel_cost.{name}")[-1].unit for name in ("budget.utilization", "budget.spent")}
    assert units == {"budget.utilization": "1", "budget.spent": "USD"}
    assert grpc_sink.metrics("otel_cost.caps")[-1].unit == "{cap}"

    # A gauge shows the latest state only: the cap that moved to block is no longer exported as downgrade.
    state["caps"] = [cap("payments-monthly", {"team": "payments"}, "block", "5000.01", "5000.00", "6300")]
    blocked = attrs(
        otel_cost__budget="payments-monthly", otel_cost__budget__group="team=payments", otel_cost__cap__action="block"
    )
    eventually(grpc_sink, "otel_cost.budget.spent", {blocked: 5000.01})


def test_budget_gauges_are_capped_like_prometheus(
    grpc_sink: GrpcSink, make_metrics: Callable[..., CostMetrics]
) -> None:
    from otel_cost.metrics import MAX_BUDGET_SERIES

    metrics = make_metrics(f"http://127.0.0.1:{grpc_sink.port}")
    caps = [
        cap("per-agent", {"agent": f"a{index:04d}"}, "alert", "1", "2", "3") for index in range(MAX_BUDGET_SERIES + 7)
    ]
    metrics.track_caps(lambda: (1, caps))
    wait_for(lambda: grpc_sink.points("otel_cost.caps"), what="caps")
    assert len(grpc_sink.points("otel_cost.budget.spent")) == MAX_BUDGET_SERIES
    assert grpc_sink.points("otel_cost.caps")[attrs(otel_cost__cap__action="alert")] == MAX_BUDGET_SERIES + 7


def test_cap_changes_count_transitions(grpc_sink: GrpcSink, make_metrics: Callable[..., CostMetrics]) -> None:
    metrics = make_metrics(f"http://127.0.0.1:{grpc_sink.port}")

    def publish(version: int, *caps: tuple[str, dict[str, str], str]) -> None:
        document = {
            "version": version,
            "caps": [{"budget": budget, "scope": scope, "action": action} for budget, scope, action in caps],
        }
        metrics.on_cap_change(version, json.dumps(document).encode())

    payments, triage, summarizer = {"team": "payments"}, {"agent": "doc-triage"}, {"agent": "summarizer"}
    publish(1, ("monthly", payments, "allow"), ("hourly", triage, "alert"))  # first seen: alert counts
    publish(2, ("monthly", payments, "alert"), ("hourly", triage, "alert"))  # monthly -> alert
    publish(3, ("monthly", payments, "downgrade"), ("hourly", triage, "block"), ("hourly", summarizer, "block"))
    publish(4, ("monthly", payments, "downgrade"), ("hourly", summarizer, "block"))  # triage gone: -> allow
    publish(5, ("monthly", payments, "allow"), ("hourly", summarizer, "block"))
    metrics.on_cap_change(6, b"not json")  # logged, not counted, and the previous document is kept
    publish(7, ("monthly", payments, "allow"), ("hourly", summarizer, "block"))

    eventually(
        grpc_sink,
        "otel_cost.cap.changes",
        {
            attrs(otel_cost__budget="hourly", otel_cost__cap__action="alert"): 1,
            attrs(otel_cost__budget="monthly", otel_cost__cap__action="alert"): 1,
            attrs(otel_cost__budget="monthly", otel_cost__cap__action="downgrade"): 1,
            attrs(otel_cost__budget="hourly", otel_cost__cap__action="block"): 2,
            attrs(otel_cost__budget="hourly", otel_cost__cap__action="allow"): 1,
            attrs(otel_cost__budget="monthly", otel_cost__cap__action="allow"): 1,
        },
    )
    assert grpc_sink.metrics("otel_cost.cap.changes")[-1].unit == "{change}"


def test_the_state_at_track_caps_is_the_first_document(
    grpc_sink: GrpcSink, make_metrics: Callable[..., CostMetrics]
) -> None:
    metrics = make_metrics(f"http://127.0.0.1:{grpc_sink.port}")
    blocked = cap("monthly", {"team": "payments"}, "block", "6", "5", "7")
    metrics.track_caps(lambda: (3, [blocked, cap("daily", {}, "allow", "0", "1", "0")]))
    # The same caps again: nothing moved since the state track_caps started from.
    document = {"version": 3, "caps": [blocked, cap("daily", {}, "allow", "0", "1", "0")]}
    metrics.on_cap_change(3, json.dumps(document).encode())
    eventually(
        grpc_sink, "otel_cost.cap.changes", {attrs(otel_cost__budget="monthly", otel_cost__cap__action="block"): 1}
    )

    # A listener that already heard a document keeps it: a later track_caps does not start over.
    other_sink = GrpcSink()
    try:
        later = CostMetrics(MetricsExportConfig(endpoint=f"http://127.0.0.1:{other_sink.port}", interval_seconds=60))
        later.on_cap_change(4, json.dumps({"version": 4, "caps": []}).encode())
        later.track_caps(lambda: (3, [blocked]))
        later.shutdown()
        assert other_sink.points("otel_cost.caps")  # the final export happened, without cap.changes
        assert other_sink.metrics("otel_cost.cap.changes") == []
    finally:
        other_sink.close()


@pytest.mark.parametrize(("compression", "flag"), [("gzip", 1), ("none", 0)])
def test_grpc_headers_and_compression_on_the_wire(
    grpc_sink: GrpcSink, make_metrics: Callable[..., CostMetrics], compression: str, flag: int
) -> None:
    tap = GrpcTap(grpc_sink.port)
    try:
        metrics = make_metrics(
            f"http://127.0.0.1:{tap.port}", headers={"X-Api-Key": "k-123", "tenant": "acme"}, compression=compression
        )
        metrics.record({OPENAI: usage(USD, 1, 0, 1, 0, 0, 1, 0)})
        wait_for(lambda: grpc_sink.points("otel_cost.spend"), what="an export through the tap")
        wait_for(lambda: tap.flags, what="a gRPC message seen by the tap")
        assert set(tap.flags) == {flag}
        assert {key: grpc_sink.metadata[-1][key] for key in ("x-api-key", "tenant")} == {
            "x-api-key": "k-123",
            "tenant": "acme",
        }
    finally:
        tap.close()


def test_grpc_over_mutual_tls(tmp_path: Path, make_metrics: Callable[..., CostMetrics]) -> None:
    (tmp_path / "server").mkdir()
    (tmp_path / "client").mkdir()
    server_cert, server_key = make_certificate(tmp_path / "server")
    client_cert, client_key = make_certificate(tmp_path / "client")
    credentials = grpc.ssl_server_credentials(
        [(server_key.read_bytes(), server_cert.read_bytes())],
        root_certificates=client_cert.read_bytes(),
        require_client_auth=True,
    )
    sink = GrpcSink(credentials)
    try:
        tls = {"ca_file": server_cert, "cert_file": client_cert, "key_file": client_key}
        metrics = make_metrics(f"https://127.0.0.1:{sink.port}", tls=tls)
        metrics.record({OPENAI: usage(5 * USD, 1, 0, 1, 0, 0, 1, 0)})
        eventually(sink, "otel_cost.spend", {owner(OPENAI): 5.0})
        metrics.shutdown()  # while the endpoint is up: no failing final export
    finally:
        sink.close()


def test_http_protobuf_with_gzip_and_headers(http_sink: HttpSink, make_metrics: Callable[..., CostMetrics]) -> None:
    metrics = make_metrics(http_sink.url, protocol="http/protobuf", headers={"Authorization": "Bearer m-1"})
    metrics.record({OPENAI: usage(USD // 4, 2, 0, 10, 0, 0, 5, 0)})
    eventually(http_sink, "otel_cost.spend", {owner(OPENAI): 0.25})
    eventually(
        http_sink,
        "otel_cost.calls",
        {owner(OPENAI, **{"otel_cost.priced": True}): 2},
    )
    path, headers = http_sink.seen[-1]
    assert path == "/v1/metrics"
    assert (headers["content-type"], headers["content-encoding"], headers["authorization"]) == (
        "application/x-protobuf",
        "gzip",
        "Bearer m-1",
    )


def test_http_url_with_a_path_is_used_as_given(http_sink: HttpSink, make_metrics: Callable[..., CostMetrics]) -> None:
    metrics = make_metrics(f"{http_sink.url}/otlp/v1/metrics", protocol="http/protobuf", compression="none")
    metrics.record({OPENAI: usage(USD, 1, 0, 1, 0, 0, 1, 0)})
    eventually(http_sink, "otel_cost.spend", {owner(OPENAI): 1.0})
    path, headers = http_sink.seen[-1]
    assert path == "/otlp/v1/metrics"
    assert "content-encoding" not in headers


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_shutdown_exports_the_last_records(grpc_sink: GrpcSink, http_sink: HttpSink, protocol: str) -> None:
    port = grpc_sink.port if protocol == "grpc" else http_sink.port
    sink: Sink = grpc_sink if protocol == "grpc" else http_sink
    # An hour between exports: only shutdown's own export can carry these.
    metrics = CostMetrics(
        MetricsExportConfig(endpoint=f"http://127.0.0.1:{port}", protocol=protocol, interval_seconds=3600)
    )
    metrics.record({OPENAI: usage(3 * USD, 2, 0, 100, 0, 0, 10, 0)})
    metrics.record({OPENAI: usage(USD, 1, 1, 1, 0, 0, 1, 0)})
    assert sink.requests == []
    metrics.shutdown(timeout_seconds=5)
    assert sink.points("otel_cost.spend") == {owner(OPENAI): 4.0}
    assert sink.points("otel_cost.calls") == {
        owner(OPENAI, **{"otel_cost.priced": True}): 2,
        owner(OPENAI, **{"otel_cost.priced": False}): 1,
    }
    metrics.shutdown(timeout_seconds=5)  # idempotent
    metrics.record({OPENAI: usage(USD, 1, 0, 1, 0, 0, 1, 0)})  # after shutdown: ignored, no error
    assert len(sink.requests) == 1


def test_shutdown_returns_within_its_timeout_when_the_endpoint_is_down(caplog: pytest.LogCaptureFixture) -> None:
    # Connections refused: the gRPC exporter retries with backoff for up to timeout_seconds.
    metrics = CostMetrics(
        MetricsExportConfig(endpoint=f"http://127.0.0.1:{free_port()}", interval_seconds=0.1, timeout_seconds=30)
    )
    metrics.record({OPENAI: usage(USD, 1, 0, 1, 0, 0, 1, 0)})  # exports fail in the SDK's thread, not here
    wait_for(lambda: "Transient error StatusCode.UNAVAILABLE" in caplog.text, what="a failing export backing off")
    started = time.monotonic()
    metrics.shutdown(timeout_seconds=1)
    assert time.monotonic() - started < 1.5


def test_shutdown_returns_within_its_timeout_when_the_endpoint_hangs(hooks: Callable[..., HookServer]) -> None:
    hook = hooks(hang=True)  # accepts the request and never answers
    metrics = CostMetrics(
        MetricsExportConfig(
            endpoint=hook.url.removesuffix("/hook"), protocol="http/protobuf", interval_seconds=60, timeout_seconds=30
        )
    )
    metrics.record({OPENAI: usage(USD, 1, 0, 1, 0, 0, 1, 0)})
    started = time.monotonic()
    metrics.shutdown(timeout_seconds=1)
    assert time.monotonic() - started < 1.5


def test_a_server_exports_what_it_stored(grpc_sink: GrpcSink, make_server: Callable[..., RunningServer]) -> None:
    budget = {
        "name": "payments-hourly",
        "scope": {"team": "payments"},
        "window": "60m",
        "limit": "1",
        "alert_at": [0.4],
    }
    server = make_server(
        {
            "metrics_export": {"endpoint": f"http://127.0.0.1:{grpc_sink.port}", "interval_seconds": 0.2},
            "budgets": [budget],
            "enforcer": {"interval_seconds": 0.05},
        }
    )

    def span(**extra: Any) -> Any:
        return make_span(chat_attributes(**extra), start_ns=time.time_ns() - 2_000_000_000)

    mini = {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini"}
    spans = [
        span(**mini, **{"gen_ai.usage.input_tokens": 1_000_000, "gen_ai.usage.output_tokens": 0}) for _ in range(3)
    ]
    spans.append(span(**{"gen_ai.usage.cache_read_input_tokens": 700, "gen_ai.usage.input_tokens": 1000}))
    spans.append(span(**{"gen_ai.request.model": "acme-7b", "gen_ai.response.model": "acme-7b"}))  # unpriced
    request = make_request(spans)
    export(server, request)
    export(server, request)  # the client's retry of the same export: stored (and metered) once
    export(server, make_request([span()], resource={"service.name": "labs"}))  # unattributed

    stored = server.scalar("SELECT sum(cost) FROM requests WHERE billable")
    calls = server.scalar("SELECT count() FROM requests WHERE billable")
    unpriced = server.scalar("SELECT count() FROM requests WHERE billable AND NOT priced")
    input_tokens = server.scalar("SELECT sum(input_tokens) FROM requests WHERE billable")
    assert (calls, unpriced) == (6, 1)

    def exported() -> bool:
        spend = grpc_sink.points("otel_cost.spend")
        return bool(spend) and math.isclose(sum(spend.values()), float(stored), rel_tol=1e-12)

    wait_for(exported, what="the stored spend exported")
    by_priced: dict[bool, int] = {}
    for attributes, count in grpc_sink.points("otel_cost.calls").items():
        by_priced[dict(attributes)["otel_cost.priced"]] = by_priced.get(dict(attributes)["otel_cost.priced"], 0) + count
    assert by_priced == {True: calls - unpriced, False: unpriced}
    tokens = grpc_sink.points("otel_cost.tokens")
    assert sum(count for key, count in tokens.items() if ("otel_cost.token.class", "input") in key) == input_tokens
    teams = {dict(attributes)["otel_cost.team"] for attributes in grpc_sink.points("otel_cost.spend")}
    assert teams == {"payments", "unattributed"}

    # The budget passed 40%: its gauges show the enforcer's figures, and the move to alert was counted once.
    assert server.server.enforcer is not None
    document = server.server.enforcer.state.document
    wait_for(lambda: document()["caps"][0]["action"] == "alert", what="the budget at alert")
    group = attrs(
        otel_cost__budget="payments-hourly", otel_cost__budget__group="team=payments", otel_cost__cap__action="alert"
    )
    eventually(grpc_sink, "otel_cost.budget.spent", {group: float(Decimal(document()["caps"][0]["spent"]))})
    eventually(
        grpc_sink,
        "otel_cost.cap.changes",
        {attrs(otel_cost__budget="payments-hourly", otel_cost__cap__action="alert"): 1},
    )
