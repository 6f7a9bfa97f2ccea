"""Ingest benchmark: drives a running `otel-cost serve` over OTLP/gRPC and prints ONE JSON object.

    .venv/bin/python bench/ingest.py [--endpoint localhost:4317] [--api http://localhost:8318] [--spans N]

It starts nothing: `bench/run.sh` (`make bench`) starts a server on a fresh store and runs this.

Measured, all in one run on the same payloads:
- `spans_per_second`: end to end, from the first export sent until every export is acknowledged AND a
  count over the API shows every span of this run stored (exports of 512 spans, the OTel SDK
  BatchSpanProcessor default, several in flight so the server's group-commit writer batches).
- `decode_ceiling_spans_per_second`: one process that only parses each serialized request
  (`ExportTraceServiceRequest.FromString`) and reads every span's attributes into a dict. `ratio` is
  the first over the second.
- `peak_rss_mb`: the server's peak resident set, from its `/metrics`: the receiving process plus its
  pipeline worker processes (`peak_rss_mb_main`, `peak_rss_mb_workers`).
- `pricing_speedup`: per-call cost of `PriceBook().price(call)` (warm rate-card cache) against
  `genai_prices.calc_price` called directly, on the same calls, with identical results checked.

Human progress goes to stderr. Exit status is non-zero on any failure (an export failed, the stored
count differs from the spans sent, a price differs). `make -s bench` keeps make's own lines off stdout.
Extra keys help read a result: export latency, store inserts and rows per insert (from the server's
/metrics), and with --server-pid the server's CPU per thread during the run. bench/profile_server.py
runs the server in process under cProfile to show where that time goes.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SPANS_PER_REQUEST = 512  # the OTel SDK BatchSpanProcessor's max_export_batch_size
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
# A fixed instant (2026-11-30T...Z) for the pricing comparison, so prices are reproducible.
PRICING_START_NS = 1_795_991_404_000_000_000


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Realistic OTLP payloads
# --------------------------------------------------------------------------------------------------


def _any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(_any_value(item) for item in value)
        return out
    return AnyValue(string_value=str(value))


def _key_values(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=_any_value(value)) for key, value in attributes.items()]


def _response_id(prefix: str, raw: bytes, length: int) -> str:
    # Alphanumeric like real ids; derived from random bytes (cheap, unique enough).
    text = base64.b64encode(raw).decode().replace("+", "x").replace("/", "Z").rstrip("=")
    return prefix + text[:length]


def _tokens(rng: random.Random, low: int, high: int) -> int:
    """Log-uniform: many small calls, a long tail of large ones."""
    return int(low * (high / low) ** rng.random())


@dataclass
class SpanDraft:
    """One span: its constant part (serialized once per distinct template) and its varying attributes."""

    template: bytes
    values: list[tuple[str, Any]]
    duration_ns: int


@dataclass
class Dialect:
    """One instrumentation library as it really emits spans: scope, span name, attribute names."""

    scope: str
    version: str
    weight: float
    build: Callable[[random.Random, Callable[[tuple[Any, ...], str, dict[str, Any]], bytes]], SpanDraft]


def _template_cache() -> Callable[[tuple[Any, ...], str, dict[str, Any]], bytes]:
    cache: dict[tuple[Any, ...], bytes] = {}

    def template(key: tuple[Any, ...], name: str, constant: dict[str, Any]) -> bytes:
        found = cache.get(key)
        if found is None:
            span = Span(name=name, kind=Span.SPAN_KIND_CLIENT, attributes=_key_values(constant))
            found = cache[key] = span.SerializeToString()
        return found

    return template


def _openllmetry_openai(rng: random.Random, template: Callable[..., bytes]) -> SpanDraft:
    """OpenLLMetry (traceloop) openai chat: gpt-4o, gpt-4o-mini, gpt-5 with reasoning and service tiers."""
    request_model, response_model = rng.choices(
        [("gpt-4o", "gpt-4o-2024-08-06"), ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"), ("gpt-5", "gpt-5-2025-08-07")],
        weights=[5, 3, 2],
    )[0]
    streaming = rng.random() < 0.3
    finish = rng.choices(["stop", "tool_calls", "length"], weights=[85, 12, 3])[0]
    constant: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "llm.request.type": "chat",
        "gen_ai.request.model": request_model,
        "gen_ai.is_streaming": streaming,
        "gen_ai.openai.api_base": "https://api.openai.com/v1/",
        "gen_ai.response.model": response_model,
        "gen_ai.response.finish_reasons": [finish],
    }
    tier = ""
    if request_model == "gpt-5":
        tier = rng.choices(["default", "flex", "priority"], weights=[6, 3, 1])[0]
        constant["gen_ai.openai.response.service_tier"] = tier
        constant["gen_ai.request.reasoning_effort"] = "medium"
    else:
        constant["gen_ai.request.temperature"] = 0.7 if streaming else 0.2
    prompt = _tokens(rng, 200, 60_000)
    cached = (prompt // 128) * 128 if rng.random() < 0.4 and prompt > 2048 else 0
    output = _tokens(rng, 20, 4_000)
    reasoning = min(output, _tokens(rng, 64, 8_000)) if request_model == "gpt-5" else 0
    values: list[tuple[str, Any]] = [
        ("gen_ai.response.id", _response_id("chatcmpl-", rng.randbytes(24), 29)),
        ("gen_ai.usage.total_tokens", prompt + output),
        ("gen_ai.usage.output_tokens", output),
        ("gen_ai.usage.input_tokens", prompt),
        ("gen_ai.usage.cache_read.input_tokens", cached),
        ("gen_ai.usage.reasoning_tokens", reasoning),
    ]
    key = ("openllmetry-openai", request_model, streaming, finish, tier)
    return SpanDraft(template(key, "openai.chat", constant), values, _tokens(rng, 300_000_000, 30_000_000_000))


def _openllmetry_anthropic(rng: random.Random, template: Callable[..., bytes]) -> SpanDraft:
    """OpenLLMetry anthropic: inclusive input count, cache reads, cache writes (some with a 1h TTL)."""
    request_model, response_model = rng.choices(
        [
            ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
            ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
            ("claude-opus-4-1", "claude-opus-4-1-20250805"),
        ],
        weights=[6, 3, 1],
    )[0]
    agent = rng.choice(["", "", "doc-triage", "refund-agent", "code-review"])
    finish = rng.choices(["end_turn", "tool_use", "max_tokens"], weights=[80, 17, 3])[0]
    max_tokens = rng.choice([1024, 4096, 8192])
    constant: dict[str, Any] = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.operation.name": "chat",
        "llm.request.type": "chat",
        "gen_ai.request.model": request_model,
        "gen_ai.request.max_tokens": max_tokens,
        "gen_ai.request.temperature": 1.0,
        "gen_ai.is_streaming": bool(agent),
        "gen_ai.response.model": response_model,
        "gen_ai.response.finish_reasons": [finish],
    }
    if agent:
        constant["gen_ai.agent.name"] = agent
    uncached = _tokens(rng, 50, 20_000)
    cache_read = _tokens(rng, 1_024, 150_000) if rng.random() < 0.6 else 0
    cache_write = _tokens(rng, 1_024, 30_000) if rng.random() < 0.3 else 0
    output = _tokens(rng, 20, max_tokens)
    prompt = uncached + cache_read + cache_write
    values: list[tuple[str, Any]] = [
        ("gen_ai.response.id", _response_id("msg_01", rng.randbytes(18), 22)),
        ("gen_ai.usage.input_tokens", prompt),
        ("gen_ai.usage.output_tokens", output),
        ("gen_ai.usage.total_tokens", prompt + output),
        ("gen_ai.usage.cache_read.input_tokens", cache_read),
        ("gen_ai.usage.cache_creation.input_tokens", cache_write),
    ]
    if cache_write and rng.random() < 0.3:
        values.append(("gen_ai.usage.cache_creation.ephemeral_1h_input_tokens", cache_write))
    if agent:
        values.append(("gen_ai.conversation.id", str(uuid.UUID(bytes=rng.randbytes(16)))))
    key = ("openllmetry-anthropic", request_model, agent, finish, max_tokens)
    return SpanDraft(template(key, "anthropic.chat", constant), values, _tokens(rng, 500_000_000, 60_000_000_000))


def _openai_v2_chat(rng: random.Random, template: Callable[..., bytes]) -> SpanDraft:
    """The official opentelemetry-instrumentation-openai-v2: `gen_ai.system`, server.address/port."""
    finish = rng.choices(["stop", "tool_calls"], weights=[9, 1])[0]
    constant: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.seed": 42,
        "server.address": "api.openai.com",
        "server.port": 443,
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.finish_reasons": [finish],
        "gen_ai.openai.response.service_tier": "default",
        "gen_ai.openai.response.system_fingerprint": "fp_0aa8d3e20b",
    }
    prompt = _tokens(rng, 100, 16_000)
    output = _tokens(rng, 10, 2_000)
    values: list[tuple[str, Any]] = [
        ("gen_ai.response.id", _response_id("chatcmpl-", rng.randbytes(24), 29)),
        ("gen_ai.usage.input_tokens", prompt),
        ("gen_ai.usage.output_tokens", output),
    ]
    key = ("openai-v2-chat", finish)
    return SpanDraft(template(key, "chat gpt-4o-mini", constant), values, _tokens(rng, 200_000_000, 20_000_000_000))


def _openai_v2_embeddings(rng: random.Random, template: Callable[..., bytes]) -> SpanDraft:
    feature = rng.choice(["semantic-search", "dedup", "rag-index"])
    constant: dict[str, Any] = {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "text-embedding-3-small",
        "gen_ai.request.encoding_formats": ["float"],
        "server.address": "api.openai.com",
        "server.port": 443,
        "gen_ai.response.model": "text-embedding-3-small",
        "gen_ai.embeddings.dimension.count": 1536,
        "app.feature": feature,
    }
    values: list[tuple[str, Any]] = [("gen_ai.usage.input_tokens", _tokens(rng, 8, 8_000))]
    key = ("openai-v2-embeddings", feature)
    return SpanDraft(
        template(key, "embeddings text-embedding-3-small", constant), values, _tokens(rng, 30_000_000, 2_000_000_000)
    )


def _openlit_gemini(rng: random.Random, template: Callable[..., bytes]) -> SpanDraft:
    """OpenLIT on Gemini: `gen_ai.system` gemini, its own cost claim, sometimes prompts over 200k (pro tier 2)."""
    model = rng.choices(["gemini-2.5-pro", "gemini-2.5-flash"], weights=[4, 6])[0]
    streaming = rng.random() < 0.5
    constant: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "gemini",
        "gen_ai.request.model": model,
        "gen_ai.response.model": model,
        "server.address": "generativelanguage.googleapis.com",
        "server.port": 443,
        "gen_ai.sdk.version": "1.35.4",
        "gen_ai.is_streaming": streaming,
        "gen_ai.response.finish_reasons": ["STOP"],
    }
    long_context = model == "gemini-2.5-pro" and rng.random() < 0.05
    prompt = _tokens(rng, 200_001, 900_000) if long_context else _tokens(rng, 100, 100_000)
    reasoning = _tokens(rng, 100, 6_000)
    output = reasoning + _tokens(rng, 20, 3_000)
    values: list[tuple[str, Any]] = [
        ("gen_ai.usage.input_tokens", prompt),
        ("gen_ai.usage.output_tokens", output),
        ("gen_ai.usage.reasoning_tokens", reasoning),
        ("gen_ai.usage.total_tokens", prompt + output),
        ("gen_ai.usage.cost", round(prompt * 1.25e-6 + output * 1e-5, 6)),
        ("gen_ai.server.ttft", round(rng.uniform(0.2, 3.0), 3)),
    ]
    key = ("openlit-gemini", model, streaming)
    return SpanDraft(template(key, f"chat {model}", constant), values, _tokens(rng, 500_000_000, 90_000_000_000))


DIALECTS = (
    Dialect("opentelemetry.instrumentation.openai.v1", "0.62.4", 35, _openllmetry_openai),
    Dialect("opentelemetry.instrumentation.anthropic", "0.62.4", 25, _openllmetry_anthropic),
    Dialect("opentelemetry.instrumentation.openai_v2", "2.1b0", 12, _openai_v2_chat),
    Dialect("opentelemetry.instrumentation.openai_v2", "2.1b0", 15, _openai_v2_embeddings),
    Dialect("openlit.otel.tracing", "1.35.4", 13, _openlit_gemini),
)

SERVICES = (
    ("checkout-assistant", "payments", "prod"),
    ("search-api", "search", "prod"),
    ("support-bot", "support", "prod"),
    ("doc-triage", "platform", "prod"),
    ("recsys-embedder", "ml", "staging"),
    ("code-review-bot", "devex", "prod"),
)


def resource_attributes(service: str, team: str, environment: str, run_id: str) -> dict[str, Any]:
    return {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": "1.38.0",
        "service.name": service,
        "service.version": "2026.11.3",
        "service.instance.id": run_id,  # the benchmark counts its own rows by this
        "team": team,
        "deployment.environment.name": environment,
        "host.name": f"{service}-7f9c8d-{zlib.crc32(service.encode()) % 100_000:05d}",
    }


def _add_values(span: Span, values: Sequence[tuple[str, Any]]) -> None:
    attributes = span.attributes
    for key, value in values:
        kv = attributes.add()
        kv.key = key
        kind = type(value)
        if kind is int:
            kv.value.int_value = value
        elif kind is str:
            kv.value.string_value = value
        elif kind is float:
            kv.value.double_value = value
        elif kind is bool:
            kv.value.bool_value = value
        else:
            kv.value.CopyFrom(_any_value(value))


def build_payloads(total_spans: int, run_id: str, seed: int, spans_per_request: int) -> list[bytes]:
    """Serialized ExportTraceServiceRequests: one resource (service) per export, one ScopeSpans per
    instrumentation library, traces of 1-4 model calls under an application span (not sent)."""
    rng = random.Random(seed)
    template = _template_cache()
    weights = [dialect.weight for dialect in DIALECTS]
    now_ns = time.time_ns()
    payloads: list[bytes] = []
    remaining = total_spans
    while remaining > 0:
        count = min(spans_per_request, remaining)
        remaining -= count
        service, team, environment = rng.choice(SERVICES)
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(_key_values(resource_attributes(service, team, environment, run_id)))
        by_dialect: dict[int, ScopeSpans] = {}
        ids = os.urandom(count * 8)  # unique span ids; trace ids below
        trace_id, parent_id, left_in_trace = b"", b"", 0
        for index in range(count):
            which = rng.choices(range(len(DIALECTS)), weights=weights)[0]
            scope_spans = by_dialect.get(which)
            if scope_spans is None:
                dialect = DIALECTS[which]
                scope_spans = by_dialect[which] = resource_spans.scope_spans.add()
                scope_spans.scope.name = dialect.scope
                scope_spans.scope.version = dialect.version
            if left_in_trace == 0:
                trace_id, parent_id, left_in_trace = os.urandom(16), os.urandom(8), rng.randint(1, 4)
            left_in_trace -= 1
            draft = DIALECTS[which].build(rng, template)
            span = scope_spans.spans.add()
            span.MergeFromString(draft.template)
            span.trace_id = trace_id
            span.span_id = ids[index * 8 : index * 8 + 8]
            span.parent_span_id = parent_id
            start = now_ns - rng.randint(0, 120_000_000_000) - draft.duration_ns
            span.start_time_unix_nano = start
            span.end_time_unix_nano = start + draft.duration_ns
            _add_values(span, draft.values)
        payloads.append(request.SerializeToString())
    return payloads


# --------------------------------------------------------------------------------------------------
# Decode ceiling
# --------------------------------------------------------------------------------------------------


def decode_only(payloads: Sequence[bytes]) -> int:
    """Parse every request and read every span's attributes into a dict; nothing else."""
    from_string = ExportTraceServiceRequest.FromString
    spans = 0
    for payload in payloads:
        request = from_string(payload)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attrs: dict[str, Any] = {}
                    for kv in span.attributes:
                        value = kv.value
                        attrs[kv.key] = getattr(value, value.WhichOneof("value"))
                    spans += 1
    return spans


