"""Processor mode: every acknowledged export goes on to a real OTLP receiver on loopback, enriched.

The downstreams are real gRPC (opentelemetry-proto's TraceService) and OTLP/HTTP servers
(`downstream.py`); the exports come in over real gRPC channels and OTLP/HTTP, and the costs are
checked against the rows the same server stored.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_cost.forward.enrich import ATTRIBUTES, CLASS_ATTRIBUTES, exact_usd
from tests.forward.downstream import ByteCountingRelay, HttpDownstream, Refusal, TraceDownstream, attributes_of
from tests.helpers import (
    RunningServer,
    chat_attributes,
    export,
    make_request,
    make_span,
    send_with_sdk_span,
    wait_for,
)
from tests.tls import make_certificate


@pytest.fixture
def downstream() -> Iterator[TraceDownstream]:
    running = TraceDownstream()
    yield running
    running.stop()


@pytest.fixture
def http_downstream() -> Iterator[HttpDownstream]:
    running = HttpDownstream()
    yield running
    running.stop()


def _forwarding(endpoint: str, **options: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"endpoint": endpoint, "retry_initial_seconds": 0.05, "retry_max_seconds": 0.5}
    top = {key: options.pop(key) for key in ("drop_content", "gen_ai_usage_cost") if key in options}
    section.update(options)
    return {"forward": {"endpoints": [section], **top}}


def _sample(server: RunningServer, name: str, labels: dict[str, str] | None = None) -> float:
    return server.server.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def _http_span(**attributes: Any) -> Span:
    span = make_span({"http.request.method": "GET", "url.path": "/orders/42", **attributes}, name="GET /orders/{id}")
    span.kind = Span.SPAN_KIND_SERVER
    event = span.events.add()
    event.name = "cache.miss"
    event.time_unix_nano = span.start_time_unix_nano + 5
    link = span.links.add()
    link.trace_id = os.urandom(16)
    link.span_id = os.urandom(8)
    return span


def _stored_costs(server: RunningServer) -> dict[str, str]:
    rows = server.query("SELECT span_id, toString(cost) FROM requests").rows
    return {span_id: cost for span_id, cost in rows}


def test_priced_calls_arrive_with_cost_attributes_equal_to_the_stored_cost(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream
) -> None:
    server = make_server(_forwarding(downstream.endpoint))
    cached = make_span(chat_attributes(**{"gen_ai.usage.cache_read.input_tokens": 200}))
    reasoning = make_span(
        chat_attributes(
            **{
                "gen_ai.request.model": "o3",
                "gen_ai.response.model": "o3-2025-04-16",
                "gen_ai.usage.reasoning.output_tokens": 120,
            }
        )
    )
    unpriced = make_span(chat_attributes(**{"gen_ai.request.model": "house-model-7", "gen_ai.response.model": ""}))
    export(server, make_request([cached, reasoning, unpriced]))
    wait_for(lambda: len(downstream.spans()) == 3, what="three forwarded spans")
    forwarded = downstream.spans_by_id()
    stored = _stored_costs(server)

    attributes = attributes_of(forwarded[cached.span_id])
    # gpt-4o at genai-prices 0.2.3: 1000 uncached input at $2.50/M, 200 cached at $1.25/M, 300 output at $10/M
    assert attributes["otel_cost.cost.exact"] == "0.00575" == exact_usd(5_750_000_000_000_000_000_000)
    assert Decimal(attributes["otel_cost.cost.exact"]) == Decimal(stored[cached.span_id.hex()])
    assert attributes["otel_cost.cost.amount"] == 0.00575
    assert attributes["otel_cost.cost.currency"] == "USD"
    assert attributes["otel_cost.cost.input"] == 0.0025
    assert attributes["otel_cost.cost.cache_read"] == 0.00025
    assert attributes["otel_cost.cost.output"] == 0.003
    assert {"otel_cost.cost.reasoning", "otel_cost.cost.cache_write"}.isdisjoint(attributes)  # cost nothing
    assert attributes["otel_cost.billable"] is True
    assert attributes["otel_cost.unpriced"] is False
    assert attributes["otel_cost.priced_model"] == "gpt-4o"
    assert attributes["otel_cost.price_version"] == server.scalar(
        f"SELECT price_version FROM requests WHERE span_id = '{cached.span_id.hex()}'"
    )
    assert attributes["otel_cost.team"] == attributes["otel_cost.cost_center"] == "payments"
    assert attributes["otel_cost.feature"] == "checkout-assistant"
    # everything the span carried is still there, in its order, before ours
    original = [kv.key for kv in cached.attributes]
    assert [kv.key for kv in forwarded[cached.span_id].attributes][: len(original)] == original

    attributes = attributes_of(forwarded[reasoning.span_id])
    assert Decimal(attributes["otel_cost.cost.exact"]) == Decimal(stored[reasoning.span_id.hex()]) > 0
    assert attributes["otel_cost.cost.reasoning"] > 0
    parts = sum(attributes.get(name, 0.0) for name in CLASS_ATTRIBUTES)
    assert math.isclose(parts, attributes["otel_cost.cost.amount"], rel_tol=1e-12)

    attributes = attributes_of(forwarded[unpriced.span_id])
    assert attributes["otel_cost.unpriced"] is True and attributes["otel_cost.billable"] is True
    assert "otel_cost.cost.amount" not in attributes and "otel_cost.cost.exact" not in attributes
    assert attributes["otel_cost.unpriced_reason"]


def test_spans_that_are_no_model_call_pass_through_unchanged(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream
) -> None:
    server = make_server(_forwarding(downstream.endpoint))
    plain = _http_span()
    database = make_span({"db.system.name": "postgresql", "db.query.text": "SELECT 1"}, name="SELECT orders")
    request = make_request([plain, make_span(chat_attributes()), database])
    original = ExportTraceServiceRequest()
    original.CopyFrom(request)
    export(server, request)
    wait_for(lambda: len(downstream.spans()) == 3, what="three forwarded spans")
    forwarded = downstream.spans_by_id()
    assert forwarded[plain.span_id] == plain  # the protobuf message, field for field: events, links, kind
    assert forwarded[database.span_id] == database
    received = downstream.received[0].request.resource_spans[0]
    assert received.resource == original.resource_spans[0].resource
    assert received.scope_spans[0].scope == original.resource_spans[0].scope_spans[0].scope


def test_agent_aggregates_carry_no_amount_so_a_trace_sums_each_call_once(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream
) -> None:
    server = make_server(_forwarding(downstream.endpoint))
    trace_id = os.urandom(16)
    agent = make_span(
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "refunds",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 2400,
            "gen_ai.usage.output_tokens": 600,
        },
        trace_id=trace_id,
        name="invoke_agent refunds",
    )
    calls = [make_span(chat_attributes(), trace_id=trace_id, parent_span_id=agent.span_id) for _ in range(2)]
    export(server, make_request([agent, *calls]))
    wait_for(lambda: len(downstream.spans()) == 3, what="three forwarded spans")
    forwarded = downstream.spans_by_id()
    aggregate = attributes_of(forwarded[agent.span_id])
    assert aggregate["otel_cost.billable"] is False
    assert not {"otel_cost.cost.amount", "otel_cost.cost.exact", "otel_cost.unpriced"} & aggregate.keys()
    total = sum(Decimal(attributes_of(forwarded[call.span_id])["otel_cost.cost.exact"]) for call in calls)
    assert total == Decimal(server.scalar("SELECT toString(sum(cost)) FROM requests WHERE billable"))


def test_secrets_are_redacted_on_every_span_and_content_goes_on_as_received(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream
) -> None:
    server = make_server(_forwarding(downstream.endpoint))
    key = "sk-proj-" + "a1B2c3D4e5F6g7H8i9J0k1L2"
    plain = _http_span(
        **{"http.request.header.authorization": "Bearer abc.def.ghi", "url.full": f"https://api.example/?key={key}"}
    )
    plain.events[0].attributes.add(key="exception.message", value={"string_value": f"invalid key {key}"})
    plain.status.message = f"upstream said: Incorrect API key provided: {key}"
    chat = make_span(chat_attributes(**{"gen_ai.input.messages": '[{"role":"user","content":"refund order 42"}]'}))
    export(server, make_request([plain, chat], resource={"service.name": "shop", "team": "payments", "k": key}))
    wait_for(lambda: len(downstream.spans()) == 2, what="two forwarded spans")
    forwarded = downstream.spans_by_id()
    text = str(downstream.received[0].request)
    assert key not in text and "abc.def.ghi" not in text
    attributes = attributes_of(forwarded[plain.span_id])
    assert attributes["http.request.header.authorization"] == "[REDACTED]"
    assert attributes["url.full"] == "https://api.example/?key=[REDACTED]"
    assert forwarded[plain.span_id].status.message == "upstream said: Incorrect API key provided: [REDACTED]"
    # content is not stored, but forwarded as received unless forward.drop_content says otherwise
    assert attributes_of(forwarded[chat.span_id])["gen_ai.input.messages"].startswith('[{"role":"user"')
    assert server.scalar("SELECT countIf(has(mapKeys(attributes), 'gen_ai.input.messages')) FROM requests") == 0
    assert (
        _sample(server, "otel_cost_forward_redactions_total", {"kind": "openai"}) == 4
    )  # url, event, status, resource
    assert _sample(server, "otel_cost_forward_redactions_total", {"kind": "secret_attribute"}) == 1


def test_drop_content_removes_content_from_forwarded_spans_and_their_events(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream
) -> None:
    server = make_server(_forwarding(downstream.endpoint, drop_content=True))
    chat = make_span(
        chat_attributes(
            **{
                "gen_ai.input.messages": '[{"role":"user","content":"secret plans"}]',
                "gen_ai.output.messages": '[{"role":"assistant","content":"ok"}]',
            }
        )
    )
    event = chat.events.add()
    event.name = "gen_ai.content.prompt"
    event.attributes.add(key="gen_ai.prompt", value={"string_value": "secret plans"})
    export(server, make_request([chat]))
    wait_for(lambda: len(downstream.spans()) == 1, what="the forwarded span")
    forwarded = downstream.spans()[0]
    assert "secret plans" not in str(forwarded)
    assert {"gen_ai.input.messages", "gen_ai.output.messages"}.isdisjoint(attributes_of(forwarded))
    assert forwarded.events[0].name == "gen_ai.content.prompt" and not forwarded.events[0].attributes
    assert attributes_of(forwarded)["otel_cost.cost.amount"] > 0


def test_our_attribute_a_client_already_set_is_replaced_not_repeated(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream
) -> None:
    server = make_server(_forwarding(downstream.endpoint, gen_ai_usage_cost=True))
    hinted = make_span(chat_attributes(**{"otel_cost.team": "search", "otel_cost.cost.amount": 99.0}))
    own_cost = make_span(chat_attributes(**{"gen_ai.usage.cost.amount": 0.5, "gen_ai.usage.cost.currency": "USD"}))
    export(server, make_request([hinted, own_cost]))
    wait_for(lambda: len(downstream.spans()) == 2, what="two forwarded spans")
    forwarded = downstream.spans_by_id()
    keys = [kv.key for kv in forwarded[hinted.span_id].attributes]
    assert len(keys) == len(set(keys))
    attributes = attributes_of(forwarded[hinted.span_id])
    assert attributes["otel_cost.cost.amount"] != 99.0
    assert attributes["gen_ai.usage.cost.amount"] == attributes["otel_cost.cost.amount"]
    assert attributes["gen_ai.usage.cost.currency"] == "USD"
    assert attributes["gen_ai.usage.cost.source"] == "local"
    # an emitter's own figure is never overwritten
    assert attributes_of(forwarded[own_cost.span_id])["gen_ai.usage.cost.amount"] == 0.5
    assert "gen_ai.usage.cost.source" not in attributes_of(forwarded[own_cost.span_id])
    assert {key for key in keys if key.startswith("otel_cost.")} <= ATTRIBUTES


def test_exports_over_otlp_http_json_are_forwarded_as_protobuf_with_headers_and_gzip(
    make_server: Callable[..., RunningServer], http_downstream: HttpDownstream
) -> None:
    server = make_server(_forwarding(http_downstream.endpoint, protocol="http/protobuf", headers={"X-Api-Key": "k1"}))
    request = make_request([make_span(chat_attributes()), _http_span()])
    body = json_format.MessageToJson(request)
    body = json.dumps(_hex_ids(json.loads(body)))
    response = httpx.post(f"{server.http_url}/v1/traces", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    wait_for(lambda: len(http_downstream.spans()) == 2, what="two forwarded spans")
    recorded = http_downstream.received[0]
    assert recorded.headers["path"] == "/v1/traces"
    assert recorded.headers["x-api-key"] == "k1"
    assert recorded.headers["content-type"] == "application/x-protobuf"
    assert recorded.compressed
    spans = [span for span in http_downstream.spans() if span.name == "chat"]
    assert attributes_of(spans[0])["otel_cost.cost.amount"] > 0


def _hex_ids(document: Any) -> Any:
    """OTLP/JSON carries trace and span ids as hex, where protobuf's JSON mapping writes base64."""
    import base64

    if isinstance(document, dict):
        return {
            key: base64.b64decode(value).hex() if key in ("traceId", "spanId", "parentSpanId") else _hex_ids(value)
            for key, value in document.items()
        }
    if isinstance(document, list):
        return [_hex_ids(item) for item in document]
    return document


