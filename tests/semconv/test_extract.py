"""Span -> Call: every dialect's attributes, every emitter's cache convention, every refusal's message."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_cost.model import Call
from otel_cost.semconv import MAX_TOKENS, InvalidSpanError, emitter_for_scope, extract, to_dict
from otel_cost.semconv.keys import FIELD_SOURCES

from ..helpers import NOW_NS, chat_attributes, make_span

OPENLLMETRY_OPENAI = ("opentelemetry.instrumentation.openai.v1", "0.62.4")
OPENLLMETRY_ANTHROPIC = ("opentelemetry.instrumentation.anthropic", "0.62.4")
OPENLIT = ("openlit.otel.tracing", "1.35.2")
AI_SDK_5 = ("ai", "5.0.52")
AI_SDK_6 = ("ai", "6.0.3")
OPENINFERENCE_OPENAI = ("openinference.instrumentation.openai", "0.1.30")
PYDANTIC_AI = ("pydantic-ai", "1.0.10")
UNKNOWN_EMITTER = ("acme.llm.tracing", "2.0.0")

#: A time well away from NOW_NS, to tell "the span's time" from "now".
SPAN_START_NS = 1_780_000_000_000_000_000


def extract_span(span: Span, scope: tuple[str, str] = OPENLLMETRY_OPENAI) -> Call | None:
    return extract(span, to_dict(span.attributes), emitter_for_scope(*scope), NOW_NS)


def extract_from(
    attributes: Mapping[str, Any], scope: tuple[str, str] = OPENLLMETRY_OPENAI, **span_options: Any
) -> Call | None:
    span_options.setdefault("start_ns", SPAN_START_NS)
    return extract_span(make_span(attributes, **span_options), scope)


def call_from(attributes: Mapping[str, Any], scope: tuple[str, str] = OPENLLMETRY_OPENAI, **span_options: Any) -> Call:
    call = extract_from(attributes, scope, **span_options)
    assert call is not None
    return call


def usage_flags(call: Call) -> list[str]:
    """The normalization notes, without the model-name note these spans' "gpt-4o" requests earn."""
    return [flag for flag in call.flags if flag != "floating_alias"]


def refusal(attributes: Mapping[str, Any], scope: tuple[str, str] = OPENLLMETRY_OPENAI) -> str:
    with pytest.raises(InvalidSpanError) as caught:
        extract_from(attributes, scope)
    return str(caught.value)


class Tokens(NamedTuple):
    input: int
    cache_read: int
    cache_write: int
    cache_write_1h: int
    output: int
    reasoning: int


def tokens(call: Call) -> Tokens:
    return Tokens(
        call.input_tokens,
        call.cache_read_tokens,
        call.cache_write_tokens,
        call.cache_write_1h_tokens,
        call.output_tokens,
        call.reasoning_tokens,
    )


# --- every attribute variant ------------------------------------------------------------------------


class Probe(NamedTuple):
    """How to exercise one canonical field: other attributes the span needs, the value to put under
    the variant at `rank`, how to read the field back from the Call, and what rank 0 must give."""

    base: dict[str, Any]
    value: Callable[[int], Any]
    read: Callable[[Call], Any]
    expected: Any


PROBES: dict[str, Probe] = {
    "input": Probe({}, lambda rank: 1000 + rank, lambda c: (c.input_tokens, usage_flags(c)), (1000, [])),
    "output": Probe({}, lambda rank: 300 + rank, lambda c: (c.output_tokens, usage_flags(c)), (300, [])),
    "total": Probe(
        {"gen_ai.usage.output_tokens": 300},
        lambda rank: 1500 + rank,
        lambda c: (c.input_tokens, c.output_tokens, usage_flags(c)),
        (1200, 300, ["input_from_total"]),
    ),
    "cache_read": Probe(
        {"gen_ai.usage.input_tokens": 5000},
        lambda rank: 1000 + rank,
        lambda c: (c.input_tokens, c.cache_read_tokens),
        (4000, 1000),
    ),
    "cache_write": Probe(
        {"gen_ai.usage.input_tokens": 5000},
        lambda rank: 1000 + rank,
        lambda c: (c.input_tokens, c.cache_write_tokens),
        (4000, 1000),
    ),
    "cache_write_1h": Probe(
        {"gen_ai.usage.input_tokens": 5000, "gen_ai.usage.cache_write.input_tokens": 3000},
        lambda rank: 1000 + rank,
        lambda c: (c.input_tokens, c.cache_write_tokens, c.cache_write_1h_tokens),
        (2000, 3000, 1000),
    ),
    "reasoning": Probe(
        {"gen_ai.usage.output_tokens": 5000},
        lambda rank: 1000 + rank,
        lambda c: (c.output_tokens, c.reasoning_tokens, usage_flags(c)),
        (5000, 1000, []),
    ),
    "input_audio": Probe(
        {"gen_ai.usage.input_tokens": 5000},
        lambda rank: 1000 + rank,
        lambda c: (c.input_tokens, c.input_audio_tokens),
        (5000, 1000),
    ),
    "output_audio": Probe(
        {"gen_ai.usage.output_tokens": 5000},
        lambda rank: 1000 + rank,
        lambda c: (c.output_tokens, c.output_audio_tokens),
        (5000, 1000),
    ),
    "request_model": Probe(
        {"gen_ai.usage.input_tokens": 10}, lambda rank: f"model-{rank}", lambda c: c.request_model, "model-0"
    ),
    "response_model": Probe(
        {"gen_ai.usage.input_tokens": 10}, lambda rank: f"model-{rank}", lambda c: c.response_model, "model-0"
    ),
    "provider": Probe({"gen_ai.usage.input_tokens": 10}, lambda rank: f"Vendor{rank}", lambda c: c.provider, "vendor0"),
    "operation": Probe(
        {"gen_ai.usage.input_tokens": 10},
        lambda rank: f"Op{rank}",
        lambda c: (c.operation, c.billable),
        ("op0", True),
    ),
    "response_service_tier": Probe(
        {"gen_ai.usage.input_tokens": 10}, lambda rank: f"Tier{rank}", lambda c: c.service_tier, "tier0"
    ),
    "request_service_tier": Probe(
        {"gen_ai.usage.input_tokens": 10}, lambda rank: f"Tier{rank}", lambda c: c.service_tier, "tier0"
    ),
    "batch_id": Probe(
        {"gen_ai.usage.input_tokens": 10},
        lambda rank: f"batch_{rank}",
        lambda c: (c.processing, c.service_tier),
        ("batch", ""),
    ),
    "emitter_cost": Probe(
        {"gen_ai.usage.input_tokens": 10}, lambda rank: 0.25 + rank, lambda c: c.emitter_cost, "0.25"
    ),
    "error_type": Probe(
        {"gen_ai.usage.input_tokens": 10},
        lambda rank: f"RateLimitError{rank}",
        lambda c: (c.status, c.error_type),
        ("error", "RateLimitError0"),
    ),
    "conversation_id": Probe(
        {"gen_ai.usage.input_tokens": 10}, lambda rank: f"conv-{rank}", lambda c: c.conversation_id, "conv-0"
    ),
    "response_id": Probe(
        {"gen_ai.usage.input_tokens": 10}, lambda rank: f"resp-{rank}", lambda c: c.response_id, "resp-0"
    ),
    "pydantic_ai_agent": Probe(
        {"gen_ai.usage.input_tokens": 10},
        lambda rank: f"agent-{rank}",
        lambda c: (c.operation, c.billable),
        ("invoke_agent", False),
    ),
}

