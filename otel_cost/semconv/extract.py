"""Span -> Call: one normalized model call from any GenAI dialect, or None for spans that are not one.

Normalization rules (DESIGN "Principles" 1-2):
- tokens are read from whichever variant the emitter used (`keys.FIELD_SOURCES`), as ints, from int,
  integral double or numeric string values;
- cache reads and writes are split out of the input count unless the emitter (or the data) says the
  input count already excludes them; never negative, never doubled; conflicts are flagged;
- reasoning is a subset of output unless the data says otherwise (reasoning > output, flagged);
- only inference operations are billable; agent/workflow/tool spans with usage are kept non-billable;
- a key the normalizer reads that is repeated with different values (OTLP forbids repeats; the last
  one is read) is flagged `repeated_attribute_conflict`; a span with more than `MAX_ATTRIBUTES` kept
  attributes, or a key longer than `MAX_KEY_CHARS`, is refused.

Bad values are not guessed at: `InvalidSpanError` carries a message for the export's partial_success.
"""

from __future__ import annotations

import math
from typing import Any

from ..model import Call
from .attributes import AttrValue
from .emitters import EXCLUSIVE, UNKNOWN, Emitter
from .keys import (
    AGGREGATE_OPERATIONS,
    INDEX,
    INFERENCE_OPERATIONS,
    OPERATION_ALIASES,
    PROVIDER_ALIASES,
)
from .policy import redact_values

__all__ = ["MAX_ATTRIBUTES", "MAX_KEY_CHARS", "MAX_NS", "MAX_TOKENS", "MIN_NS", "InvalidSpanError", "extract"]

#: Per token class per call. Larger counts are garbage, not spend (the largest context windows are ~10M).
MAX_TOKENS = 1_000_000_000
#: Kept (non-content) attributes per span or resource. SDKs keep 128 by default; more is garbage or an
#: attack on the stores and caches that hold attribute maps.
MAX_ATTRIBUTES = 1024
#: Characters per attribute key (semantic convention names are a few dozen).
MAX_KEY_CHARS = 256

_ALL_KEYS = frozenset(INDEX)
_USAGE_FIELDS = (
    "input",
    "output",
    "total",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "reasoning",
    "input_audio",
    "output_audio",
)
#: Timestamps outside [MIN_NS, MAX_NS) (2000-01-01 to 2200-01-01) are garbage, and no store column takes them.
MIN_NS = 946_684_800_000_000_000
MAX_NS = 7_258_118_400_000_000_000
_STATUS_ERROR = 2
_MAX_TEXT = 200


class InvalidSpanError(ValueError):
    """A span that cannot be stored as spend; the message says why, for partial_success."""


def _count(value: AttrValue, key: str) -> int:
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # the common case, first
        return value
    if isinstance(value, bool):
        raise InvalidSpanError(f"{key} is not a number (bool)")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            raise InvalidSpanError(f"{key} is not a whole number ({text[:40]!r})") from None
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise InvalidSpanError(f"{key} is not a whole number ({value!r})")
        number = int(value)
    else:
        raise InvalidSpanError(f"{key} is not a number ({type(value).__name__})")
    if number < 0:
        raise InvalidSpanError(f"{key} is negative ({number})")
    if number > MAX_TOKENS:
        raise InvalidSpanError(f"{key} is implausibly large ({number} > {MAX_TOKENS})")
    return number


def _text(value: AttrValue) -> str:
    text = value if isinstance(value, str) else str(value)
    return text.strip()[:_MAX_TEXT]


# Spans from one emitter share their attribute names, so where each field comes from is worked out once
# per distinct key set ("shape") and reused; the bounds keep hostile key churn (and huge shapes) cheap.
Plan = tuple[dict[str, str], tuple[tuple[str, str], ...]]
_plans: dict[tuple[str, ...], Plan | None] = {}
_PLAN_LIMIT = 10_000
_PLAN_MAX_KEYS = 256  # a larger shape is planned every time, not kept
_PLAN_MAX_CHARS = 16_384