def test_grpc_headers_compression_and_tls_reach_the_downstream(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path)
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    secure = TraceDownstream(credentials=credentials)
    try:
        server = make_server(
            _forwarding(
                secure.endpoint.replace("127.0.0.1", "localhost"),
                headers={"Authorization": "Bearer downstream-token"},
                tls={"ca_file": str(cert)},
            )
        )
        export(server, make_request([make_span(chat_attributes())]))
        wait_for(lambda: len(secure.spans()) == 1, what="the span, over TLS")
        assert secure.received[0].headers["authorization"] == "Bearer downstream-token"
    finally:
        secure.stop()


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_grpc_exports_are_compressed_on_the_wire_as_configured(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream, compression: str
) -> None:
    relay = ByteCountingRelay(downstream.port)
    try:
        server = make_server(_forwarding(f"http://127.0.0.1:{relay.port}", compression=compression))
        export(server, make_request([_http_span(**{"http.response.body.preview": "ok " * 100_000})]))
        wait_for(lambda: len(downstream.spans()) == 1, what="the forwarded span")
        if compression == "gzip":
            assert relay.sent < 30_000
        else:
            assert relay.sent > 300_000
    finally:
        relay.close()


def test_a_retry_info_pause_is_honoured_and_a_permanent_refusal_is_counted_not_retried(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream
) -> None:
    server = make_server(_forwarding(downstream.endpoint, name="backend"))
    downstream.refusals.append(Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after_seconds=0.6))
    started = time.monotonic()
    export(server, make_request([make_span(chat_attributes())]))
    acknowledged = time.monotonic() - started
    wait_for(lambda: len(downstream.spans()) == 1, what="the span, after the pause")
    assert time.monotonic() - started >= 0.6 > acknowledged  # waited as asked; the client never did
    assert downstream.attempts == 2
    assert _sample(server, "otel_cost_forward_retries_total", {"endpoint": "backend"}) == 1

    downstream.refusals.append(Refusal(grpc.StatusCode.INVALID_ARGUMENT))
    export(server, make_request([make_span(chat_attributes()), make_span(chat_attributes())]))
    labels = {"endpoint": "backend", "outcome": "rejected"}
    wait_for(lambda: _sample(server, "otel_cost_forward_spans_total", labels) == 2, what="the refusal counted")
    assert downstream.attempts == 3 and len(downstream.spans()) == 1
    assert _sample(server, "otel_cost_forward_dropped_exports_total", {"endpoint": "backend", "reason": "refused"}) == 1
    # RESOURCE_EXHAUSTED without RetryInfo is permanent too (OTLP: only with RetryInfo is it retryable)
    downstream.refusals.append(Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED))
    export(server, make_request([make_span(chat_attributes())]))
    wait_for(lambda: _sample(server, "otel_cost_forward_spans_total", labels) == 3, what="the second refusal")
    assert server.scalar("SELECT count() FROM requests") == 4  # storage never depended on the downstream