VARIANTS = [(field, key) for field, keys in FIELD_SOURCES.items() for key in keys]
RANKED_FIELDS = [field for field, keys in FIELD_SOURCES.items() if len(keys) > 1]


def test_every_field_has_a_probe() -> None:
    assert sorted(PROBES) == sorted(FIELD_SOURCES)


@pytest.mark.parametrize(("field", "key"), VARIANTS, ids=[key for _, key in VARIANTS])
def test_every_attribute_variant_is_read(field: str, key: str) -> None:
    probe = PROBES[field]
    call = call_from({**probe.base, key: probe.value(0)})
    assert probe.read(call) == probe.expected


@pytest.mark.parametrize("field", RANKED_FIELDS)
def test_the_first_listed_variant_wins_when_a_span_carries_several(field: str) -> None:
    probe = PROBES[field]
    keys = FIELD_SOURCES[field]
    # Most-preferred key last in the span, so neither insertion order nor "last wins" explains the result.
    attributes = {**probe.base, **{key: probe.value(rank) for rank, key in reversed(list(enumerate(keys)))}}
    assert probe.read(call_from(attributes)) == probe.expected


def test_response_service_tier_wins_over_the_request() -> None:
    call = call_from(chat_attributes(**{"gen_ai.request.service_tier": "auto", "openai.response.service_tier": "Flex"}))
    assert call.service_tier == "flex"
    call = call_from(chat_attributes(**{"gen_ai.openai.request.service_tier": "priority"}))
    assert call.service_tier == "priority"
    assert call_from(chat_attributes()).service_tier == ""


def test_audio_counts_are_parts_of_input_and_output_and_capped_with_a_flag() -> None:
    call = call_from(
        chat_attributes(
            **{
                "gen_ai.usage.details.input_audio_tokens": 5000,
                "gen_ai.usage.details.output_audio_tokens": 250,
                "gen_ai.usage.reasoning_tokens": 100,
            }
        )
    )
    assert (call.input_tokens, call.input_audio_tokens) == (1200, 1200)
    assert (call.output_tokens, call.output_audio_tokens) == (300, 200)
    assert usage_flags(call) == ["input_audio_exceeds_input", "output_audio_exceeds_output"]


def test_batch_processing_is_read_from_the_batch_id_or_a_batch_tier() -> None:
    call = call_from(chat_attributes(**{"gen_ai.batch.id": "batch_abc123"}))
    assert (call.processing, call.service_tier) == ("batch", "")
    call = call_from(chat_attributes(**{"gen_ai.openai.response.service_tier": "batch"}))
    assert (call.processing, call.service_tier) == ("batch", "")
    assert call_from(chat_attributes()).processing == ""


@pytest.mark.parametrize(
    ("requested", "served", "floating"),
    [
        ("chatgpt-4o-latest", "chatgpt-4o-latest", True),
        ("chat-latest", "", True),
        ("llama3:latest", "", True),
        ("gpt-4o", "gpt-4o-2024-08-06", True),
        ("gpt-4o-2024-08-06", "gpt-4o-2024-08-06", False),
        ("claude-sonnet-4-5", "", False),
        ("models/gemini-2.5-pro", "gemini-2.5-pro", False),
        ("GPT-4o", "gpt-4o", False),
    ],
)
def test_floating_aliases_are_flagged(requested: str, served: str, floating: bool) -> None:
    attributes = chat_attributes(**{"gen_ai.request.model": requested})
    if served:
        attributes["gen_ai.response.model"] = served
    else:
        del attributes["gen_ai.response.model"]
    assert ("floating_alias" in call_from(attributes).flags) is floating


