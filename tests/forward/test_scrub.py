"""The fast path of the forward scrub (`needs_scrub` reading the dict the pipeline built) must never
skip a span the full walk would change: checked over generated attributes, secrets and content."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_cost.attribution import Attributor
from otel_cost.forward.enrich import ForwardOptions, needs_scrub, scrub_span
from otel_cost.pipeline import Pipeline
from otel_cost.pricing import PriceBook
from otel_cost.semconv import to_dict_counted
from otel_cost.semconv.outcomes import OutcomeReader
from tests.receiver.test_hostile_input import requests as hostile_requests

_SECRETS = [
    "sk-proj-a1B2c3D4e5F6g7H8i9J0k1L2",
    "Bearer abc.def.ghi123",
    "AKIAABCDEFGHIJKLMNOP",
    "ghp_" + "a" * 36,
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
]
_KEYS = st.sampled_from(
    [
        "http.route",
        "url.full",
        "gen_ai.request.model",
        "gen_ai.input.messages",  # content
        "llm.prompts.0.content",  # content
        "http.request.header.authorization",  # secret by key
        "db.password",  # secret by key
        "gen_ai.usage.input_tokens",
        "gen_ai.response.finish_reasons",
        "app.tags",
        "app.meta",
    ]
)
_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(_SECRETS),
    st.builds(lambda a, b: f"{a} {b}", st.text(max_size=10), st.sampled_from(_SECRETS)),
    st.sampled_from(["basic research", "risk-assessment", "ok"]),
)


def _value(draw: Any, depth: int = 0) -> AnyValue:
    kind = draw(
        st.sampled_from(["string", "int", "double", "bool", "bytes", "array", "kvlist"][: 7 if depth < 2 else 5])
    )
    value = AnyValue()
    if kind == "string":
        value.string_value = draw(_TEXT)
    elif kind == "int":
        value.int_value = draw(st.integers(-(2**63), 2**63 - 1))
    elif kind == "double":
        value.double_value = draw(st.floats(allow_nan=False))
    elif kind == "bool":
        value.bool_value = draw(st.booleans())
    elif kind == "bytes":
        value.bytes_value = draw(st.binary(max_size=8))
    elif kind == "array":
        value.array_value.values.extend(_value(draw, depth + 1) for _ in range(draw(st.integers(0, 3))))
    else:
        for _ in range(draw(st.integers(0, 3))):
            value.kvlist_value.values.add(key=draw(_KEYS), value=_value(draw, depth + 1))
    return value


@st.composite
def spans(draw: Any) -> Span:
    span = Span(name="s", trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    for _ in range(draw(st.integers(0, 8))):
        span.attributes.append(KeyValue(key=draw(_KEYS), value=_value(draw)))
    return span


@settings(max_examples=400, deadline=None)
@given(spans(), st.booleans())
def test_the_dict_check_skips_only_spans_the_full_walk_leaves_alone(span: Span, drop_content: bool) -> None:
    attrs, repeated = to_dict_counted(span.attributes)
    fast, full = Span(), Span()
    fast.CopyFrom(span)
    full.CopyFrom(span)
    scrub_span(fast, needs_scrub(attrs, repeated, len(span.attributes)), drop_content, {})
    scrub_span(full, True, drop_content, {})
    assert fast == full
    assert not any(secret in str(full) for secret in _SECRETS)


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(request=hostile_requests())
def test_hostile_exports_forward_every_span_and_store_what_the_plain_pipeline_stores(
    request: ExportTraceServiceRequest,
) -> None:
    plain = Pipeline(PriceBook(), Attributor(), OutcomeReader()).process(request)
    copy = ExportTraceServiceRequest()
    copy.CopyFrom(request)
    forwarding = Pipeline(PriceBook(), Attributor(), OutcomeReader(), ForwardOptions(spans=True)).process(copy)
    # (not `data` byte for byte: a span without times is stamped with the moment it is processed)
    same = ("keys", "rows", "rejected", "messages", "billable", "unpriced", "spend", "redactions")
    assert [getattr(forwarding, name) for name in same] == [getattr(plain, name) for name in same]
    forwarded = request if forwarding.forward_as_received else ExportTraceServiceRequest.FromString(forwarding.forward)
    spans = [span for r in forwarded.resource_spans for s in r.scope_spans for span in s.spans]
    assert len(spans) == plain.spans
    enriched = [span for span in spans if any(kv.key == "otel_cost.billable" for kv in span.attributes)]
    assert len(enriched) == plain.rows  # each call's span once, whatever else the export holds
    for span in enriched:
        ours = [kv.key for kv in span.attributes if kv.key.startswith("otel_cost.")]
        assert len(ours) == len(set(ours))
