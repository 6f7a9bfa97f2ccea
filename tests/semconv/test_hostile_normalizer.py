"""Hostile and broken span content through the normalizer (issue 8, part 4): attribute values of every
type and nesting, absurd token counts, ids and timestamps of any size, repeated keys, enormous
attribute counts and keys, hostile instrumentation scopes. A span is either normalized into counts
that are whole, non-negative and in range, or refused with an InvalidSpanError that names the problem.
The receiver-side classes (bytes on the wire, the pipeline, the store, the real server) are in
tests/receiver/test_hostile_input.py."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_cost.model import Call
from otel_cost.semconv import (
    MAX_ATTRIBUTES,
    MAX_KEY_CHARS,
    MAX_TOKENS,
    InvalidSpanError,
    emitter_for_scope,
    extract,
    policy,
    redact_values,
    to_dict,
    to_dict_counted,
)
from otel_cost.semconv.extract import MAX_NS, MIN_NS
from otel_cost.semconv.keys import FIELD_SOURCES, INDEX
from otel_cost.store.wire import attribute_text

from ..helpers import NOW_NS, chat_attributes, key_values, make_span

HOSTILE = settings(max_examples=150, deadline=None, derandomize=True, database=None)
EMITTER = emitter_for_scope("opentelemetry.instrumentation.openai.v1", "0.62.4")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
USAGE_KEYS = sorted(
    key
    for field in ("input", "output", "total", "cache_read", "cache_write", "reasoning", "input_audio")
    for key in FIELD_SOURCES[field]
)

# --- strategies ----------------------------------------------------------------------------------------

NUMERIC_TEXT = st.sampled_from(
    [
        *("1e400", "-1e400", "NaN", "nan", "inf", "-inf", "-0", " 42 ", "42.0", "4_2", "0x10", "²", "٣", "", " ", "-7"),
        *("9" * 30, "9" * 5000, str(MAX_TOKENS), str(MAX_TOKENS + 1), str(INT64_MAX), str(INT64_MIN)),
    ]
)
SCALARS = st.one_of(
    st.sampled_from([INT64_MIN, -1, 0, 1, MAX_TOKENS, MAX_TOKENS + 1, INT64_MAX]),
    st.integers(INT64_MIN, INT64_MAX),
    st.floats(),  # NaN, +-inf, huge, negative, fractional, -0.0
    st.sampled_from([1e400, -1e400, 1e300, 5e-324, 12.0, 12.5, -3.0, float(MAX_TOKENS), float(2**63)]),
    NUMERIC_TEXT,
    st.text(max_size=12),
    st.booleans(),
    st.binary(max_size=12),
)
#: Any attribute value OTLP can carry: scalars, arrays and maps of them, nested.
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)


def whole_count(value: Any) -> int | None:
    """The spec for a token count: a whole number in [0, MAX_TOKENS], sent as an int, an integral double
    or a numeric string. Anything else refuses the span."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if 0 <= number <= MAX_TOKENS else None


def extract_attributes(attributes: dict[str, Any], **span_options: Any) -> Call | None:
    span = make_span(attributes, **span_options)
    attrs, repeated = to_dict_counted(span.attributes)
    return extract(span, attrs, EMITTER, NOW_NS, repeated)


def token_counts(call: Call) -> list[int]:
    return [
        call.input_tokens,
        call.cache_read_tokens,
        call.cache_write_tokens,
        call.cache_write_1h_tokens,
        call.output_tokens,
        call.reasoning_tokens,
        call.input_audio_tokens,
        call.output_audio_tokens,
    ]


def assert_sane(call: Call) -> None:
    counts = token_counts(call)
    assert all(type(count) is int for count in counts)
    assert min(counts) >= 0
    assert max(counts) <= 2 * MAX_TOKENS  # output may be output + reasoning, each at most MAX_TOKENS
    assert call.reasoning_tokens <= call.output_tokens
    assert call.cache_write_1h_tokens <= call.cache_write_tokens
    assert MIN_NS <= call.start_ns <= call.timestamp_ns < MAX_NS


# --- token counts -------------------------------------------------------------------------------------


@HOSTILE
@given(key=st.sampled_from(USAGE_KEYS), value=VALUES)
@example(key="gen_ai.usage.input_tokens", value="1e400")
@example(key="gen_ai.usage.input_tokens", value=float("nan"))
@example(key="gen_ai.usage.output_tokens", value=INT64_MIN)
@example(key="gen_ai.usage.output_tokens", value=1e300)  # integral, but no call is that large
@example(key="gen_ai.usage.output_tokens", value="9" * 5000)  # past int()'s digit limit
def test_a_token_count_of_any_type_is_read_only_when_it_is_a_whole_number_in_range(key: str, value: Any) -> None:
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", key: value}
    expected = whole_count(value)
    if expected is None:
        with pytest.raises(InvalidSpanError) as caught:
            extract_attributes(attributes)
        message = str(caught.value)
        assert message.startswith(f"{key} is ")
        # int(1e300) is quoted whole (301 digits, test_extract pins it); partial_success cuts every reason
        assert len(message) < 400 + len(key)
        return
    call = extract_attributes(attributes)
    assert call is not None
    assert_sane(call)
    if key == "gen_ai.usage.input_tokens":
        assert call.input_tokens == expected
    if key == "gen_ai.usage.output_tokens":
        assert call.output_tokens == expected