# --- dialects and emitters --------------------------------------------------------------------------


def test_current_semconv_chat_span() -> None:
    call = call_from(
        chat_attributes(
            **{
                "gen_ai.usage.cache_read.input_tokens": 1000,
                "gen_ai.usage.reasoning.output_tokens": 120,
                "gen_ai.usage.total_tokens": 1500,
                "gen_ai.response.id": "chatcmpl-1",
                "gen_ai.conversation.id": "conv-9",
            }
        ),
        span_id=b"\x01" * 8,
        trace_id=b"\x02" * 16,
        parent_span_id=b"\x03" * 8,
    )
    assert tokens(call) == Tokens(200, 1000, 0, 0, 300, 120)
    assert (call.provider, call.operation, call.request_model, call.response_model) == (
        "openai",
        "chat",
        "gpt-4o",
        "gpt-4o-2024-08-06",
    )
    assert (call.trace_id, call.span_id, call.parent_span_id) == (b"\x02" * 16, b"\x01" * 8, b"\x03" * 8)
    assert (call.response_id, call.conversation_id) == ("chatcmpl-1", "conv-9")
    assert (call.billable, call.usage_reported, call.status, call.error_type, usage_flags(call)) == (
        True,
        True,
        "ok",
        "",
        [],
    )
    assert call.emitter == "opentelemetry.instrumentation.openai.v1@0.62.4"
    assert (call.start_ns, call.timestamp_ns, call.duration_ns) == (
        SPAN_START_NS,
        SPAN_START_NS + 1_000_000_000,
        1_000_000_000,
    )


def test_legacy_prompt_and_completion_tokens_with_gen_ai_system() -> None:
    call = call_from(
        {
            "gen_ai.system": "openai",
            "llm.request.type": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.prompt_tokens": 900,
            "gen_ai.usage.completion_tokens": 100,
            "llm.usage.total_tokens": 1000,
        }
    )
    assert tokens(call) == Tokens(900, 0, 0, 0, 100, 0)
    assert (call.provider, call.operation, call.request_model, usage_flags(call)) == (
        "openai",
        "chat",
        "gpt-4o-mini",
        [],
    )


def test_openai_v2_without_scope_version() -> None:
    call = call_from(chat_attributes(), ("opentelemetry.instrumentation.openai_v2", ""))
    assert call.emitter == "opentelemetry.instrumentation.openai_v2"
    assert tokens(call) == Tokens(1200, 0, 0, 0, 300, 0)


def anthropic_attributes(input_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.response.model": "claude-sonnet-4-5-20250929",
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": 400,
        "gen_ai.usage.cache_read.input_tokens": 2000,
        "gen_ai.usage.cache_creation.input_tokens": 500,
        **extra,
    }


def test_openllmetry_anthropic_input_includes_the_cache() -> None:
    call = call_from(anthropic_attributes(2550, **{"gen_ai.usage.total_tokens": 2950}), OPENLLMETRY_ANTHROPIC)
    assert tokens(call) == Tokens(50, 2000, 500, 0, 400, 0)
    assert call.prompt_tokens == 2550
    assert usage_flags(call) == []


def test_openllmetry_old_cache_attribute_names() -> None:
    attributes = {
        "gen_ai.system": "Anthropic",
        "gen_ai.request.model": "claude-3-5-haiku-20241022",
        "gen_ai.usage.prompt_tokens": 2550,
        "gen_ai.usage.completion_tokens": 400,
        "gen_ai.usage.cache_read_input_tokens": 2000,
        "gen_ai.usage.cache_creation_input_tokens": 500,
    }
    call = call_from(attributes, ("opentelemetry.instrumentation.anthropic", "0.40.2"))
    assert call.provider == "anthropic"
    assert tokens(call) == Tokens(50, 2000, 500, 0, 400, 0)


@pytest.mark.parametrize("input_tokens", [50, 2500, 3000])
def test_openlit_anthropic_input_excludes_the_cache(input_tokens: int) -> None:
    # Exclusive whatever the size: 3000 >= 2000 + 500 would pass the inclusive sanity rule, yet OpenLIT's
    # count is Anthropic's raw uncached input and must not be reduced again (OpenLIT #1378).
    call = call_from(anthropic_attributes(input_tokens), OPENLIT)
    assert tokens(call) == Tokens(input_tokens, 2000, 500, 0, 400, 0)
    assert usage_flags(call) == []


def test_openlit_openai_input_still_includes_the_cache() -> None:
    call = call_from(chat_attributes(**{"gen_ai.usage.cache_read.input_tokens": 1000}), OPENLIT)
    assert tokens(call) == Tokens(200, 1000, 0, 0, 300, 0)


def ai_sdk_attributes(**usage: int) -> dict[str, Any]:
    return {
        "ai.operationId": "ai.generateText.doGenerate",
        "ai.model.provider": "anthropic.messages",
        "ai.model.id": "claude-sonnet-4-5",
        "ai.response.model": "claude-sonnet-4-5-20250929",
        **{f"ai.usage.{name}": value for name, value in usage.items()},
    }