def _plan(attrs: dict[str, AttrValue]) -> Plan | None:
    """(field -> the attribute key to read it from, the best-ranked variant present; the usage fields'
    (field, key) pairs), or None for a span that is not GenAI. InvalidSpanError for a key too long."""
    shape = tuple(attrs)
    if shape in _plans:
        return _plans[shape]
    found: dict[str, tuple[int, str]] = {}
    for key in attrs.keys() & _ALL_KEYS:
        field, rank = INDEX[key]
        previous = found.get(field)
        if previous is None or rank < previous[0]:
            found[field] = (rank, key)
    sources = {field: key for field, (_, key) in found.items()}
    if sources:
        longest = max(map(len, shape))
        if longest > MAX_KEY_CHARS:
            raise InvalidSpanError(f"has an attribute key of {longest} characters (at most {MAX_KEY_CHARS})")
    plan = (sources, tuple((field, sources[field]) for field in _USAGE_FIELDS if field in sources)) if sources else None
    if len(shape) > _PLAN_MAX_KEYS or sum(map(len, shape)) > _PLAN_MAX_CHARS:
        return plan
    if len(_plans) >= _PLAN_LIMIT:
        _plans.clear()
    _plans[shape] = plan
    return plan


def _repeated_conflict(key_values: Any, read: set[str]) -> bool:
    """Whether a key in `read` appears twice in the span's KeyValue list with different values."""
    first: dict[str, Any] = {}
    for kv in key_values:
        key = kv.key
        if key in read:
            seen = first.get(key)
            if seen is None:
                first[key] = kv.value
            elif seen != kv.value:
                return True
    return False


def extract(span: Any, attrs: dict[str, AttrValue], emitter: Emitter, now_ns: int, repeated: int = 0) -> Call | None:
    """Normalize one span. `attrs` is the span's attribute dict (content already dropped); for a GenAI
    span its secret-looking values are redacted in place before anything is read from it. `repeated`:
    how many of the span's KeyValues repeated a key (`to_dict_counted`), 0 for every SDK's spans."""
    if len(attrs) > MAX_ATTRIBUTES:
        if attrs.keys() & _ALL_KEYS:
            raise InvalidSpanError(f"has {len(attrs)} attributes (at most {MAX_ATTRIBUTES} are read)")
        return None
    planned = _plan(attrs)
    if planned is None:
        return None
    plan, usage = planned
    redact_values(attrs)
    source = plan.get

    key = source("request_model")
    request_model = _text(attrs[key]) if key else ""
    key = source("response_model")
    response_model = _text(attrs[key]) if key else ""
    has_usage = bool(usage)

    operation = ""
    key = source("operation")
    if key:
        raw = _text(attrs[key]).lower()
        operation = OPERATION_ALIASES.get(raw, raw)
    if not operation and "pydantic_ai_agent" in plan and not request_model:
        operation = "invoke_agent"
    is_aggregate = operation in AGGREGATE_OPERATIONS
    if is_aggregate and not has_usage:
        return None  # an agent/tool span with nothing to count
    if not has_usage and not (request_model or response_model) and operation not in INFERENCE_OPERATIONS:
        return None  # GenAI-flavoured span, but not a model call

    trace_id = span.trace_id
    span_id = span.span_id
    if len(trace_id) != 16 or not any(trace_id):
        raise InvalidSpanError("invalid trace_id (must be 16 bytes, not all zero)")
    if len(span_id) != 8 or not any(span_id):
        raise InvalidSpanError("invalid span_id (must be 8 bytes, not all zero)")

    call = Call()
    flags: list[str] = []
    call.flags = flags
    call.trace_id = trace_id
    call.span_id = span_id
    parent = span.parent_span_id
    call.parent_span_id = parent if len(parent) == 8 else b""

    start_ns = span.start_time_unix_nano
    end_ns = span.end_time_unix_nano or start_ns
    if not end_ns:
        end_ns = now_ns
        flags.append("timestamp_missing")
    elif not MIN_NS <= end_ns < MAX_NS:
        raise InvalidSpanError(f"end time {end_ns} ns is outside 2000-2199")
    # Prices are looked up at the start: a missing, late or pre-2000 (garbage) start must not price a call
    # at the catalog's earliest price, so the end stands in for it.
    if not MIN_NS <= start_ns <= end_ns:
        start_ns = end_ns
    call.timestamp_ns = end_ns
    call.start_ns = start_ns
    call.duration_ns = end_ns - start_ns

    key = source("provider")
    if key:
        raw_provider = _text(attrs[key]).lower()
        call.provider = PROVIDER_ALIASES.get(raw_provider, raw_provider)
    call.operation = operation
    call.request_model = request_model
    call.response_model = response_model
    call.billable = not is_aggregate
    call.emitter = emitter.label

    key = source("error_type")
    if span.status.code == _STATUS_ERROR:
        call.status = "error"
        call.error_type = _text(attrs[key]) if key else (span.status.message[:100] or "error")
    elif key:
        call.status = "error"
        call.error_type = _text(attrs[key])

    # The attribute dict holds a repeated key's last value: a key read here that was sent twice with two
    # values is contradictory data, flagged.
    if repeated and _repeated_conflict(span.attributes, set(plan.values())):
        flags.append("repeated_attribute_conflict")
    if has_usage:
        _normalize_usage(call, usage, attrs, emitter, flags)
    elif call.billable and call.status == "ok":
        flags.append("usage_missing")

    key = source("response_service_tier") or source("request_service_tier")  # what served wins
    if key:
        tier = _text(attrs[key]).lower()
        if tier == "batch":
            call.processing = "batch"
        else:
            call.service_tier = tier
    if "batch_id" in plan:
        call.processing = "batch"
    key = source("emitter_cost")
    if key:
        call.emitter_cost = _text(attrs[key])[:40]
    key = source("conversation_id")
    if key:
        call.conversation_id = _text(attrs[key])
    key = source("response_id")
    if key:
        call.response_id = _text(attrs[key])
    if request_model:
        floating = _floating_seen.get((request_model, response_model))
        if floating is None:
            floating = _floating(request_model, response_model)
            if len(_floating_seen) >= _PLAN_LIMIT:
                _floating_seen.clear()
            _floating_seen[(request_model, response_model)] = floating
        if floating:
            flags.append("floating_alias")
    return call


