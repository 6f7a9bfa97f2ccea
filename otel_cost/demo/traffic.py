"""Realistic GenAI traffic through the real OpenTelemetry SDK and OTLP/gRPC exporter.

Six services, each instrumented the way a real library would (scope names, attribute dialects):

| service             | team (how it says so)        | what it does                                              |
|---------------------|------------------------------|-----------------------------------------------------------|
| checkout-assistant  | payments (resource `team`)   | OpenLLMetry: gpt-4o chats with cached prompts             |
| search-api          | search (resource `team`)     | openai-v2: embeddings + gpt-4o-mini answers (legacy names)|
| support-bot         | support (resource `team`)    | an agent: invoke_agent span with summed usage, OpenLLMetry|
|                     |                              | anthropic span with the SDK's own span nested inside      |
| doc-pipeline        | data-platform                | runaway agent `doc-triage`: one trace retrying            |
|                     |                              | claude-opus-4-1 on the same document, failures included   |
| labs-prototype      | (none: unattributed)         | Vercel AI SDK: gemini-2.5-flash, aggregate + doGenerate   |
| research-notebook   | research                     | OpenInference: a self-hosted model no catalog prices      |
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, set_span_in_context

from ..errors import OtelCostError

__all__ = ["DemoSummary", "run_demo"]

_MINUTE_NS = 60 * 1_000_000_000


@dataclass
class DemoSummary:
    calls: int = 0
    spans: int = 0
    failed_spans: int = 0
    by_service: dict[str, int] = field(default_factory=dict)


class _CountingExporter(SpanExporter):
    """The real OTLP exporter, with a count of what it delivered and what it could not."""

    def __init__(self, inner: SpanExporter, summary: DemoSummary) -> None:
        self._inner = inner
        self._summary = summary

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        if result == SpanExportResult.SUCCESS:
            self._summary.spans += len(spans)
        else:
            self._summary.failed_spans += len(spans)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _Clock:
    """Spreads calls over the last hour so the per-minute rollups show a curve."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._now = time.time_ns()

    def start(self) -> int:
        return self._now - self._rng.randint(1, 55) * _MINUTE_NS - self._rng.randint(0, _MINUTE_NS)


def _span(
    tracer: Tracer,
    name: str,
    start_ns: int,
    duration_ms: int,
    attributes: dict[str, Any],
    *,
    parent: Any = None,
    kind: SpanKind = SpanKind.CLIENT,
    error: str | None = None,
    evaluation: str | None = None,
) -> Any:
    context = set_span_in_context(parent) if parent is not None else None
    span = tracer.start_span(name, context=context, kind=kind, start_time=start_ns, attributes=attributes)
    if evaluation:  # a judge's verdict on the answer: an outcome for cost per accepted result
        span.add_event(
            "gen_ai.evaluation.result",
            {"gen_ai.evaluation.name": "answer_helpful", "gen_ai.evaluation.score.label": evaluation},
            timestamp=start_ns + duration_ms * 1_000_000,
        )
    if error:
        span.set_attribute("error.type", error)
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=start_ns + duration_ms * 1_000_000)
    return span


def _checkout(tracer: Tracer, rng: random.Random, clock: _Clock) -> int:
    start = clock.start()
    prompt = rng.randint(900, 4000)
    cached = rng.choice([0, prompt // 2, prompt - 200])
    _span(
        tracer,
        "openai.chat",
        start,
        rng.randint(400, 2500),
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": prompt,
            "gen_ai.usage.cache_read.input_tokens": cached,
            "gen_ai.usage.output_tokens": rng.randint(80, 600),
            "app.feature": "checkout-help",
            # content is opt-in in real instrumentation; otel-cost drops it before storage
            "gen_ai.prompt.0.content": "Where is my order #1042?",
        },
        evaluation="pass" if prompt % 4 else "fail",  # from the draws already made: the demo's figures stay
    )
    return 1


def _search(tracer: Tracer, rng: random.Random, clock: _Clock) -> int:
    start = clock.start()
    _span(
        tracer,
        "embeddings text-embedding-3-small",
        start,
        rng.randint(30, 120),
        {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.usage.input_tokens": rng.randint(200, 2000),
            "app.feature": "semantic-search",
        },
    )
    _span(
        tracer,
        "chat gpt-4o-mini",
        start + 200_000_000,
        rng.randint(300, 1500),
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.prompt_tokens": rng.randint(1500, 6000),  # legacy semconv names
            "gen_ai.usage.completion_tokens": rng.randint(100, 500),
            "app.feature": "answer-synthesis",
        },
    )
    return 2