@pytest.mark.parametrize("input_tokens", [50, 3000])
def test_ai_sdk_5_anthropic_input_excludes_the_cache(input_tokens: int) -> None:
    call = call_from(ai_sdk_attributes(inputTokens=input_tokens, outputTokens=400, cachedInputTokens=2000), AI_SDK_5)
    assert (call.provider, call.operation, call.billable) == ("anthropic", "chat", True)
    assert (call.request_model, call.response_model) == ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929")
    assert tokens(call) == Tokens(input_tokens, 2000, 0, 0, 400, 0)


def test_ai_sdk_6_anthropic_input_includes_the_cache() -> None:
    usage = {
        "inputTokens": 2550,
        "outputTokens": 400,
        "inputTokenDetails.cacheReadTokens": 2000,
        "inputTokenDetails.cacheWriteTokens": 500,
        "outputTokenDetails.reasoningTokens": 100,
        "totalTokens": 2950,
    }
    call = call_from(ai_sdk_attributes(**usage), AI_SDK_6)
    assert tokens(call) == Tokens(50, 2000, 500, 0, 400, 100)
    assert usage_flags(call) == []


def test_ai_sdk_4_prompt_and_completion_tokens() -> None:
    attributes = {
        "ai.operationId": "ai.streamText.doStream",
        "ai.model.provider": "openai.chat",
        "ai.model.id": "gpt-4o",
        "ai.usage.promptTokens": 1200,
        "ai.usage.completionTokens": 300,
        "ai.usage.tokens": 1500,
    }
    call = call_from(attributes, ("ai", "4.3.16"))
    assert (call.provider, call.operation, call.billable, usage_flags(call)) == ("openai", "chat", True, [])
    assert tokens(call) == Tokens(1200, 0, 0, 0, 300, 0)


@pytest.mark.parametrize(
    ("operation_id", "operation", "billable"),
    [
        ("ai.generateText.doGenerate", "chat", True),
        ("ai.streamText.doStream", "chat", True),
        ("ai.generateObject.doGenerate", "chat", True),
        ("ai.embed.doEmbed", "embeddings", True),
        ("ai.embedMany.doEmbed", "embeddings", True),
        ("ai.generateText", "invoke_workflow", False),
        ("ai.streamText", "invoke_workflow", False),
        ("ai.streamObject", "invoke_workflow", False),
        ("ai.embedMany", "invoke_workflow", False),
        ("ai.toolCall", "execute_tool", False),
    ],
)
def test_ai_sdk_operation_ids(operation_id: str, operation: str, billable: bool) -> None:
    attributes = {**ai_sdk_attributes(inputTokens=100, outputTokens=10), "ai.operationId": operation_id}
    call = call_from(attributes, AI_SDK_6)
    assert (call.operation, call.billable) == (operation, billable)
    assert tokens(call) == Tokens(100, 0, 0, 0, 10, 0)


def test_ai_sdk_without_version_decides_by_the_data() -> None:
    call = call_from(ai_sdk_attributes(inputTokens=50, outputTokens=400, cachedInputTokens=2000), ("ai", ""))
    assert tokens(call) == Tokens(50, 2000, 0, 0, 400, 0)
    assert usage_flags(call) == ["cache_exclusive_inferred"]


def openinference_attributes(kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "openinference.span.kind": kind,
        "llm.provider": "openai",
        "llm.system": "openai",
        "llm.model_name": "gpt-4o-2024-08-06",
        "llm.token_count.prompt": 1200,
        "llm.token_count.completion": 300,
        "llm.token_count.total": 1500,
        **extra,
    }


def test_openinference_llm_span() -> None:
    attributes = openinference_attributes(
        "LLM",
        **{"llm.token_count.prompt_details.cache_read": 1000, "llm.token_count.completion_details.reasoning": 64},
    )
    call = call_from(attributes, OPENINFERENCE_OPENAI)
    assert (call.operation, call.billable, call.provider) == ("chat", True, "openai")
    assert (call.request_model, call.response_model) == ("", "gpt-4o-2024-08-06")
    assert tokens(call) == Tokens(200, 1000, 0, 0, 300, 64)
    assert usage_flags(call) == []


def test_openinference_embedding_span() -> None:
    attributes = {
        "openinference.span.kind": "EMBEDDING",
        "embedding.model_name": "text-embedding-3-small",
        "llm.token_count.prompt": 800,
        "llm.token_count.total": 800,
    }
    call = call_from(attributes, OPENINFERENCE_OPENAI)
    assert (call.operation, call.billable, call.response_model) == ("embeddings", True, "text-embedding-3-small")
    assert tokens(call) == Tokens(800, 0, 0, 0, 0, 0)


@pytest.mark.parametrize("kind", ["AGENT", "CHAIN", "TOOL", "RETRIEVER", "RERANKER", "GUARDRAIL", "EVALUATOR"])
def test_openinference_aggregate_kinds(kind: str) -> None:
    call = call_from(openinference_attributes(kind), OPENINFERENCE_OPENAI)
    assert (call.operation, call.billable) == (kind.lower(), False)
    assert tokens(call) == Tokens(1200, 0, 0, 0, 300, 0)
    bare = {"openinference.span.kind": kind, "input.value": "question"}
    assert extract_from(bare, OPENINFERENCE_OPENAI) is None