_floating_seen: dict[tuple[str, str], bool] = {}  # (requested, served) pairs repeat across spans


def _floating(requested: str, served: str) -> bool:
    """A request for a model name that moves (`*-latest`, `chat-latest`, `llama3:latest`, or any alias
    the provider answered with a different snapshot): priced by what served, flagged for the review."""
    requested = requested.lower()
    if requested.endswith("latest"):
        return True
    if not served:
        return False
    served = served.lower()
    return served != requested and served.rsplit("/", 1)[-1] != requested.rsplit("/", 1)[-1]


def _anthropic_like(call: Call) -> bool:
    return call.provider == "anthropic" or "claude" in (call.response_model or call.request_model).lower()


def _normalize_usage(
    call: Call,
    usage: tuple[tuple[str, str], ...],
    attrs: dict[str, AttrValue],
    emitter: Emitter,
    flags: list[str],
) -> None:
    counts = {field: _count(attrs[key], key) for field, key in usage}
    call.usage_reported = True

    output_raw = counts.get("output", 0)
    total = counts.get("total")
    if "input" in counts:
        input_raw = counts["input"]
    elif total is not None and total >= output_raw:
        input_raw = total - output_raw
        flags.append("input_from_total")
    else:
        input_raw = 0
    cache_read = counts.get("cache_read", 0)
    cache_write_1h = counts.get("cache_write_1h", 0)
    cache_write = counts.get("cache_write", cache_write_1h)
    if cache_write_1h > cache_write:
        flags.append("cache_write_1h_exceeds_cache_write")
        cache_write_1h = cache_write

    if (not cache_read and not cache_write) or (
        (anthropic_like := _anthropic_like(call)) and emitter.anthropic_cache == EXCLUSIVE
    ):
        uncached = input_raw
    elif cache_read + cache_write > input_raw:
        # Inclusive counts can never be smaller than their parts: this count is exclusive.
        uncached = input_raw
        if anthropic_like and emitter.anthropic_cache == UNKNOWN:
            flags.append("cache_exclusive_inferred")
        else:
            flags.append("cache_convention_conflict")
    else:
        uncached = input_raw - cache_read - cache_write

    reasoning = counts.get("reasoning", 0)
    if reasoning > output_raw:
        # Reasoning is a subset of output by the spec; a larger count means output excluded it.
        flags.append("reasoning_exceeds_output")
        output = output_raw + reasoning
    else:
        output = output_raw
    prompt = uncached + cache_read + cache_write
    if total is not None and total not in (prompt + output, input_raw + output_raw):
        flags.append("total_mismatch")

    call.input_tokens = uncached
    call.cache_read_tokens = cache_read
    call.cache_write_tokens = cache_write
    call.cache_write_1h_tokens = cache_write_1h
    if "input_audio" in counts or "output_audio" in counts:
        input_audio = counts.get("input_audio", 0)
        output_audio = counts.get("output_audio", 0)
        # Audio is a part of the prompt's uncached input and of the answer's non-reasoning output.
        if input_audio > uncached:
            flags.append("input_audio_exceeds_input")
            input_audio = uncached
        if output_audio > output - reasoning:
            flags.append("output_audio_exceeds_output")
            output_audio = output - reasoning
        call.input_audio_tokens = input_audio
        call.output_audio_tokens = output_audio
    call.output_tokens = output
    call.reasoning_tokens = reasoning
