"""Every recorded third-party payload, through the real gRPC receiver and through OTLP/HTTP JSON,
is stored with the exact list-price cost its README states."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .conftest import FIXTURES
from .helpers import RunningServer


def expected_costs() -> dict[str, Decimal]:
    """file -> list-price cost, read from the fixtures' README table."""
    costs = {}
    for line in (FIXTURES / "README.md").read_text().splitlines():
        match = re.match(r"\|\s*([\w.-]+\.pb)\s*\|.*\|\s*([0-9.]+)(?:\s*\(.*\))?\s*\|\s*$", line)
        if match:
            costs[match.group(1)] = Decimal(match.group(2))
    return costs


COSTS = expected_costs()


def test_readme_lists_every_payload() -> None:
    assert sorted(COSTS) == sorted(path.name for path in FIXTURES.glob("*.pb"))
    assert COSTS["traceloop-anthropic-0.pb"] == Decimal("0.008625")


def to_otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as an SDK writes it: hex ids, lowerCamelCase, int64 as strings."""
    document = json_format.MessageToDict(request)
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(document).encode()


def stored(server: RunningServer, span_hex: str) -> dict:
    rows = server.query(
        f"SELECT cost, team, service_name, priced, billable, price_version FROM requests WHERE span_id = '{span_hex}'"
    ).dicts()
    assert len(rows) == 1, rows
    return rows[0]


@pytest.mark.parametrize("name", sorted(COSTS))
def test_payload_over_grpc_costs_exactly_its_list_price(server: RunningServer, name: str) -> None:
    body = (FIXTURES / name).read_bytes()
    request = ExportTraceServiceRequest.FromString(body)
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = trace_service_pb2_grpc.TraceServiceStub(channel).Export(request, timeout=30)
    assert not response.HasField("partial_success")
    span_hex = request.resource_spans[0].scope_spans[0].spans[0].span_id.hex()
    row = stored(server, span_hex)
    assert Decimal(row["cost"]) == COSTS[name]
    assert (row["team"], row["service_name"], row["priced"], row["billable"]) == (
        "payments",
        "checkout-assistant",
        1,
        1,
    )
    assert row["price_version"] == "genai-prices@0.2.3"


@pytest.mark.parametrize("name", sorted(COSTS))
def test_payload_over_http_json_costs_exactly_its_list_price(server: RunningServer, name: str) -> None:
    request = ExportTraceServiceRequest.FromString((FIXTURES / name).read_bytes())
    http_request = urllib.request.Request(
        f"{server.http_url}/v1/traces",
        data=to_otlp_json(request),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(http_request, timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
    span_hex = request.resource_spans[0].scope_spans[0].spans[0].span_id.hex()
    row = stored(server, span_hex)
    assert Decimal(row["cost"]) == COSTS[name]
    assert (row["team"], row["service_name"]) == ("payments", "checkout-assistant")


def test_all_payloads_sum_exactly_in_rollups_and_resending_changes_nothing(server: RunningServer) -> None:
    payloads = [ExportTraceServiceRequest.FromString(path.read_bytes()) for path in sorted(FIXTURES.glob("*.pb"))]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        for _ in range(2):  # the second round is a client retry of every export
            for payload in payloads:
                stub.Export(payload, timeout=30)
    total = sum(COSTS.values())
    assert Decimal(server.scalar("SELECT sum(cost) FROM requests WHERE billable")) == total
    assert server.scalar("SELECT count() FROM requests") == len(payloads)
    assert Decimal(server.scalar("SELECT sum(cost) FROM spend_minute WHERE billable")) == total
    assert Decimal(server.scalar("SELECT sum(cost) FROM spend_hour WHERE billable")) == total


def test_pipeline_worker_processes_price_exactly_the_same(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"receiver": {"workers": 2}})
    workers_rss = server.server.metrics.registry.get_sample_value("otel_cost_workers_peak_resident_memory_bytes")
    assert workers_rss is not None and workers_rss > 50 * 2**20  # two live worker processes
    payloads = [ExportTraceServiceRequest.FromString(path.read_bytes()) for path in sorted(FIXTURES.glob("*.pb"))]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        for payload in payloads * 2:
            stub.Export(payload, timeout=60)
    http_request = urllib.request.Request(
        f"{server.http_url}/v1/traces", data=to_otlp_json(payloads[0]), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(http_request, timeout=30) as response:
        assert response.status == 200
    assert Decimal(server.scalar("SELECT sum(cost) FROM requests WHERE billable")) == sum(COSTS.values())
    assert server.scalar("SELECT count() FROM requests") == len(payloads)
    with grpc.insecure_channel(server.grpc_target) as channel:
        raw = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\x0a\xff\xff\xff\xff\x0f garbage", timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # a worker's DecodeError crosses back intact


def test_a_dead_worker_costs_one_retryable_refusal_then_a_new_pool_serves(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server({"receiver": {"workers": 1}})
    pool = server.server._pool
    assert pool is not None and len(pool.pids) == 1
    os.kill(pool.pids[0], signal.SIGKILL)
    payload = ExportTraceServiceRequest.FromString((FIXTURES / "openai-v2-0.pb").read_bytes())
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Export(payload, timeout=60)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "a pipeline worker died" in caught.value.details()
        stub.Export(payload, timeout=60)  # the exporter's retry
    assert server.scalar("SELECT count() FROM requests") == 1
    assert len(pool.pids) == 1


def test_stored_attributes_are_those_no_column_holds(server: RunningServer) -> None:
    request = ExportTraceServiceRequest.FromString((FIXTURES / "openai-v2-0.pb").read_bytes())
    with grpc.insecure_channel(server.grpc_target) as channel:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(request, timeout=30)
    attributes, resource = server.query("SELECT attributes, resource_attributes FROM requests").rows[0]
    # usage, models, provider, operation and response id live in typed columns
    assert attributes == {
        "server.address": "127.0.0.1",
        "server.port": "42389",
        "gen_ai.response.finish_reasons": '["stop"]',
    }
    assert resource["team"] == "payments" and resource["telemetry.sdk.language"] == "python"


def test_fixture_folder_is_a_copy_of_shared() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "otlp"
    if not shared.is_dir():
        pytest.skip("../shared is not next to this checkout")
    for path in shared.iterdir():
        assert (FIXTURES / path.name).read_bytes() == path.read_bytes()