def test_openinference_anthropic_counts_are_inclusive() -> None:
    attributes = {
        "openinference.span.kind": "LLM",
        "llm.provider": "anthropic",
        "llm.model_name": "claude-sonnet-4-5-20250929",
        "llm.token_count.prompt": 2550,
        "llm.token_count.completion": 400,
        "llm.token_count.prompt_details.cache_read": 2000,
        "llm.token_count.prompt_details.cache_write": 500,
    }
    call = call_from(attributes, ("openinference.instrumentation.anthropic", "0.1.19"))
    assert tokens(call) == Tokens(50, 2000, 500, 0, 400, 0)
    assert usage_flags(call) == []


def test_pydantic_ai_model_request_span_with_usage_details() -> None:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 2550,
        "gen_ai.usage.output_tokens": 400,
        "gen_ai.usage.details.cache_read_tokens": 2000,
        "gen_ai.usage.details.cache_write_tokens": 500,
        "gen_ai.usage.details.reasoning_tokens": 90,
        "operation.cost": 0.0087,
    }
    call = call_from(attributes, PYDANTIC_AI)
    assert tokens(call) == Tokens(50, 2000, 500, 0, 400, 90)
    assert (call.billable, call.emitter_cost, usage_flags(call)) == (True, "0.0087", [])


def test_pydantic_ai_agent_run_span_is_not_billable() -> None:
    attributes = {
        "agent_name": "support-agent",
        "model_name": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 5100,
        "gen_ai.usage.output_tokens": 800,
    }
    call = call_from(attributes, PYDANTIC_AI)
    assert (call.operation, call.billable) == ("invoke_agent", False)
    assert tokens(call) == Tokens(5100, 0, 0, 0, 800, 0)
    assert usage_flags(call) == []  # a non-billable aggregate is not "usage_missing" either
    assert extract_from({"agent_name": "support-agent", "model_name": "claude-sonnet-4-5"}, PYDANTIC_AI) is None


@pytest.mark.parametrize("operation", ["invoke_agent", "execute_tool", "invoke_workflow", "create_agent", "retrieval"])
def test_aggregate_operations_with_usage_are_kept_not_billed(operation: str) -> None:
    call = call_from(chat_attributes(**{"gen_ai.operation.name": operation}))
    assert (call.operation, call.billable, call.usage_reported) == (operation, False, True)
    assert tokens(call) == Tokens(1200, 0, 0, 0, 300, 0)


@pytest.mark.parametrize("operation", ["invoke_agent", "execute_tool", "invoke_workflow"])
def test_aggregate_operations_without_usage_are_not_calls(operation: str) -> None:
    attributes = {"gen_ai.operation.name": operation, "gen_ai.agent.name": "triage", "gen_ai.request.model": "gpt-4o"}
    assert extract_from(attributes) is None


@pytest.mark.parametrize("kind", ["workflow", "task", "agent", "tool"])
def test_openllmetry_workflow_spans(kind: str) -> None:
    assert extract_from({"traceloop.span.kind": kind, "traceloop.entity.name": "plan"}) is None
    call = call_from({"traceloop.span.kind": kind, "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 2})
    assert (call.operation, call.billable) == (kind, False)


@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"http.request.method": "POST", "url.full": "https://api.openai.com/v1/chat/completions"},
        {"db.system": "postgresql", "error.type": "TimeoutError"},
        {"session.id": "s-1", "user.id": "u-1"},
        {"gen_ai.response.id": "chatcmpl-1"},
        {"gen_ai.usage.cost": 0.0},
        {"gen_ai.provider.name": "openai"},
    ],
)
def test_spans_that_are_not_model_calls(attributes: dict[str, Any]) -> None:
    assert extract_from(attributes) is None


def test_non_genai_span_is_not_checked_or_redacted() -> None:
    span = make_span({"http.request.method": "GET", "note": "sk-proj-" + "a" * 40}, trace_id=b"\x00" * 16)
    attrs = to_dict(span.attributes)
    assert extract(span, attrs, emitter_for_scope(*OPENLLMETRY_OPENAI), NOW_NS) is None
    assert attrs["note"] == "sk-proj-" + "a" * 40


def test_genai_span_values_are_redacted_in_place() -> None:
    span = make_span(chat_attributes(**{"app.note": "key sk-proj-" + "a" * 40}))
    attrs = to_dict(span.attributes)
    call = extract(span, attrs, emitter_for_scope(*OPENLLMETRY_OPENAI), NOW_NS)
    assert call is not None
    assert attrs["app.note"] == "key [REDACTED]"


