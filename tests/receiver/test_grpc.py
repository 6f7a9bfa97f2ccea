"""OTLP/gRPC receiver: real OTLP exporters and a real grpc client against a real server."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind

from ..helpers import RunningServer, chat_attributes, make_request, make_span, wait_for
from ..tls import make_certificate

SERVICE = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def export(server: RunningServer, request: object, metadata: tuple[tuple[str, str], ...] = ()) -> object:
    with grpc.insecure_channel(server.grpc_target) as channel:
        return trace_service_pb2_grpc.TraceServiceStub(channel).Export(request, timeout=30, metadata=metadata)


def send_with_sdk(exporter: OTLPSpanExporter, calls: int = 3) -> list[SpanExportResult]:
    """GenAI spans made by the real OTel SDK, exported one by one by the real OTLP exporter."""
    results: list[SpanExportResult] = []

    class Recording(SimpleSpanProcessor):
        def on_end(self, span: object) -> None:
            results.append(exporter.export([span]))  # type: ignore[list-item]

    provider = TracerProvider(resource=Resource.create({"service.name": "search-api", "team": "search"}))
    provider.add_span_processor(Recording(exporter))
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai_v2", "2.3b0")
    for _ in range(calls):
        with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.system": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.usage.input_tokens": 1000,
                    "gen_ai.usage.output_tokens": 100,
                }
            )
    provider.shutdown()
    return results


def test_real_exporter_spans_are_priced_and_stored(server: RunningServer) -> None:
    exporter = OTLPSpanExporter(endpoint=server.grpc_target, insecure=True)
    assert send_with_sdk(exporter) == [SpanExportResult.SUCCESS] * 3
    rows = server.query("SELECT team, service_name, priced_model, cost FROM requests").rows
    # gpt-4o-mini: $0.15 / MTok in, $0.60 / MTok out -> 1000 * 0.15e-6 + 100 * 0.6e-6
    assert rows == [["search", "search-api", "gpt-4o-mini", "0.00021"]] * 3


def test_a_lone_export_is_not_held_back_by_the_batching_delay(make_server: Callable[..., RunningServer]) -> None:
    # Nothing else is on its way to share the insert, so waiting for the 10 s timer would only delay the ack.
    server = make_server({"store": {"flush_interval_millis": 10_000}})
    exporter = OTLPSpanExporter(endpoint=server.grpc_target, insecure=True, timeout=30)
    started = time.monotonic()
    assert send_with_sdk(exporter, calls=2) == [SpanExportResult.SUCCESS] * 2
    assert time.monotonic() - started < 10  # two exports, each would have waited 10 s
    assert server.scalar("SELECT count() FROM requests") == 2


def test_invalid_spans_are_counted_in_partial_success_and_the_rest_stored(server: RunningServer) -> None:
    good = make_span(chat_attributes())
    negative = make_span(chat_attributes(**{"gen_ai.usage.input_tokens": -5}))
    garbage = make_span(chat_attributes(**{"gen_ai.usage.output_tokens": "lots"}))
    response = export(server, make_request([good, negative, garbage]))
    assert response.partial_success.rejected_spans == 2  # type: ignore[attr-defined]
    message = response.partial_success.error_message  # type: ignore[attr-defined]
    assert message.startswith("2 span(s) rejected: ")
    assert f"span {negative.span_id.hex()}: gen_ai.usage.input_tokens is negative (-5)" in message
    assert f"span {garbage.span_id.hex()}: gen_ai.usage.output_tokens is not a whole number ('lots')" in message
    assert server.query("SELECT span_id FROM requests").rows == [[good.span_id.hex()]]


def test_full_success_leaves_partial_success_unset(server: RunningServer) -> None:
    response = export(server, make_request([make_span(chat_attributes())]))
    assert not response.HasField("partial_success")  # type: ignore[attr-defined]


def test_malformed_payload_is_invalid_argument_and_the_server_keeps_serving(server: RunningServer) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        raw = channel.unary_unary(SERVICE, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\x0a\xff\xff\xff\xff\x0f garbage", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ExportTraceServiceRequest" in caught.value.details()
    export(server, make_request([make_span(chat_attributes())]))
    assert server.scalar("SELECT count() FROM requests") == 1


def test_oversized_export_is_resource_exhausted(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"receiver": {"max_request_bytes": 4096}})
    spans = [make_span(chat_attributes(**{"app.note": "x" * 500})) for _ in range(20)]
    with pytest.raises(grpc.RpcError) as caught:
        export(server, make_request(spans))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.scalar("SELECT count() FROM requests") == 0


def test_bearer_token_is_required_when_configured(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"receiver": {"bearer_tokens": ["s3cret-ingest"]}})
    request = make_request([make_span(chat_attributes())])
    with pytest.raises(grpc.RpcError) as caught:
        export(server, request)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "missing bearer token" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        export(server, request, metadata=(("authorization", "Bearer wrong"),))
    assert caught.value.details() == "invalid bearer token"
    exporter = OTLPSpanExporter(
        endpoint=server.grpc_target, insecure=True, headers={"authorization": "Bearer s3cret-ingest"}
    )
    assert send_with_sdk(exporter, calls=1) == [SpanExportResult.SUCCESS]
    assert server.scalar("SELECT count() FROM requests") == 1


def retry_info(error: grpc.RpcError) -> tuple[float, float]:
    """(RetryInfo delay from google.rpc.retryinfo-bin, from grpc-status-details-bin) in seconds."""
    trailing = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    plain = error_details_pb2.RetryInfo.FromString(trailing["google.rpc.retryinfo-bin"])
    status = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
    detail = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(detail)
    return plain.retry_delay.ToTimedelta().total_seconds(), detail.retry_delay.ToTimedelta().total_seconds()


def test_a_store_outage_is_acknowledged_from_the_spool_and_drained_once(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server({"store": {"spool_retry_max_seconds": 0.5}})
    assert server.server.store is not None
    store = server.server.store
    registry = server.server.metrics.registry
    request = make_request([make_span(chat_attributes())])
    store.execute("RENAME TABLE requests TO requests_away")
    try:
        export(server, request)  # acknowledged: the batch is on disk
        assert registry.get_sample_value("otel_cost_spool_batches") == 1
        assert registry.get_sample_value("otel_cost_spool_events_total", {"event": "spooled"}) == 1
        export(server, request)  # the client's retry: a duplicate, not a second row
    finally:
        store.execute("RENAME TABLE requests_away TO requests")
    wait_for(lambda: registry.get_sample_value("otel_cost_spool_batches") == 0, timeout=15)
    assert registry.get_sample_value("otel_cost_spool_events_total", {"event": "drained"}) == 1
    assert server.scalar("SELECT count() FROM requests") == 1
    assert Decimal(server.scalar("SELECT sum(cost) FROM spend_hour")) == Decimal("0.006")
    assert Decimal(server.scalar("SELECT sum(cost) FROM spend_minute")) == Decimal("0.006")


def test_store_outage_with_a_full_spool_is_unavailable_with_retry_info_and_the_retry_is_stored_once(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server({"store": {"spool_max_bytes": 0}})
    assert server.server.store is not None
    store = server.server.store
    store.execute("RENAME TABLE requests TO requests_away")
    request = make_request([make_span(chat_attributes())])
    try:
        with pytest.raises(grpc.RpcError) as caught:
            export(server, request)
    finally:
        store.execute("RENAME TABLE requests_away TO requests")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "the spool is full" in caught.value.details()
    assert retry_info(caught.value) == (5.0, 5.0)
    assert server.server.metrics.registry.get_sample_value("otel_cost_spool_events_total", {"event": "refused"}) == 1
    export(server, request)  # the client's retry once the store is back
    export(server, request)
    assert server.scalar("SELECT count() FROM requests") == 1
    assert Decimal(server.scalar("SELECT sum(cost) FROM spend_hour")) == Decimal("0.006")


def test_full_queue_pushes_back_with_unavailable_and_retry_info(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"store": {"queue_size": 1, "batch_size": 1, "spool_retry_max_seconds": 0.5}})
    assert server.server.store is not None
    store = server.server.store
    store.execute("RENAME TABLE requests TO requests_away")  # the first export waits in retries
    channel = grpc.insecure_channel(server.grpc_target)
    stub = trace_service_pb2_grpc.TraceServiceStub(channel)
    try:
        first = stub.Export.future(make_request([make_span(chat_attributes())]), timeout=30)
        registry = server.server.metrics.registry
        deadline = time.monotonic() + 10
        while not registry.get_sample_value("otel_cost_store_pending_rows") and time.monotonic() < deadline:
            time.sleep(0.01)  # until the first export is queued
        with pytest.raises(grpc.RpcError) as caught:
            stub.Export(make_request([make_span(chat_attributes())]), timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "rows are waiting for the store (limit 1)" in caught.value.details()
        assert retry_info(caught.value) == (1.0, 1.0)
        first.result()  # then spooled and acknowledged
    finally:
        store.execute("RENAME TABLE requests_away TO requests")
        channel.close()
    wait_for(lambda: server.scalar("SELECT count() FROM requests") == 1, timeout=15)


def test_tls_with_a_generated_certificate(make_server: Callable[..., RunningServer], tmp_path: Path) -> None:
    cert_file, key_file = make_certificate(tmp_path)
    server = make_server({"receiver": {"tls": {"cert_file": str(cert_file), "key_file": str(key_file)}}})
    credentials = grpc.ssl_channel_credentials(root_certificates=cert_file.read_bytes())
    exporter = OTLPSpanExporter(
        endpoint=f"localhost:{server.server.grpc_port}", credentials=credentials, insecure=False
    )
    assert send_with_sdk(exporter, calls=1) == [SpanExportResult.SUCCESS]
    with grpc.insecure_channel(server.grpc_target) as channel, pytest.raises(grpc.RpcError):
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(make_request([make_span(chat_attributes())]), timeout=5)
    assert server.scalar("SELECT count() FROM requests") == 1
