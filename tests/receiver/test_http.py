"""OTLP/HTTP receiver: the real OTLP/HTTP exporter, protobuf and JSON bodies, gzip, every refusal."""

from __future__ import annotations

import gzip
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from ..helpers import RunningServer, chat_attributes, make_request, make_span, wait_for
from ..tls import make_certificate

PROTOBUF = "application/x-protobuf"


def post(
    url: str, body: bytes, content_type: str, headers: dict[str, str] | None = None, context: object = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"{url}/v1/traces", data=body, headers={"Content-Type": content_type, **(headers or {})}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:  # type: ignore[arg-type]
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def otlp_json(spans: list[dict]) -> bytes:
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "labs-prototype"}}]},
                    "scopeSpans": [{"scope": {"name": "ai", "version": "6.0.3"}, "spans": spans}],
                }
            ]
        }
    ).encode()


def json_span(span_id: str, attributes: list[dict], **extra: object) -> dict:
    return {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": span_id,
        "name": "ai.generateText.doGenerate",
        "kind": 3,  # enums are integers in OTLP/JSON
        "startTimeUnixNano": "1795991404000000000",  # int64 as a string
        "endTimeUnixNano": "1795991405000000000",
        "attributes": attributes,
        "unknownFutureField": {"ignored": True},
        **extra,
    }


USAGE = [
    {"key": "ai.operationId", "value": {"stringValue": "ai.generateText.doGenerate"}},
    {"key": "ai.model.provider", "value": {"stringValue": "openai.chat"}},
    {"key": "ai.model.id", "value": {"stringValue": "gpt-4o"}},
    {"key": "ai.usage.inputTokens", "value": {"intValue": "1200"}},
    {"key": "ai.usage.outputTokens", "value": {"intValue": 300}},
]


def test_real_http_exporter_with_gzip_protobuf(server: RunningServer) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{server.http_url}/v1/traces", compression=Compression.Gzip)
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout-assistant", "team": "payments"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai.v1", "0.62.4")
    with tracer.start_as_current_span("openai.chat") as span:
        span.set_attributes(chat_attributes(**{"gen_ai.usage.cache_read.input_tokens": 1000}))
    provider.shutdown()
    assert server.query("SELECT team, cost FROM requests").rows == [["payments", "0.00475"]]


def test_json_with_hex_ids_string_int64_and_unknown_fields(server: RunningServer) -> None:
    status, headers, body = post(server.http_url, otlp_json([json_span("eee19b7ec3c1b174", USAGE)]), "application/json")
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {}
    row = server.query("SELECT trace_id, span_id, input_tokens, output_tokens, cost, team FROM requests").rows
    assert row == [["5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", 1200, 300, "0.006", "unattributed"]]


def test_json_partial_success_names_the_rejected_span(server: RunningServer) -> None:
    bad = [*USAGE[:3], {"key": "ai.usage.inputTokens", "value": {"doubleValue": 12.5}}]
    body = otlp_json([json_span("eee19b7ec3c1b174", USAGE), json_span("aaa19b7ec3c1b174", bad)])
    status, _, payload = post(server.http_url, body, "application/json")
    assert status == 200
    assert json.loads(payload) == {
        "partialSuccess": {
            "rejectedSpans": "1",
            "errorMessage": "1 span(s) rejected: span aaa19b7ec3c1b174: ai.usage.inputTokens is not a whole number "
            "(12.5)",
        }
    }
    assert server.scalar("SELECT count() FROM requests") == 1


def test_gzip_json(server: RunningServer) -> None:
    body = gzip.compress(otlp_json([json_span("eee19b7ec3c1b174", USAGE)]))
    status, _, _ = post(server.http_url, body, "application/json", {"Content-Encoding": "gzip"})
    assert status == 200
    assert server.scalar("SELECT count() FROM requests") == 1


def status_body(payload: bytes, content_type: str) -> status_pb2.Status:
    if content_type == PROTOBUF:
        return status_pb2.Status.FromString(payload)
    from google.protobuf import json_format

    return json_format.Parse(payload, status_pb2.Status())


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "expected_status", "message"),
    [
        (b"\x0a\xff\xff\xff\xff\x0f", PROTOBUF, {}, 400, "not a valid ExportTraceServiceRequest protobuf"),
        (b"{not json", "application/json", {}, 400, "body is not valid JSON"),
        (b"[1, 2]", "application/json", {}, 400, "must be a JSON object"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            "application/json",
            {},
            400,
            "$.resourceSpans[0].scopeSpans[0].spans[0].traceId is not hex: 'zz'",
        ),
        (b"hello", "text/plain", {}, 415, "unsupported Content-Type 'text/plain'"),
        (b"abc", PROTOBUF, {"Content-Encoding": "br"}, 415, "unsupported Content-Encoding 'br'"),
        (b"not gzip at all", PROTOBUF, {"Content-Encoding": "gzip"}, 400, "body is not valid gzip"),
    ],
)
def test_undecodable_bodies_get_a_status_in_the_request_content_type(
    server: RunningServer, body: bytes, content_type: str, headers: dict, expected_status: int, message: str
) -> None:
    status, response_headers, payload = post(server.http_url, body, content_type, headers)
    assert status == expected_status
    kind = PROTOBUF if content_type == PROTOBUF else "application/json"
    assert response_headers["content-type"] == kind
    assert message in status_body(payload, kind).message
    assert "retry-after" not in {key.lower() for key in response_headers}
    # and the server keeps serving
    ok, _, _ = post(server.http_url, make_request([make_span(chat_attributes())]).SerializeToString(), PROTOBUF)
    assert ok == 200