def measure_decode(payloads: Sequence[bytes], repeats: int) -> tuple[float, list[float]]:
    seconds: list[float] = []
    spans = 0
    for _ in range(repeats):
        started = time.perf_counter()
        spans = decode_only(payloads)
        seconds.append(time.perf_counter() - started)
    return spans / min(seconds), seconds


# --------------------------------------------------------------------------------------------------
# The server: API helpers
# --------------------------------------------------------------------------------------------------


def http_get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def sql_scalar(api: str, query: str, timeout: float = 30) -> Any:
    body = json.dumps({"query": query, "format": "json"}).encode()
    request = urllib.request.Request(
        f"{api}/v1/sql", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        document = json.loads(response.read())
    return document["rows"][0][0]


def scrape_metrics(api: str) -> dict[str, float]:
    """Prometheus text -> {series (name plus labels): value}."""
    status, body = http_get(f"{api}/metrics")
    if status != 200:
        raise RuntimeError(f"GET {api}/metrics returned {status}")
    values: dict[str, float] = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            values[name] = float(value)
        except ValueError:
            continue
    return values


def count_run_rows(api: str, run_id: str) -> int:
    return int(
        sql_scalar(api, f"SELECT count() FROM requests WHERE resource_attributes['service.instance.id'] = '{run_id}'")
    )


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _children(pid: int) -> list[int]:
    """Direct child processes of `pid` (the server's pipeline workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.extend(int(child) for child in task.read_text().split())
        except OSError:
            continue
    return found


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread of `pid` and of its worker processes, keyed "tid:name"
    (workers' threads as "worker:tid:name") (Linux /proc)."""
    out = _thread_cpu(pid)
    for child in _children(pid):
        out.update({f"worker:{key}": value for key, value in _thread_cpu(child).items()})
    return out


def _thread_cpu(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    task_dir = Path(f"/proc/{pid}/task")
    if not task_dir.is_dir():
        return out
    for task in task_dir.iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[f"{task.name}:{name}"] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return out


def summarize_cpu(before: dict[str, float], after: dict[str, float], pid: int, seconds: float) -> dict[str, Any]:
    """Server CPU used during the timed phase, as cores busy, by thread (grouped by thread name)."""
    by_group: dict[str, float] = {}
    for key, value in after.items():
        worker = key.startswith("worker:")
        tid, _, name = key.removeprefix("worker:").partition(":")
        used = value - before.get(key, 0.0)
        group = "pipeline workers" if worker else "main (event loop)" if tid == str(pid) else name
        by_group[group] = by_group.get(group, 0.0) + used
    total = sum(by_group.values())
    ranked = sorted(((name, used) for name, used in by_group.items() if used >= 0.01), key=lambda item: -item[1])
    return {
        "cpu_seconds": round(total, 2),
        "cores_busy": round(total / seconds, 2) if seconds else None,
        "by_thread_cpu_seconds": {name: round(used, 2) for name, used in ranked},
    }


# --------------------------------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------------------------------


@dataclass
class SendStats:
    acknowledged: int = 0
    failed: int = 0
    retries: int = 0
    rejected_spans: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def send_all(
    endpoint: str, payloads: Sequence[bytes], concurrency: int, timeout: float, max_attempts: int = 30
) -> tuple[SendStats, float, float]:
    """Send every payload, `concurrency` in flight; retry UNAVAILABLE/RESOURCE_EXHAUSTED like an exporter.
    Returns (stats, start, end) in perf_counter seconds."""
    stats = SendStats()
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024), ("grpc.max_receive_message_length", 4 * 1024 * 1024)]
    channel = grpc.insecure_channel(endpoint, options=options)
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        export = channel.unary_unary(
            EXPORT_METHOD, request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString
        )
        next_index = iter(range(len(payloads))).__next__
        go = threading.Event()

        def worker() -> None:
            go.wait()
            while True:
                try:
                    index = next_index()
                except StopIteration:
                    return
                payload = payloads[index]
                for attempt in range(1, max_attempts + 1):
                    sent = time.perf_counter()
                    try:
                        response = export(payload, timeout=timeout)
                    except grpc.RpcError as exc:
                        code = exc.code()  # type: ignore[attr-defined]
                        if code in RETRYABLE and attempt < max_attempts:
                            with stats.lock:
                                stats.retries += 1
                            time.sleep(min(0.05 * attempt, 1.0))
                            continue
                        with stats.lock:
                            stats.failed += 1
                            if len(stats.errors) < 5:
                                stats.errors.append(f"export {index}: {code}: {exc.details()}")  # type: ignore[attr-defined]
                        break
                    with stats.lock:
                        stats.acknowledged += 1
                        stats.latencies.append(time.perf_counter() - sent)
                        if response.HasField("partial_success"):
                            stats.rejected_spans += response.partial_success.rejected_spans
                            if response.partial_success.error_message and len(stats.errors) < 5:
                                stats.errors.append(f"export {index}: {response.partial_success.error_message}")
                    break

        threads = [threading.Thread(target=worker, name=f"sender-{n}", daemon=True) for n in range(concurrency)]
        for thread in threads:
            thread.start()
        started = time.perf_counter()
        go.set()
        for thread in threads:
            thread.join()
        finished = time.perf_counter()
    finally:
        channel.close()
    return stats, started, finished


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --------------------------------------------------------------------------------------------------
# Pricing: the fast path against genai_prices.calc_price
# --------------------------------------------------------------------------------------------------