def test_http_429_with_retry_after_is_retried_after_the_pause(
    make_server: Callable[..., RunningServer], http_downstream: HttpDownstream
) -> None:
    server = make_server(_forwarding(http_downstream.endpoint, protocol="http/protobuf", name="http"))
    http_downstream.refusals.append(Refusal(grpc.StatusCode.UNAVAILABLE, http_status=429, retry_after_seconds=1))
    started = time.monotonic()
    export(server, make_request([make_span(chat_attributes())]))
    wait_for(lambda: len(http_downstream.spans()) == 1, what="the span, after Retry-After")
    assert time.monotonic() - started >= 1.0
    assert _sample(server, "otel_cost_forward_retries_total", {"endpoint": "http"}) == 1
    http_downstream.refusals.append(Refusal(grpc.StatusCode.INVALID_ARGUMENT, http_status=400))
    export(server, make_request([make_span(chat_attributes())]))
    labels = {"endpoint": "http", "outcome": "rejected"}
    wait_for(lambda: _sample(server, "otel_cost_forward_spans_total", labels) == 1, what="the 400 counted")
    assert http_downstream.attempts == 3


def test_a_client_retry_of_a_stored_export_is_not_forwarded_twice(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream
) -> None:
    server = make_server(_forwarding(downstream.endpoint, name="backend"))
    request = make_request([make_span(chat_attributes()), _http_span()])
    export(server, request)
    export(server, request)  # the exporter never saw the first answer, say
    wait_for(lambda: len(downstream.spans()) == 2, what="the first export")
    time.sleep(0.3)
    assert len(downstream.received) == 1
    assert _sample(server, "otel_cost_forward_spans_total", {"endpoint": "backend", "outcome": "skipped_retry"}) == 2