def test_size_limit_applies_after_decompression(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"receiver": {"max_request_bytes": 64 * 1024}})
    bomb = gzip.compress(b"\x00" * (10 * 1024 * 1024))  # 10 MiB of zeros in ~10 KiB
    assert len(bomb) < 64 * 1024
    status, _, payload = post(server.http_url, bomb, PROTOBUF, {"Content-Encoding": "gzip"})
    assert status == 413
    assert status_body(payload, PROTOBUF).message == "request is larger than 65536 bytes once decompressed"
    big = make_request([make_span(chat_attributes(**{"note": "x" * 1000})) for _ in range(100)]).SerializeToString()
    status, _, payload = post(server.http_url, big, PROTOBUF)
    assert status == 413
    assert "the limit is 65536" in status_body(payload, PROTOBUF).message


def test_bearer_token(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"receiver": {"bearer_tokens": ["tok-1", "tok-2"]}})
    body = make_request([make_span(chat_attributes())]).SerializeToString()
    assert post(server.http_url, body, PROTOBUF)[0] == 401
    assert post(server.http_url, body, PROTOBUF, {"Authorization": "Bearer nope"})[0] == 401
    assert post(server.http_url, body, PROTOBUF, {"Authorization": "Basic dG9rLTE="})[0] == 401
    assert post(server.http_url, body, PROTOBUF, {"Authorization": "Bearer tok-2"})[0] == 200


def test_store_outage_with_a_full_spool_is_503_with_retry_after(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"store": {"spool_max_bytes": 0}})
    assert server.server.store is not None
    server.server.store.execute("RENAME TABLE requests TO requests_away")
    body = make_request([make_span(chat_attributes())]).SerializeToString()
    try:
        status, headers, payload = post(server.http_url, body, PROTOBUF)
    finally:
        server.server.store.execute("RENAME TABLE requests_away TO requests")
    assert status == 503
    assert headers["retry-after"] == "5"
    status_message = status_body(payload, PROTOBUF)
    assert "the spool is full" in status_message.message
    retry = error_details_pb2.RetryInfo()
    assert status_message.details[0].Unpack(retry)
    assert retry.retry_delay.seconds == 5
    assert post(server.http_url, body, PROTOBUF)[0] == 200
    assert server.scalar("SELECT count() FROM requests") == 1


def test_partial_success_response_is_protobuf_for_protobuf_requests(server: RunningServer) -> None:
    bad = make_span(chat_attributes(**{"gen_ai.usage.output_tokens": -1}))
    status, headers, payload = post(server.http_url, make_request([bad]).SerializeToString(), PROTOBUF)
    assert (status, headers["content-type"]) == (200, PROTOBUF)
    response = ExportTraceServiceResponse.FromString(payload)
    assert response.partial_success.rejected_spans == 1
    assert "gen_ai.usage.output_tokens is negative (-1)" in response.partial_success.error_message


def test_https_with_a_generated_certificate(make_server: Callable[..., RunningServer], tmp_path: Path) -> None:
    cert_file, key_file = make_certificate(tmp_path)
    server = make_server({"receiver": {"tls": {"cert_file": str(cert_file), "key_file": str(key_file)}}})
    context = ssl.create_default_context(cafile=str(cert_file))
    body = make_request([make_span(chat_attributes())]).SerializeToString()
    status, _, _ = post(f"https://localhost:{server.server.http_port}", body, PROTOBUF, context=context)
    assert status == 200
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        post(server.http_url, body, PROTOBUF)  # plain HTTP is refused


def test_bytes_in_flight_are_bounded_before_the_body_is_read(make_server: Callable[..., RunningServer]) -> None:
    """Overload: a request that would pass receiver.max_inflight_bytes is refused retryably at once,
    before its body is held in memory; the one in flight completes and the count returns to zero."""
    import socket

    server = make_server({"receiver": {"max_inflight_bytes": 4096}})
    registry = server.server.metrics.registry
    slow = make_request([make_span(chat_attributes(**{"app.note": "x" * 8000}))]).SerializeToString()
    sock = socket.create_connection(("127.0.0.1", server.server.http_port), timeout=30)
    try:
        head = (
            f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {PROTOBUF}\r\nContent-Length: {len(slow)}\r\n\r\n"
        ).encode()
        sock.sendall(head + slow[:-1])  # all but the last byte: the request is in flight
        wait_for(lambda: registry.get_sample_value("otel_cost_receiver_inflight_bytes") == len(slow))
        small = make_request([make_span(chat_attributes())]).SerializeToString()
        status, headers, payload = post(server.http_url, small, PROTOBUF)
        assert (status, headers["retry-after"]) == (503, "1")
        assert "receiver.max_inflight_bytes=4096" in status_body(payload, PROTOBUF).message
        sock.sendall(slow[-1:])
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        sock.close()
    wait_for(lambda: registry.get_sample_value("otel_cost_receiver_inflight_bytes") == 0)
    assert post(server.http_url, small, PROTOBUF)[0] == 200  # the client's retry
    assert server.scalar("SELECT count() FROM requests") == 2