def read_keys(keys: Any) -> set[str]:
    """The keys the normalizer reads: per field, the best-ranked variant present (the others are ignored)."""
    best: dict[str, tuple[int, str]] = {}
    for key in keys:
        field, rank = INDEX[key]
        if field not in best or rank < best[field][0]:
            best[field] = (rank, key)
    return {key for _, key in best.values()}


@HOSTILE
@given(counts=st.dictionaries(st.sampled_from(USAGE_KEYS), st.integers(INT64_MIN, INT64_MAX), min_size=1))
def test_no_mix_of_int64_counts_stores_a_negative_or_absurd_count(counts: dict[str, int]) -> None:
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", **counts}
    attributes["gen_ai.request.model"] = "claude-sonnet-4-5"
    read = read_keys(counts)
    bad = sorted(key for key, count in counts.items() if key in read and not 0 <= count <= MAX_TOKENS)
    try:
        call = extract_attributes(attributes)
    except InvalidSpanError as refused:
        assert bad, f"refused in-range counts: {refused}"
        assert str(refused).split(" is ")[0] in bad
        return
    assert not bad
    assert call is not None
    assert_sane(call)


# --- ids and timestamps ------------------------------------------------------------------------------


IDS = st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"\x00" * 8, b"\x00" * 16, b"\x01", b"\xff" * 1000]))


@HOSTILE
@given(
    trace_id=IDS | st.binary(min_size=16, max_size=16),
    span_id=IDS | st.binary(min_size=8, max_size=8),
    parent=IDS | st.binary(min_size=8, max_size=8),
)
def test_trace_and_span_ids_of_any_size_are_refused_unless_valid(
    trace_id: bytes, span_id: bytes, parent: bytes
) -> None:
    span = make_span(chat_attributes(), parent_span_id=parent)
    span.trace_id, span.span_id = trace_id, span_id  # make_span would replace an empty id
    good_trace = len(trace_id) == 16 and any(trace_id)
    good_span = len(span_id) == 8 and any(span_id)
    if not (good_trace and good_span):
        with pytest.raises(InvalidSpanError) as caught:
            extract(span, to_dict(span.attributes), EMITTER, NOW_NS)
        which = "trace_id (must be 16 bytes" if not good_trace else "span_id (must be 8 bytes"
        assert str(caught.value).startswith(f"invalid {which}, not all zero)")
        return
    call = extract(span, to_dict(span.attributes), EMITTER, NOW_NS)
    assert call is not None
    assert (call.trace_id, call.span_id) == (trace_id, span_id)
    assert call.parent_span_id == (parent if len(parent) == 8 else b"")  # a parent of another size is dropped


FIXED64 = st.one_of(
    st.integers(0, 2**64 - 1),
    st.sampled_from([0, 1, MIN_NS - 1, MIN_NS, MAX_NS - 1, MAX_NS, 2**63 - 1, 2**63, 2**64 - 1, NOW_NS]),
)


@HOSTILE
@given(start=FIXED64, end=FIXED64)
def test_timestamps_of_any_fixed64_value_are_stored_in_range_or_refused(start: int, end: int) -> None:
    span = make_span(chat_attributes())
    span.start_time_unix_nano, span.end_time_unix_nano = start, end
    effective_end = end or start
    if effective_end and not MIN_NS <= effective_end < MAX_NS:
        with pytest.raises(InvalidSpanError) as caught:
            extract(span, to_dict(span.attributes), EMITTER, NOW_NS)
        assert str(caught.value) == f"end time {effective_end} ns is outside 2000-2199"
        return
    call = extract(span, to_dict(span.attributes), EMITTER, NOW_NS)
    assert call is not None
    assert_sane(call)
    assert ("timestamp_missing" in call.flags) == (effective_end == 0)


# --- nesting, bytes and repeated keys --------------------------------------------------------------


def nested_any_value(depth: int) -> AnyValue:
    value = AnyValue(string_value="leaf")
    for level in range(depth):
        outer = AnyValue()
        if level % 2:
            outer.array_value.values.append(value)
        else:
            outer.kvlist_value.values.append(KeyValue(key=f"k{level}", value=value))
        value = outer
    return value


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    return 0