def test_a_full_queue_drops_its_oldest_exports_and_counts_them(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream
) -> None:
    downstream.stop()
    server = make_server(_forwarding(downstream.endpoint, name="backend", queue_max_bytes=4096))
    batches = [make_request([make_span(chat_attributes()) for _ in range(3)]) for _ in range(12)]
    size = len(batches[0].SerializeToString())
    for request in batches:
        export(server, request)
    dropped = _sample(
        server, "otel_cost_forward_dropped_exports_total", {"endpoint": "backend", "reason": "queue_full"}
    )
    assert dropped >= 12 - 4096 // size - 1  # what fits stays (one more may be in flight)
    assert _sample(server, "otel_cost_forward_queue_bytes", {"endpoint": "backend"}) <= 4096
    assert server.scalar("SELECT count() FROM requests") == 36
    downstream.start()
    newest = {span.span_id for span in batches[-1].resource_spans[0].scope_spans[0].spans}
    wait_for(lambda: newest <= downstream.spans_by_id().keys(), timeout=20, what="the newest export delivered")
    delivered = len(downstream.spans())
    assert _sample(server, "otel_cost_forward_spans_total", {"endpoint": "backend", "outcome": "dropped"}) == (
        36 - delivered
    )


def test_forwarding_from_pipeline_worker_processes(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream
) -> None:
    overrides = _forwarding(downstream.endpoint)
    overrides["receiver"] = {"workers": 1}
    server = make_server(overrides)
    export(server, make_request([make_span(chat_attributes()), _http_span()]))
    wait_for(lambda: len(downstream.spans()) == 2, what="two forwarded spans")
    chat = next(span for span in downstream.spans() if span.name == "chat")
    assert attributes_of(chat)["otel_cost.cost.exact"] == server.scalar("SELECT toString(cost) FROM requests")


