"""A call is counted once: retried exports, replayed spans and nested instrumentation layers."""

from __future__ import annotations

import os
from collections.abc import Callable
from decimal import Decimal

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from .helpers import RunningServer, chat_attributes, make_request, make_span

ANTHROPIC = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.response.model": "claude-sonnet-4-5-20250929",
    "gen_ai.usage.input_tokens": 2550,
    "gen_ai.usage.cache_read.input_tokens": 2000,
    "gen_ai.usage.cache_creation.input_tokens": 500,
    "gen_ai.usage.output_tokens": 400,
}
ONE_CALL = Decimal("0.008625")


def export(server: RunningServer, *requests: object) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        for request in requests:
            stub.Export(request, timeout=30)


def billed(server: RunningServer) -> Decimal:
    return Decimal(server.scalar("SELECT sum(cost) FROM requests WHERE billable"))


def test_the_same_export_twice_leaves_spend_unchanged(server: RunningServer) -> None:
    request = make_request([make_span(chat_attributes()) for _ in range(5)])
    export(server, request)
    before = (billed(server), server.scalar("SELECT count() FROM requests"))
    export(server, request, request)
    assert (billed(server), server.scalar("SELECT count() FROM requests")) == before == (Decimal("0.03"), 5)
    assert Decimal(server.scalar("SELECT sum(cost) FROM spend_minute WHERE billable")) == Decimal("0.03")
    assert server.server.metrics.registry.get_sample_value("otel_cost_duplicate_spans_total") == 10


def test_a_span_repeated_inside_one_export_is_stored_once(server: RunningServer) -> None:
    span = make_span(chat_attributes())
    export(server, make_request([span, span]))
    assert server.scalar("SELECT count() FROM requests") == 1


def nested_pair() -> tuple[object, object]:
    """An instrumentation library's span and, inside it, the provider SDK's own span for the same call."""
    trace_id = os.urandom(16)
    outer = make_span(ANTHROPIC, trace_id=trace_id, name="anthropic.chat")
    inner_attributes = {**ANTHROPIC, "gen_ai.response.model": "claude-sonnet-4-5-20250929"}
    inner = make_span(inner_attributes, trace_id=trace_id, parent_span_id=outer.span_id, name="chat claude-sonnet-4-5")
    return outer, inner


def test_nested_instrumentation_in_one_export_bills_the_inner_span_once(server: RunningServer) -> None:
    outer, inner = nested_pair()
    export(server, make_request([inner, outer], scope="opentelemetry.instrumentation.anthropic"))
    rows = server.query(
        "SELECT span_id, billable, duplicate_of, has(flags, 'nested_duplicate') FROM requests ORDER BY billable"
    ).rows
    assert rows == [[outer.span_id.hex(), 0, inner.span_id.hex(), 1], [inner.span_id.hex(), 1, "", 0]]
    assert billed(server) == ONE_CALL


def test_the_kept_inner_call_is_owned_as_the_outer_span_says(server: RunningServer) -> None:
    outer, inner = nested_pair()
    outer.attributes.extend(make_span({"gen_ai.agent.name": "ticket-triage", "app.feature": "triage"}).attributes)
    export(server, make_request([inner, outer]))
    rows = server.query(
        "SELECT billable, agent, feature, mapContains(attributes, 'app.feature') FROM requests ORDER BY billable"
    ).rows
    # the inner row's stored attributes stay its own; only its owner comes from the outer span
    assert rows == [[0, "ticket-triage", "triage", 1], [1, "ticket-triage", "triage", 0]]


def test_nested_instrumentation_across_exports_in_either_order(server: RunningServer) -> None:
    first_outer, first_inner = nested_pair()
    export(server, make_request([first_inner]), make_request([first_outer]))  # usual order: the child ends first
    second_outer, second_inner = nested_pair()
    export(server, make_request([second_outer]), make_request([second_inner]))
    assert billed(server) == 2 * ONE_CALL
    duplicates = server.query("SELECT span_id, duplicate_of FROM requests WHERE NOT billable ORDER BY span_id").rows
    assert sorted(duplicates) == sorted(
        [
            [first_outer.span_id.hex(), first_inner.span_id.hex()],
            [second_inner.span_id.hex(), second_outer.span_id.hex()],
        ]
    )


def test_a_call_whose_write_failed_makes_no_other_call_a_duplicate(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"store": {"spool_max_bytes": 0}})  # no room on disk: the export is refused
    assert server.server.store is not None
    store = server.server.store
    outer, inner = nested_pair()
    store.execute("RENAME TABLE requests TO requests_away")
    try:
        with pytest.raises(grpc.RpcError):
            export(server, make_request([inner]))  # the SDK's span never reaches the store
    finally:
        store.execute("RENAME TABLE requests_away TO requests")
    export(server, make_request([outer]))  # and its client gave up: the outer span must be billed
    assert billed(server) == ONE_CALL
    assert server.query("SELECT span_id, billable FROM requests").rows == [[outer.span_id.hex(), 1]]


def test_application_retries_are_separate_calls_and_all_billed(server: RunningServer) -> None:
    trace_id = os.urandom(16)
    agent = make_span({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "doc-triage"}, trace_id=trace_id)
    retries = [make_span(ANTHROPIC, trace_id=trace_id, parent_span_id=agent.span_id) for _ in range(3)]
    export(server, make_request([agent, *retries]))
    assert billed(server) == 3 * ONE_CALL


def test_a_different_call_nested_under_a_call_is_billed(server: RunningServer) -> None:
    trace_id = os.urandom(16)
    outer = make_span(chat_attributes(), trace_id=trace_id)
    embedding = make_span(
        {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.usage.input_tokens": 800,
        },
        trace_id=trace_id,
        parent_span_id=outer.span_id,
    )
    export(server, make_request([embedding, outer]))
    assert billed(server) == Decimal("0.006") + Decimal("0.000016")


def test_agent_usage_is_stored_but_not_billed_again(server: RunningServer) -> None:
    trace_id = os.urandom(16)
    agent = make_span(
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "ticket-triage",
            **{key: value for key, value in ANTHROPIC.items() if key.startswith("gen_ai.usage")},
        },
        trace_id=trace_id,
    )
    call = make_span(
        {**ANTHROPIC, "gen_ai.agent.name": "ticket-triage"}, trace_id=trace_id, parent_span_id=agent.span_id
    )
    export(server, make_request([call, agent]))
    rows = server.query("SELECT operation, billable, agent FROM requests ORDER BY billable").rows
    assert rows == [["invoke_agent", 0, "ticket-triage"], ["chat", 1, "ticket-triage"]]
    assert billed(server) == ONE_CALL


def test_a_retry_after_a_restart_is_still_stored_once(make_server: Callable[..., RunningServer]) -> None:
    first = make_server()
    request = make_request([make_span(chat_attributes()) for _ in range(3)])
    export(first, request)
    first.close()
    second = make_server()  # same database: the span keys come back from the store
    export(second, request)
    assert second.scalar("SELECT count() FROM requests") == 3
    assert Decimal(second.scalar("SELECT sum(cost) FROM spend_hour")) == Decimal("0.018")