@HOSTILE
@given(values=st.dictionaries(st.text(max_size=8), VALUES, max_size=6), depth=st.integers(0, 30))
def test_attribute_values_of_any_type_and_nesting_are_read_cut_and_storable(values: dict[str, Any], depth: int) -> None:
    span = make_span({**chat_attributes(), **values})
    span.attributes.add(key="app.deep", value=nested_any_value(depth))
    attrs = to_dict(span.attributes)
    assert depth_of(attrs["app.deep"]) <= 9  # kvlist/array nesting is cut at 8 levels below the attribute
    redact_values(attrs)
    for value in attrs.values():
        assert isinstance(attribute_text(value), str)  # how the store writes it: never raises
    try:
        call = extract(span, attrs, EMITTER, NOW_NS)
    except InvalidSpanError as refused:
        assert " is " in str(refused)  # a random key that collides with a usage key, holding a non-count
        return
    if call is not None:
        assert_sane(call)


@HOSTILE
@given(
    sent=st.lists(
        st.tuples(st.sampled_from(["gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"]), st.integers(0, 10)),
        min_size=1,
        max_size=6,
    )
)
def test_a_repeated_usage_key_bills_its_last_value_and_flags_a_conflict(sent: list[tuple[str, int]]) -> None:
    span = make_span({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"})
    span.attributes.extend(KeyValue(key=key, value=AnyValue(int_value=count)) for key, count in sent)
    attrs, repeated = to_dict_counted(span.attributes)
    call = extract(span, attrs, EMITTER, NOW_NS, repeated)
    assert call is not None
    last = dict(sent)
    assert (call.input_tokens, call.output_tokens) == (
        last.get("gen_ai.usage.input_tokens", 0),
        last.get("gen_ai.usage.output_tokens", 0),
    )
    values: dict[str, set[int]] = {}
    for key, count in sent:
        values.setdefault(key, set()).add(count)
    conflict = any(len(counts) > 1 for counts in values.values())
    assert ("repeated_attribute_conflict" in call.flags) == conflict
    assert repeated == len(sent) - len(values)


def test_to_dict_counts_repeats_apart_from_dropped_content_and_empty_values() -> None:
    sent = key_values({"gen_ai.prompt.0.content": "hello", "app.team": "search"})
    sent.append(KeyValue(key="app.empty"))  # no value at all
    sent.append(KeyValue(key="gen_ai.prompt.0.content", value=AnyValue(string_value="again")))
    assert to_dict_counted(sent) == ({"app.team": "search"}, 0)
    sent.append(KeyValue(key="app.team", value=AnyValue(string_value="payments")))
    assert to_dict_counted(sent) == ({"app.team": "payments"}, 1)


# --- enormous attribute counts and keys -------------------------------------------------------------


def test_a_genai_span_with_more_attributes_than_are_read_is_refused_with_the_count() -> None:
    filler = {f"app.extra.{index}": index for index in range(MAX_ATTRIBUTES - len(chat_attributes()))}
    call = extract_attributes({**chat_attributes(), **filler})
    assert call is not None and call.input_tokens == 1200  # at the limit: read as usual
    filler["app.one_more"] = 1
    with pytest.raises(InvalidSpanError) as caught:
        extract_attributes({**chat_attributes(), **filler})
    assert str(caught.value) == f"has {MAX_ATTRIBUTES + 1} attributes (at most {MAX_ATTRIBUTES} are read)"
    # a span that is no model call is not stored, so it is not refused either
    assert extract_attributes({f"http.header.{index}": "x" for index in range(5 * MAX_ATTRIBUTES)}) is None


def test_a_genai_span_with_an_enormous_key_is_refused() -> None:
    assert extract_attributes(chat_attributes(**{"k" * MAX_KEY_CHARS: 1})) is not None
    with pytest.raises(InvalidSpanError) as caught:
        extract_attributes(chat_attributes(**{"k" * 1_000_000: 1}))
    assert str(caught.value) == f"has an attribute key of 1000000 characters (at most {MAX_KEY_CHARS})"


def test_enormous_values_and_keys_are_not_kept_alive_by_the_policy_caches() -> None:
    value, key = "v" * 100_000 + "-unique", "app." + "k" * 100_000
    attrs = {key: value}
    redact_values(attrs)
    policy.classify_key(key)
    assert value not in policy._clean  # a 60 MB value would otherwise stay in memory for good
    assert key not in policy._cache
    short = "short-clean-value-for-the-cache"
    redact_values({"app.note": short})
    assert short in policy._clean


# --- hostile instrumentation scopes ---------------------------------------------------------------


@HOSTILE
@given(name=st.text(max_size=30), version=st.text(max_size=30))
@example(name="openlit", version="²")  # str.isdigit() is True, int() refuses it: was a ValueError (INTERNAL)
@example(name="ai", version="1" * 5000)  # past int()'s digit limit
@example(name="ai", version="v٣.0")
def test_any_instrumentation_scope_name_and_version_is_an_emitter(name: str, version: str) -> None:
    emitter = emitter_for_scope(name, version)
    assert emitter.anthropic_cache in ("inclusive", "exclusive", "unknown")
    assert len(emitter.label) <= 200