def test_the_queue_is_delivered_on_a_graceful_stop(make_server: Callable[..., RunningServer]) -> None:
    slow = TraceDownstream()
    try:
        slow.refusals.extend(Refusal(grpc.StatusCode.UNAVAILABLE) for _ in range(3))
        server = make_server(_forwarding(slow.endpoint, name="backend"))
        for _ in range(5):
            export(server, make_request([make_span(chat_attributes())]))
        server.close()  # grace: 1 s, enough for three quick retries
        assert len(slow.spans()) == 5
    finally:
        slow.stop()


def test_an_outage_leaves_acknowledgements_fast_and_the_backlog_is_delivered_on_return(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream
) -> None:
    server = make_server(_forwarding(downstream.endpoint, name="backend"))

    def acknowledge(count: int) -> tuple[float, set[bytes]]:
        ids: set[bytes] = set()
        started = time.perf_counter()
        for _ in range(count):
            request = make_request([make_span(chat_attributes()) for _ in range(20)] + [_http_span()])
            ids.update(span.span_id for span in request.resource_spans[0].scope_spans[0].spans)
            export(server, request)
        return (time.perf_counter() - started) / count, ids

    export(server, make_request([make_span(chat_attributes())]))  # warm: channel, caches
    up, delivered = acknowledge(20)
    wait_for(lambda: delivered <= downstream.spans_by_id().keys(), what="the spans sent while it was up")
    downstream.stop()
    down, backlog = acknowledge(20)
    assert down < max(3 * up, 0.05), f"an export took {down:.4f}s during the outage against {up:.4f}s before"
    assert server.scalar("SELECT count() FROM requests") == 1 + 20 * 20 + 20 * 20  # stored regardless
    assert _sample(server, "otel_cost_forward_retries_total", {"endpoint": "backend"}) >= 1
    assert _sample(server, "otel_cost_forward_queue_exports", {"endpoint": "backend"}) >= 19
    downstream.start()
    wait_for(lambda: backlog <= downstream.spans_by_id().keys(), timeout=20, what="the backlog delivered")
    wait_for(lambda: _sample(server, "otel_cost_forward_queue_exports", {"endpoint": "backend"}) == 0)
    assert _sample(server, "otel_cost_forward_spans_total", {"endpoint": "backend", "outcome": "dropped"}) == 0
    assert len(downstream.spans()) == len(downstream.spans_by_id())  # each span once