def test_inference_span_without_usage_is_flagged() -> None:
    call = call_from({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.system": "openai"})
    assert (call.usage_reported, call.billable, usage_flags(call)) == (False, True, ["usage_missing"])
    assert tokens(call) == Tokens(0, 0, 0, 0, 0, 0)
    operation_only = call_from({"gen_ai.operation.name": "embeddings"})
    assert (operation_only.operation, usage_flags(operation_only)) == ("embeddings", ["usage_missing"])


def test_failed_call_without_usage_is_not_flagged_missing() -> None:
    call = call_from({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}, error=True)
    assert (call.status, call.usage_reported, usage_flags(call)) == ("error", False, [])


# --- values as they arrive ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [1200, "1200", " 1200 ", 1200.0])
def test_token_counts_from_ints_strings_and_integral_doubles(raw: Any) -> None:
    call = call_from(chat_attributes(**{"gen_ai.usage.input_tokens": raw, "gen_ai.usage.output_tokens": "300"}))
    assert tokens(call) == Tokens(1200, 0, 0, 0, 300, 0)


def test_zero_and_max_tokens_are_accepted() -> None:
    call = call_from(chat_attributes(**{"gen_ai.usage.input_tokens": 0, "gen_ai.usage.output_tokens": MAX_TOKENS}))
    assert tokens(call) == Tokens(0, 0, 0, 0, MAX_TOKENS, 0)


@pytest.mark.parametrize("key", ["gen_ai.usage.input_tokens", "ai.usage.outputTokens", "llm.token_count.total"])
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (-5, "{key} is negative (-5)"),
        ("-5", "{key} is negative (-5)"),
        ("lots", "{key} is not a whole number ('lots')"),
        ("", "{key} is not a whole number ('')"),
        ("12.5", "{key} is not a whole number ('12.5')"),
        (math.nan, "{key} is not a whole number (nan)"),
        (math.inf, "{key} is not a whole number (inf)"),
        (12.5, "{key} is not a whole number (12.5)"),
        (-1.0, "{key} is negative (-1)"),
        (True, "{key} is not a number (bool)"),
        (False, "{key} is not a number (bool)"),
        (MAX_TOKENS + 1, "{key} is implausibly large (1000000001 > 1000000000)"),
        (str(2**62), f"{{key}} is implausibly large ({2**62} > 1000000000)"),
        (1e300, "{key} is implausibly large (" + str(int(1e300)) + " > 1000000000)"),
        ([1, 2], "{key} is not a number (list)"),
        ({"n": 1}, "{key} is not a number (dict)"),
        (b"\x01", "{key} is not a number (bytes)"),
    ],
)
def test_bad_token_values_are_refused_naming_the_attribute(key: str, raw: Any, message: str) -> None:
    assert refusal({"gen_ai.operation.name": "chat", key: raw}) == message.format(key=key)


def test_long_bad_string_is_quoted_short() -> None:
    assert refusal({"gen_ai.usage.output_tokens": "x" * 500}) == (
        "gen_ai.usage.output_tokens is not a whole number ('" + "x" * 40 + "')"
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("trace_id", b"\x00" * 16, "invalid trace_id (must be 16 bytes, not all zero)"),
        ("trace_id", b"\x01" * 8, "invalid trace_id (must be 16 bytes, not all zero)"),
        ("trace_id", b"", "invalid trace_id (must be 16 bytes, not all zero)"),
        ("span_id", b"\x00" * 8, "invalid span_id (must be 8 bytes, not all zero)"),
        ("span_id", b"\x01" * 16, "invalid span_id (must be 8 bytes, not all zero)"),
        ("span_id", b"", "invalid span_id (must be 8 bytes, not all zero)"),
    ],
)
def test_invalid_ids_are_refused(field: str, value: bytes, message: str) -> None:
    span = make_span(chat_attributes())
    setattr(span, field, value)
    with pytest.raises(InvalidSpanError) as caught:
        extract_span(span)
    assert str(caught.value) == message


def test_malformed_parent_id_is_dropped() -> None:
    assert call_from(chat_attributes(), parent_span_id=b"\x05" * 3).parent_span_id == b""


# --- timestamps -----------------------------------------------------------------------------------------


def test_missing_end_time_uses_the_start() -> None:
    span = make_span(chat_attributes(), start_ns=SPAN_START_NS)
    span.end_time_unix_nano = 0
    call = extract_span(span)
    assert call is not None
    assert (call.start_ns, call.timestamp_ns, call.duration_ns, usage_flags(call)) == (
        SPAN_START_NS,
        SPAN_START_NS,
        0,
        [],
    )


def test_no_timestamps_means_now_and_a_flag() -> None:
    span = make_span(chat_attributes())
    span.start_time_unix_nano = 0
    span.end_time_unix_nano = 0
    call = extract_span(span)
    assert call is not None
    assert (call.start_ns, call.timestamp_ns, call.duration_ns) == (NOW_NS, NOW_NS, 0)
    assert usage_flags(call) == ["timestamp_missing"]


@pytest.mark.parametrize("start_ns", [0, SPAN_START_NS + 5_000_000_000, 5, 946_684_799_999_999_999])
def test_missing_late_or_implausible_start_uses_the_end(start_ns: int) -> None:
    # Prices are looked up at the start: a start in 1970 would price a 2026 call at the catalog's first price.
    span = make_span(chat_attributes(), start_ns=SPAN_START_NS)
    span.start_time_unix_nano = start_ns
    call = extract_span(span)
    assert call is not None
    end = SPAN_START_NS + 1_000_000_000
    assert (call.start_ns, call.timestamp_ns, call.duration_ns) == (end, end, 0)


@pytest.mark.parametrize("end_ns", [1, 946_684_799_999_999_999, 7_258_118_400_000_000_000, 2**63 - 1])
def test_end_time_outside_2000_to_2199_is_refused(end_ns: int) -> None:
    span = make_span(chat_attributes())
    span.start_time_unix_nano = 0
    span.end_time_unix_nano = end_ns
    with pytest.raises(InvalidSpanError) as caught:
        extract_span(span)
    assert str(caught.value) == f"end time {end_ns} ns is outside 2000-2199"


# --- status ---------------------------------------------------------------------------------------------


def test_error_status_with_error_type() -> None:
    call = call_from(chat_attributes(**{"error.type": "RateLimitError"}), error=True)
    assert (call.status, call.error_type) == ("error", "RateLimitError")