def _support(tracers: dict[str, Tracer], rng: random.Random, clock: _Clock) -> int:
    start = clock.start()
    cache_read, cache_write, fresh = rng.randint(2000, 9000), rng.choice([0, 0, 1500]), rng.randint(50, 400)
    output = rng.randint(150, 900)
    inclusive_input = fresh + cache_read + cache_write
    agent = tracers["agent"].start_span(
        "invoke_agent ticket-triage",
        kind=SpanKind.INTERNAL,
        start_time=start,
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "ticket-triage"},
    )
    outer = tracers["openllmetry"].start_span(
        "anthropic.chat",
        context=set_span_in_context(agent),
        kind=SpanKind.CLIENT,
        start_time=start + 1_000_000,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.response.model": "claude-sonnet-4-5-20250929",
            "gen_ai.usage.input_tokens": inclusive_input,
            "gen_ai.usage.cache_read.input_tokens": cache_read,
            "gen_ai.usage.cache_creation.input_tokens": cache_write,
            "gen_ai.usage.output_tokens": output,
            "gen_ai.agent.name": "ticket-triage",
            "app.feature": "ticket-triage",
        },
    )
    # The Anthropic SDK's own span for the same HTTP call, nested inside: billed once, not twice.
    _span(
        tracers["anthropic_sdk"],
        "chat claude-sonnet-4-5",
        start + 2_000_000,
        1800,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.response.model": "claude-sonnet-4-5-20250929",
            "gen_ai.usage.input_tokens": inclusive_input,
            "gen_ai.usage.cache_read.input_tokens": cache_read,
            "gen_ai.usage.cache_creation.input_tokens": cache_write,
            "gen_ai.usage.output_tokens": output,
        },
        parent=outer,
    )
    outer.end(end_time=start + 1_900_000_000)
    agent.set_attribute("gen_ai.usage.input_tokens", inclusive_input)  # the agent's sum: never billed again
    agent.set_attribute("gen_ai.usage.output_tokens", output)
    # Whether the customer accepted the triage: the result that cost per accepted result divides by.
    agent.set_attribute("otel_cost.outcome", "accepted" if cache_read % 5 else "rejected")
    agent.end(end_time=start + 2_000_000_000)
    return 1


def _runaway(tracer: Tracer, rng: random.Random, clock: _Clock, calls: int) -> int:
    """`doc-triage` stuck on one document: every retry calls the most expensive model again."""
    start = clock.start()
    root = tracer.start_span(
        "invoke_agent doc-triage",
        kind=SpanKind.INTERNAL,
        start_time=start,
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "doc-triage"},
    )
    at = start
    for attempt in range(calls):
        failed = attempt % 3 == 2
        _span(
            tracer,
            "ChatAnthropic",
            at,
            rng.randint(2000, 9000),
            {
                "openinference.span.kind": "LLM",
                "llm.provider": "anthropic",
                "llm.model_name": "claude-opus-4-1",
                "llm.token_count.prompt": 0 if failed else rng.randint(30_000, 60_000),
                "llm.token_count.completion": 0 if failed else rng.randint(1000, 4000),
                "gen_ai.agent.name": "doc-triage",
                "app.feature": "contract-intake",
                "session.id": "doc-7731",
            },
            parent=root,
            error="overloaded_error" if failed else None,
        )
        at += 10_000_000_000
    root.end(end_time=at)
    return calls


def _labs(tracer: Tracer, rng: random.Random, clock: _Clock) -> int:
    start = clock.start()
    outer = tracer.start_span(
        "ai.generateText",
        kind=SpanKind.INTERNAL,
        start_time=start,
        attributes={
            "ai.operationId": "ai.generateText",
            "ai.model.provider": "google.generative-ai",
            "ai.model.id": "gemini-2.5-flash",
        },
    )
    prompt, completion = rng.randint(500, 3000), rng.randint(50, 400)
    _span(
        tracer,
        "ai.generateText.doGenerate",
        start + 1_000_000,
        rng.randint(300, 1200),
        {
            "ai.operationId": "ai.generateText.doGenerate",
            "ai.model.provider": "google.generative-ai",
            "ai.model.id": "gemini-2.5-flash",
            "ai.usage.inputTokens": prompt,
            "ai.usage.outputTokens": completion,
            "ai.telemetry.functionId": "summarize-notes",
        },
        parent=outer,
    )
    outer.set_attribute("ai.usage.inputTokens", prompt)  # the wrapper repeats the step's usage
    outer.set_attribute("ai.usage.outputTokens", completion)
    outer.end(end_time=start + 1_300_000_000)
    return 1