def test_an_export_with_nothing_to_change_goes_on_byte_for_byte(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream
) -> None:
    server = make_server(_forwarding(downstream.endpoint))
    request = make_request([_http_span(), _http_span()], resource={"service.name": "shop"})
    body = request.SerializeToString()
    with grpc.insecure_channel(server.grpc_target) as channel:
        call = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=None,
        )
        call(body, timeout=30)
    wait_for(lambda: len(downstream.spans()) == 2, what="two forwarded spans")
    assert downstream.received[0].request.SerializeToString() == body


def test_recorded_third_party_payloads_go_on_with_their_list_price(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream
) -> None:
    from tests.conftest import FIXTURES
    from tests.test_fixtures_e2e import COSTS

    server = make_server(_forwarding(downstream.endpoint))
    sent: dict[bytes, Span] = {}
    for path in sorted(FIXTURES.glob("*.pb")):
        request = ExportTraceServiceRequest.FromString(path.read_bytes())
        sent.update(
            (span.span_id, span)
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        )
        export(server, request)
    wait_for(lambda: sent.keys() <= downstream.spans_by_id().keys(), what="every recorded span forwarded")
    forwarded = downstream.spans_by_id()
    total = Decimal(0)
    for span_id, span in sent.items():
        attributes = attributes_of(forwarded[span_id])
        original = attributes_of(span)
        assert {key: attributes[key] for key in original} == original  # what the library wrote, unchanged
        if attributes.get("otel_cost.billable"):
            total += Decimal(attributes["otel_cost.cost.exact"])
    assert total == sum(COSTS.values())  # each payload's list price, from the fixtures' README


def test_a_span_refused_in_partial_success_still_goes_on_without_a_cost(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream
) -> None:
    server = make_server(_forwarding(downstream.endpoint))
    broken = make_span(chat_attributes(**{"gen_ai.usage.input_tokens": -5}))
    response = export(server, make_request([broken, make_span(chat_attributes())]))
    assert response.partial_success.rejected_spans == 1
    wait_for(lambda: len(downstream.spans()) == 2, what="both spans forwarded")
    forwarded = downstream.spans_by_id()[broken.span_id]
    assert forwarded == broken


def test_a_span_from_the_real_sdk_and_exporter_arrives_enriched(
    make_server: Callable[..., RunningServer], downstream: TraceDownstream
) -> None:
    server = make_server(_forwarding(downstream.endpoint))
    span_id = send_with_sdk_span(server, chat_attributes(**{"gen_ai.usage.reasoning.output_tokens": 100}))
    wait_for(lambda: len(downstream.spans()) == 1, what="the SDK's span forwarded")
    forwarded = downstream.spans()[0]
    assert forwarded.span_id.hex() == span_id
    attributes = attributes_of(forwarded)
    assert Decimal(attributes["otel_cost.cost.exact"]) == Decimal(
        server.scalar(f"SELECT toString(cost) FROM requests WHERE span_id = '{span_id}'")
    )
    resource = {
        kv.key: kv.value.string_value for kv in downstream.received[0].request.resource_spans[0].resource.attributes
    }
    assert resource["service.name"] == "checkout-assistant" and resource["telemetry.sdk.name"] == "opentelemetry"