def test_error_status_without_error_type_uses_the_status_message() -> None:
    span = make_span(chat_attributes(), error=True)
    span.status.message = "upstream timed out"
    call = extract_span(span)
    assert call is not None
    assert (call.status, call.error_type) == ("error", "upstream timed out")
    span.status.message = ""
    call = extract_span(span)
    assert call is not None
    assert (call.status, call.error_type) == ("error", "error")


def test_error_type_alone_marks_an_error() -> None:
    call = call_from(chat_attributes(**{"error.type": "  timeout  "}))
    assert (call.status, call.error_type) == ("error", "timeout")
    assert call_from(chat_attributes()).status == "ok"


# --- normalization rules ----------------------------------------------------------------------------------


def test_reasoning_is_a_subset_of_output() -> None:
    call = call_from(chat_attributes(**{"gen_ai.usage.output_tokens": 1000, "gen_ai.usage.reasoning_tokens": 600}))
    assert tokens(call) == Tokens(1200, 0, 0, 0, 1000, 600)
    assert usage_flags(call) == []


def test_reasoning_larger_than_output_is_added_and_flagged() -> None:
    call = call_from(chat_attributes(**{"gen_ai.usage.output_tokens": 300, "gen_ai.usage.reasoning_tokens": 600}))
    assert tokens(call) == Tokens(1200, 0, 0, 0, 900, 600)
    assert usage_flags(call) == ["reasoning_exceeds_output"]


def test_exclusive_anthropic_counts_from_an_unknown_emitter_are_inferred() -> None:
    call = call_from(anthropic_attributes(50), UNKNOWN_EMITTER)
    assert tokens(call) == Tokens(50, 2000, 500, 0, 400, 0)
    assert usage_flags(call) == ["cache_exclusive_inferred"]


def test_claude_model_counts_as_anthropic_whatever_the_provider() -> None:
    attributes = {**anthropic_attributes(50), "gen_ai.provider.name": "aws.bedrock"}
    attributes["gen_ai.request.model"] = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    del attributes["gen_ai.response.model"]
    call = call_from(attributes, UNKNOWN_EMITTER)
    assert tokens(call) == Tokens(50, 2000, 500, 0, 400, 0)
    assert usage_flags(call) == ["cache_exclusive_inferred"]


def test_inclusive_looking_anthropic_counts_from_an_unknown_emitter_are_split() -> None:
    call = call_from(anthropic_attributes(2550), UNKNOWN_EMITTER)
    assert tokens(call) == Tokens(50, 2000, 500, 0, 400, 0)
    assert usage_flags(call) == []


def test_openai_cache_larger_than_input_is_a_conflict() -> None:
    call = call_from(
        chat_attributes(**{"gen_ai.usage.input_tokens": 500, "gen_ai.usage.cache_read.input_tokens": 1000})
    )
    assert tokens(call) == Tokens(500, 1000, 0, 0, 300, 0)
    assert usage_flags(call) == ["cache_convention_conflict"]


def test_inclusive_anthropic_emitter_reporting_too_little_input_is_a_conflict() -> None:
    call = call_from(anthropic_attributes(50), OPENLLMETRY_ANTHROPIC)
    assert tokens(call) == Tokens(50, 2000, 500, 0, 400, 0)
    assert usage_flags(call) == ["cache_convention_conflict"]


def test_one_hour_cache_writes_are_a_subset_of_writes() -> None:
    attributes = anthropic_attributes(2550, **{"gen_ai.usage.cache_creation.ephemeral_1h_input_tokens": 300})
    call = call_from(attributes, OPENLLMETRY_ANTHROPIC)
    assert tokens(call) == Tokens(50, 2000, 500, 300, 400, 0)
    assert usage_flags(call) == []


def test_one_hour_cache_writes_without_a_write_total() -> None:
    attributes = {
        **chat_attributes(),
        "gen_ai.provider.name": "anthropic",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.cache_write.1h.input_tokens": 400,
    }
    call = call_from(attributes, OPENLLMETRY_ANTHROPIC)
    assert tokens(call) == Tokens(600, 0, 400, 400, 300, 0)


def test_one_hour_cache_writes_above_the_write_total_are_capped_and_flagged() -> None:
    attributes = anthropic_attributes(2550, **{"gen_ai.usage.cache_creation.ephemeral_1h_input_tokens": 900})
    call = call_from(attributes, OPENLLMETRY_ANTHROPIC)
    assert tokens(call) == Tokens(50, 2000, 500, 500, 400, 0)
    assert usage_flags(call) == ["cache_write_1h_exceeds_cache_write"]


@pytest.mark.parametrize(
    ("total", "flags"),
    [
        (1500, []),  # inclusive input + output
        (1501, ["total_mismatch"]),
        (1499, ["total_mismatch"]),
        (0, ["total_mismatch"]),
    ],
)
def test_total_is_checked(total: int, flags: list[str]) -> None:
    call = call_from(chat_attributes(**{"gen_ai.usage.total_tokens": total}))
    assert tokens(call) == Tokens(1200, 0, 0, 0, 300, 0)
    assert usage_flags(call) == flags


def test_total_of_exclusive_counts_is_consistent() -> None:
    # OpenLIT's exclusive counts: 50 + 400 as reported, or 2550 + 400 with the cache: both agree.
    for total in (450, 2950):
        call = call_from(anthropic_attributes(50, **{"gen_ai.usage.total_tokens": total}), OPENLIT)
        assert usage_flags(call) == []
    call = call_from(anthropic_attributes(50, **{"gen_ai.usage.total_tokens": 999}), OPENLIT)
    assert usage_flags(call) == ["total_mismatch"]