def pricing_calls(count: int, seed: int) -> list[Any]:
    """Realistic normalized calls (otel_cost.model.Call): uncached input, cache reads/writes, 1h writes,
    reasoning, service tiers, long-context prompts."""
    from otel_cost.model import Call

    rng = random.Random(seed)
    # (provider, request model, response model, service tiers, cache?, reasoning?, long-context share, weight)
    profiles: list[tuple[str, str, str, tuple[str, ...], bool, bool, float, int]] = [
        ("openai", "gpt-4o", "gpt-4o-2024-08-06", ("",), True, False, 0.0, 20),
        ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", ("",), True, False, 0.0, 15),
        ("openai", "text-embedding-3-small", "text-embedding-3-small", ("",), False, False, 0.0, 10),
        ("openai", "gpt-5", "gpt-5-2025-08-07", ("", "default", "flex", "priority"), True, True, 0.0, 12),
        ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", ("",), True, False, 0.03, 15),
        ("anthropic", "claude-opus-4-1", "claude-opus-4-1-20250805", ("",), True, False, 0.0, 5),
        ("anthropic", "claude-haiku-4-5", "claude-haiku-4-5-20251001", ("",), True, False, 0.0, 8),
        ("gcp.gemini", "gemini-2.5-pro", "gemini-2.5-pro", ("",), True, True, 0.1, 8),
        ("gcp.gemini", "gemini-2.5-flash", "gemini-2.5-flash", ("",), True, True, 0.0, 7),
    ]
    weights = [profile[-1] for profile in profiles]
    calls = []
    for _ in range(count):
        provider, request, response, tiers, cache, reasoning, long_share, _weight = rng.choices(profiles, weights)[0]
        call = Call()
        call.provider = provider
        call.operation = "embeddings" if "embedding" in request else "chat"
        call.request_model = request
        call.response_model = response
        call.service_tier = rng.choice(tiers)
        call.usage_reported = True
        call.start_ns = PRICING_START_NS
        call.timestamp_ns = PRICING_START_NS + 2_000_000_000
        if rng.random() < long_share:
            call.input_tokens = _tokens(rng, 200_001, 800_000)
        else:
            call.input_tokens = _tokens(rng, 20, 30_000)
        if cache and rng.random() < 0.5:
            call.cache_read_tokens = _tokens(rng, 1_024, 100_000)
        if cache and provider == "anthropic" and rng.random() < 0.3:
            call.cache_write_tokens = _tokens(rng, 1_024, 30_000)
            if rng.random() < 0.4:
                call.cache_write_1h_tokens = rng.randint(0, call.cache_write_tokens)
        if call.operation != "embeddings":
            call.output_tokens = _tokens(rng, 10, 4_000)
            if reasoning and rng.random() < 0.8:
                call.reasoning_tokens = _tokens(rng, 64, 8_000)
                call.output_tokens += call.reasoning_tokens
        calls.append(call)
    return calls