def _research(tracer: Tracer, rng: random.Random, clock: _Clock) -> int:
    _span(
        tracer,
        "LLM",
        clock.start(),
        rng.randint(500, 4000),
        {
            "openinference.span.kind": "LLM",
            "llm.provider": "vllm",
            "llm.model_name": "acme-llm-7b-instruct",
            "llm.token_count.prompt": rng.randint(500, 4000),
            "llm.token_count.completion": rng.randint(100, 800),
            "app.feature": "literature-review",
        },
    )
    return 1


def _check_listening(endpoint: str) -> None:
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    host, port = parts.hostname or "localhost", parts.port or 4317
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        raise OtelCostError(
            f"nothing answers at {host}:{port} ({exc.strerror or exc}): start `otel-cost serve` first, "
            "or pass --endpoint"
        ) from None


def run_demo(
    endpoint: str = "http://localhost:4317",
    calls: int = 200,
    seed: int = 7,
    headers: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> DemoSummary:
    """Send about `calls` model calls (plus their agent and wrapper spans) to `endpoint`."""
    _check_listening(endpoint)
    rng = random.Random(seed)
    clock = _Clock(rng)
    summary = DemoSummary()
    providers: list[TracerProvider] = []

    def provider_for(service: str, **resource: str) -> TracerProvider:
        exporter = _CountingExporter(OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers), summary)
        provider = TracerProvider(resource=Resource.create({"service.name": service, **resource}))
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
        providers.append(provider)
        return provider

    checkout = provider_for(
        "checkout-assistant",
        team="payments",
        cost_center="CC-1042",
        **{"deployment.environment.name": "prod"},
    )
    search = provider_for("search-api", team="search", **{"deployment.environment.name": "prod"})
    support = provider_for(
        "support-bot",
        **{"service.namespace": "support", "team": "support", "deployment.environment.name": "prod"},
    )
    docs = provider_for("doc-pipeline", team="data-platform", **{"deployment.environment.name": "prod"})
    labs = provider_for("labs-prototype", **{"deployment.environment.name": "dev"})
    research = provider_for("research-notebook", team="research", **{"deployment.environment.name": "dev"})

    openllmetry = "opentelemetry.instrumentation.openai.v1"
    checkout_tracer = checkout.get_tracer(openllmetry, "0.62.4")
    search_tracer = search.get_tracer("opentelemetry.instrumentation.openai_v2", "2.3b0")
    support_tracers = {
        "agent": support.get_tracer("support-bot.agents", "1.0.0"),
        "openllmetry": support.get_tracer("opentelemetry.instrumentation.anthropic", "0.62.4"),
        "anthropic_sdk": support.get_tracer("anthropic", "0.75.0"),
    }
    docs_tracer = docs.get_tracer("openinference.instrumentation.langchain", "0.1.50")
    labs_tracer = labs.get_tracer("ai", "6.0.3")
    research_tracer = research.get_tracer("openinference.instrumentation.openai", "0.1.30")

    runaway_calls = max(3, calls * 15 // 100)
    mix: list[tuple[str, int, Callable[[], int]]] = [
        ("checkout-assistant", 20, lambda: _checkout(checkout_tracer, rng, clock)),
        ("search-api", 30, lambda: _search(search_tracer, rng, clock)),
        ("support-bot", 20, lambda: _support(support_tracers, rng, clock)),
        ("labs-prototype", 10, lambda: _labs(labs_tracer, rng, clock)),
        ("research-notebook", 5, lambda: _research(research_tracer, rng, clock)),
    ]
    weights = [weight for _, weight, _ in mix]
    made = _runaway(docs_tracer, rng, clock, runaway_calls)
    summary.by_service["doc-pipeline"] = made
    if progress:
        progress(made)
    first_round = list(mix)  # every story at least once, then the weighted mix
    while made < calls:
        service, _, make = first_round.pop(0) if first_round else rng.choices(mix, weights=weights)[0]
        count = make()
        made += count
        summary.by_service[service] = summary.by_service.get(service, 0) + count
        if progress:
            progress(count)
    for provider in providers:
        provider.force_flush()
        provider.shutdown()
    summary.calls = made
    return summary