def test_input_from_total_when_input_is_missing() -> None:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "llm.usage.total_tokens": 1500,
        "gen_ai.usage.completion_tokens": 300,
        "gen_ai.usage.prompt_tokens_details.cached_tokens": 1000,
    }
    call = call_from(attributes)
    assert tokens(call) == Tokens(200, 1000, 0, 0, 300, 0)
    assert usage_flags(call) == ["input_from_total"]


def test_total_smaller_than_output_gives_no_input() -> None:
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.usage.total_tokens": 100, "gen_ai.usage.output_tokens": 300}
    call = call_from(attributes)
    assert tokens(call) == Tokens(0, 0, 0, 0, 300, 0)
    assert usage_flags(call) == ["total_mismatch"]


@pytest.mark.parametrize(
    ("raw", "provider"),
    [
        ("openai", "openai"),
        ("  OpenAI ", "openai"),
        ("openai.responses", "openai"),
        ("openai.chat", "openai"),
        ("Anthropic", "anthropic"),
        ("anthropic.messages", "anthropic"),
        ("AWS", "aws.bedrock"),
        ("aws.bedrock", "aws.bedrock"),
        ("amazon-bedrock", "aws.bedrock"),
        ("az.ai.inference", "azure.ai.inference"),
        ("az.ai.openai", "azure.ai.openai"),
        ("azure_openai", "azure.ai.openai"),
        ("google.generative-ai", "gcp.gemini"),
        ("gemini", "gcp.gemini"),
        ("vertex_ai", "gcp.vertex_ai"),
        ("google.vertex", "gcp.vertex_ai"),
        ("mistral", "mistral_ai"),
        ("MistralAI", "mistral_ai"),
        ("xai", "x_ai"),
        ("ibm.watsonx.ai", "ibm.watsonx.ai"),
        ("acme.llm", "acme.llm"),  # unknown providers are kept as sent (the price book says it cannot price them)
    ],
)
def test_provider_aliases(raw: str, provider: str) -> None:
    assert call_from(chat_attributes(**{"gen_ai.provider.name": raw})).provider == provider


def test_long_text_values_are_cut() -> None:
    call = call_from(chat_attributes(**{"gen_ai.request.model": "m" * 500, "gen_ai.response.id": " r "}))
    assert (call.request_model, call.response_id) == ("m" * 200, "r")


# --- invariants over any counts ---------------------------------------------------------------------------

COUNT = st.integers(min_value=0, max_value=MAX_TOKENS)
SCOPES = [OPENLLMETRY_OPENAI, OPENLLMETRY_ANTHROPIC, OPENLIT, AI_SDK_5, AI_SDK_6, PYDANTIC_AI, UNKNOWN_EMITTER]
USAGE_KEYS = {
    "input": "gen_ai.usage.input_tokens",
    "output": "gen_ai.usage.output_tokens",
    "total": "gen_ai.usage.total_tokens",
    "cache_read": "gen_ai.usage.cache_read.input_tokens",
    "cache_write": "gen_ai.usage.cache_creation.input_tokens",
    "cache_write_1h": "gen_ai.usage.cache_creation.ephemeral_1h_input_tokens",
    "reasoning": "gen_ai.usage.reasoning.output_tokens",
}


@settings(max_examples=400, derandomize=True, deadline=None, database=None)
@given(
    counts=st.dictionaries(st.sampled_from(sorted(USAGE_KEYS)), COUNT, min_size=1),
    scope=st.sampled_from(SCOPES),
    provider=st.sampled_from(["openai", "anthropic", "gcp.gemini"]),
)
def test_tokens_are_never_negative_doubled_or_lost(
    counts: dict[str, int], scope: tuple[str, str], provider: str
) -> None:
    model = "claude-sonnet-4-5" if provider == "anthropic" else "gpt-4o"
    attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider}
    attributes["gen_ai.request.model"] = model
    attributes.update({USAGE_KEYS[field]: value for field, value in counts.items()})
    call = call_from(attributes, scope)

    assert min(tokens(call)) >= 0
    assert call.reasoning_tokens <= call.output_tokens
    assert call.cache_write_1h_tokens <= call.cache_write_tokens
    assert call.cache_read_tokens == counts.get("cache_read", 0)
    assert call.reasoning_tokens == counts.get("reasoning", 0)
    output = counts.get("output", 0)
    if call.reasoning_tokens > output:
        assert call.output_tokens == output + call.reasoning_tokens
        assert "reasoning_exceeds_output" in usage_flags(call)
    else:
        assert call.output_tokens == output
        assert "reasoning_exceeds_output" not in usage_flags(call)
    # The prompt is the reported input (inclusive) or the input plus its cache parts (exclusive); nothing else.
    if "input" in counts:
        reported = counts["input"]
    elif counts.get("total", -1) >= output:
        reported = counts["total"] - output
    else:
        reported = 0
    cached = call.cache_read_tokens + call.cache_write_tokens
    assert call.prompt_tokens in (reported, reported + cached)
    if call.prompt_tokens == reported + cached and cached:
        assert call.input_tokens == reported
    known = {
        "input_from_total",
        "cache_write_1h_exceeds_cache_write",
        "cache_exclusive_inferred",
        "cache_convention_conflict",
        "reasoning_exceeds_output",
        "total_mismatch",
    }
    assert set(usage_flags(call)) <= known
    assert len(usage_flags(call)) == len(set(usage_flags(call)))