def best_of(repeats: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def measure_pricing(count: int, seed: int, fast_repeats: int, direct_repeats: int) -> dict[str, Any]:
    import genai_prices

    from otel_cost.pricing import PriceBook
    from otel_cost.pricing.catalog import find_model, pricing_provider_id, request_time, usage_for

    calls = pricing_calls(count, seed)
    book = PriceBook()
    price = book.price

    # Cold: the first pass builds one rate card per (provider, model, service tier, day).
    started = time.perf_counter()
    priced = [price(call) for call in calls]
    cold_seconds = time.perf_counter() - started

    # The reference each call is priced by: the first of (response model, request model) the catalog
    # knows for the call's provider, as the price book resolves it. Resolved once, outside the timing.
    refs: dict[tuple[str, str, str], tuple[str | None, str]] = {}
    for call in calls:
        key = (call.provider, call.response_model, call.request_model)
        if key not in refs:
            provider_id = pricing_provider_id(call.provider)
            for model_ref in dict.fromkeys(model for model in (call.response_model, call.request_model) if model):
                try:
                    find_model(provider_id, model_ref)
                except LookupError:
                    continue
                refs[key] = (provider_id, model_ref)
                break
            else:
                raise RuntimeError(f"no catalog model for {key}")
    direct_args = [(call, *refs[(call.provider, call.response_model, call.request_model)]) for call in calls]
    calc_price = genai_prices.calc_price

    def direct() -> list[Any]:
        return [
            calc_price(
                usage_for(call),
                model_ref,
                provider_id=provider_id,
                genai_request_timestamp=request_time(call),
                price_context={"service_tier": call.service_tier} if call.service_tier else None,
            )
            for call, provider_id, model_ref in direct_args
        ]

    def fast() -> None:
        for call in calls:
            price(call)

    def fast_with_decimal() -> None:
        for call in calls:
            price(call).cost  # noqa: B018 - materializing the Decimal is what is measured

    fast_seconds = best_of(fast_repeats, fast)
    fast_decimal_seconds = best_of(fast_repeats, fast_with_decimal)
    direct_seconds = float("inf")
    results: list[Any] = []
    for _ in range(direct_repeats):
        started = time.perf_counter()
        results = direct()
        direct_seconds = min(direct_seconds, time.perf_counter() - started)

    mismatches: list[str] = []
    for call, ours, theirs in zip(calls, priced, results, strict=True):
        if ours.priced and ours.cost == theirs.total_price and ours.priced_model == theirs.model.id:
            continue
        mismatches.append(
            f"{call.provider}/{call.response_model} tier={call.service_tier!r} in={call.input_tokens} "
            f"read={call.cache_read_tokens} write={call.cache_write_tokens}/{call.cache_write_1h_tokens} "
            f"out={call.output_tokens} reasoning={call.reasoning_tokens}: fast path {ours.cost} "
            f"({ours.priced_model or ours.reason}) != calc_price {theirs.total_price} ({theirs.model.id})"
        )
    cards: dict[tuple[Any, ...], Any] = {}
    for call in calls:
        key = (
            call.provider,
            call.response_model,
            call.request_model,
            call.service_tier,
            call.start_ns // 86_400_000_000_000,
        )
        if key not in cards:
            cards[key] = book.card(call)
    slow_cards = sorted(f"{key[0]}/{key[1]}/{key[3] or '-'}" for key, card in cards.items() if card and not card.exact)
    n = len(calls)
    return {
        "pricing_speedup": round(direct_seconds / fast_seconds, 1),
        "pricing_speedup_with_decimal": round(direct_seconds / fast_decimal_seconds, 1),
        "pricing_calls_compared": n,
        "pricing_mismatches": len(mismatches),
        "pricing_mismatch_examples": mismatches[:10],
        "pricing_fast_path_ns_per_call": round(fast_seconds / n * 1e9),
        "pricing_fast_path_with_decimal_ns_per_call": round(fast_decimal_seconds / n * 1e9),
        "pricing_calc_price_us_per_call": round(direct_seconds / n * 1e6, 1),
        "pricing_cold_first_pass_ms": round(cold_seconds * 1000, 1),
        "pricing_rate_cards": len(cards),
        "pricing_rate_cards_on_slow_path": slow_cards,
        "pricing_note": (
            "fast path timed with a warm rate-card cache (one card per provider, model, service tier and day, "
            "built on first use; the cold first pass, card builds included, is pricing_cold_first_pass_ms). "
            "calc_price timing includes usage_for() and request_time() per call, as a direct caller would. "
            f"Best of {fast_repeats} (fast) and {direct_repeats} (calc_price) passes."
        ),
    }


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--endpoint", default="localhost:4317", help="OTLP/gRPC target (default localhost:4317)")
    parser.add_argument("--api", default="http://localhost:8318", help="API base URL (default http://localhost:8318)")
    parser.add_argument("--spans", type=int, default=102_400, help="spans to send in the timed run (default 102400)")
    parser.add_argument("--spans-per-request", type=int, default=SPANS_PER_REQUEST)
    parser.add_argument("--concurrency", type=int, default=64, help="exports in flight (default 64)")
    parser.add_argument("--warmup-requests", type=int, default=4, help="exports sent (untimed) before the run")
    parser.add_argument("--decode-repeats", type=int, default=3)
    parser.add_argument("--pricing-calls", type=int, default=4000, help="0 skips the pricing comparison")
    parser.add_argument(
        "--pricing-repeats", type=int, default=2, help="calc_price passes, best taken (the fast path: 25x as many)"
    )
    parser.add_argument("--timeout", type=float, default=120, help="seconds per export, and for the final count")
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--server-pid", type=int, help="the server's pid: report its CPU use per thread (Linux)")
    parser.add_argument("--skip-ingest", action="store_true", help="only the pricing comparison (no server needed)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, result: dict[str, Any], errors: list[str]) -> None:
    """Fill `result`; append every failure to `errors`."""
    if not args.skip_ingest:
        try:
            ready = str(http_get(f"{args.api}/readyz")[0])
        except OSError as exc:
            ready = f"no answer ({exc})"
        if ready != "200":
            errors.append(f"GET {args.api}/readyz: {ready} (is `otel-cost serve` running? see bench/run.sh)")
            return

    # Pricing first: the server is idle (no merges yet), so it does not compete for the CPU.
    if args.pricing_calls > 0:
        log(f"pricing: {args.pricing_calls} calls, fast path vs genai_prices.calc_price")
        pricing = measure_pricing(args.pricing_calls, args.seed, 25 * args.pricing_repeats, args.pricing_repeats)
        result.update(pricing)
        if pricing["pricing_mismatches"]:
            errors.append(
                f"{pricing['pricing_mismatches']} call(s) priced differently: {pricing['pricing_mismatch_examples']}"
            )
        log(
            f"pricing: fast {pricing['pricing_fast_path_ns_per_call']} ns/call, calc_price "
            f"{pricing['pricing_calc_price_us_per_call']} us/call, speedup {pricing['pricing_speedup']}x "
            f"({pricing['pricing_speedup_with_decimal']}x with the Decimal)"
        )

    if not args.skip_ingest:
        run_id = f"bench-{uuid.uuid4()}"
        log(f"building {args.spans} spans in exports of {args.spans_per_request} (run {run_id})")
        started = time.perf_counter()
        payloads = build_payloads(args.spans, run_id, args.seed, args.spans_per_request)
        warmup = build_payloads(
            args.warmup_requests * args.spans_per_request, f"{run_id}-warmup", args.seed + 1, args.spans_per_request
        )
        payload_bytes = sum(len(payload) for payload in payloads)
        log(
            f"built {len(payloads)} exports, {payload_bytes / 2**20:.1f} MiB "
            f"({payload_bytes / args.spans:.0f} B/span) in {time.perf_counter() - started:.1f}s"
        )

        log(f"decode ceiling: best of {args.decode_repeats}")
        decode_rate, decode_runs = measure_decode(payloads, args.decode_repeats)
        log(f"decode ceiling {decode_rate:,.0f} spans/s ({', '.join(f'{s:.2f}s' for s in decode_runs)})")

        if warmup:
            log(f"warm-up: {len(warmup)} exports (untimed)")
            warm_stats, _, _ = send_all(args.endpoint, warmup, args.concurrency, args.timeout)
            if warm_stats.failed:
                errors.append(f"warm-up exports failed: {warm_stats.errors}")
        metrics_before = scrape_metrics(args.api)
        cpu_before = thread_cpu(args.server_pid) if args.server_pid else {}

        log(f"sending {len(payloads)} exports, {args.concurrency} in flight")
        client_cpu = time.process_time()
        stats, sent_at, acked_at = send_all(args.endpoint, payloads, args.concurrency, args.timeout)
        cpu_acked = thread_cpu(args.server_pid) if args.server_pid else {}
        result["client_cpu_seconds"] = round(time.process_time() - client_cpu, 2)
        log(f"all acknowledged after {acked_at - sent_at:.2f}s ({stats.failed} failed, {stats.retries} retries)")
        stored, polls = -1, 0
        deadline = time.perf_counter() + args.timeout
        while True:
            polls += 1
            stored = count_run_rows(args.api, run_id)
            if stored >= args.spans or time.perf_counter() > deadline:
                break
            time.sleep(0.02)
        queryable_at = time.perf_counter()
        seconds = queryable_at - sent_at
        metrics_after = scrape_metrics(args.api)

        if stats.failed:
            errors.append(f"{stats.failed} export(s) failed: {stats.errors}")
        if stats.rejected_spans:
            errors.append(f"{stats.rejected_spans} span(s) rejected (partial_success): {stats.errors}")
        if stored != args.spans:
            errors.append(f"stored {stored} rows for this run, sent {args.spans} spans")

        def delta(name: str) -> float:
            return metrics_after.get(name, 0.0) - metrics_before.get(name, 0.0)

        flushes = delta("otel_cost_store_flush_seconds_count")
        spans_per_second = args.spans / seconds
        result.update(
            {
                "spans_per_second": round(spans_per_second),
                "decode_ceiling_spans_per_second": round(decode_rate),
                "ratio": round(spans_per_second / decode_rate, 3),
                "peak_rss_mb": round(
                    (
                        metrics_after.get("otel_cost_process_peak_resident_memory_bytes", 0)
                        + metrics_after.get("otel_cost_workers_peak_resident_memory_bytes", 0)
                    )
                    / 2**20,
                    1,
                ),
                "peak_rss_mb_main": round(
                    metrics_after.get("otel_cost_process_peak_resident_memory_bytes", 0) / 2**20, 1
                ),
                "peak_rss_mb_workers": round(
                    metrics_after.get("otel_cost_workers_peak_resident_memory_bytes", 0) / 2**20, 1
                ),
                "spans_sent": args.spans,
                "spans_stored": stored,
                "exports": len(payloads),
                "spans_per_export": args.spans_per_request,
                "bytes_per_span": round(payload_bytes / args.spans),
                "concurrency": args.concurrency,
                "seconds": round(seconds, 3),
                "seconds_to_last_ack": round(acked_at - sent_at, 3),
                "count_polls": polls,
                "export_retries": stats.retries,
                "export_failures": stats.failed,
                "export_latency_ms": {
                    "p50": round(percentile(stats.latencies, 0.5) * 1000, 1),
                    "p99": round(percentile(stats.latencies, 0.99) * 1000, 1),
                    "max": round(max(stats.latencies, default=0) * 1000, 1),
                },
                "decode_ceiling_runs_seconds": [round(s, 3) for s in decode_runs],
                "store_inserts": int(flushes),
                "store_rows_per_insert": round(delta("otel_cost_store_rows_inserted_total") / flushes)
                if flushes
                else 0,
                "store_insert_seconds_total": round(delta("otel_cost_store_flush_seconds_sum"), 2),
            }
        )
        if args.server_pid:
            result["server_cpu_to_last_ack"] = summarize_cpu(cpu_before, cpu_acked, args.server_pid, acked_at - sent_at)
        log(
            f"{spans_per_second:,.0f} spans/s end to end, ratio {spans_per_second / decode_rate:.3f}, "
            f"{stored} stored, peak RSS {result['peak_rss_mb']} MiB"
        )
        del payloads, warmup


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    errors: list[str] = []
    result: dict[str, Any] = {"host": {"cpus": os.cpu_count(), "loadavg_at_start": list(os.getloadavg())}}
    try:
        run(args, result, errors)
    except Exception as exc:  # one JSON object whatever happens
        errors.append(f"{type(exc).__name__}: {exc}")
        log(traceback.format_exc())
    headline = ("spans_per_second", "decode_ceiling_spans_per_second", "ratio", "peak_rss_mb", "pricing_speedup")
    ordered = {key: result[key] for key in headline if key in result}
    ordered.update({key: value for key, value in result.items() if key not in ordered and key != "host"})
    ordered["host"] = result["host"]
    ordered["ok"] = not errors
    ordered["errors"] = errors
    ordered["args"] = vars(args)
    print(json.dumps(ordered, default=str))
    for error in errors:
        log(f"FAILED: {error}")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
