"""What a forwarded span carries: cost attributes on each model call, secrets never, content if allowed.

Runs inside the pipeline (a worker process), over the export's own protobuf objects, after pricing
and attribution: each span that became a row gets the `otel_cost.*` attributes below appended; every
span, event, link and resource is scrubbed of secrets (`scrub_span`, `scrub_resource`; a span's
attributes are walked again only when `needs_scrub` finds something in the dict the pipeline already
read); then the export is serialized again for the forwarder, or forwarded byte for byte when
nothing changed. Spans that are no model call pass through as received, secrets aside.

The names mirror the GenAI cost proposal (semantic-conventions-genai PR 443: `gen_ai.usage.cost.amount`
double, `gen_ai.usage.cost.currency` ISO 4217) under our own namespace, because that proposal is
not merged and because otel-cost's figure is a ledger entry (price version, attribution) rather than
the emitter's own estimate. `ForwardOptions.gen_ai_usage_cost` also writes the proposal's names, on
spans that carry none (an emitter's own cost is never overwritten).

Only billable calls carry a cost: an agent span's aggregate usage and a nested SDK span repeating its
caller are `otel_cost.billable=false` without an amount, so summing `otel_cost.cost.amount` over a
trace counts each call once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ..model import Call, Owner, Priced
from ..semconv.policy import CONTENT, REDACTED, SECRET, SECRET_ATTRIBUTE, classify_key, clean_text, suspicious

__all__ = [
    "ATTRIBUTES",
    "CLASS_ATTRIBUTES",
    "ForwardOptions",
    "enrich_span",
    "exact_usd",
    "needs_scrub",
    "scrub_resource",
    "scrub_span",
]


@dataclass(frozen=True)
class ForwardOptions:
    """What the pipeline produces besides rows (picklable: it travels to the worker processes)."""

    spans: bool = False  # the enriched, scrubbed export, serialized for the forwarder
    drop_content: bool = False  # drop prompt/completion attributes from forwarded spans too
    gen_ai_usage_cost: bool = False  # also write gen_ai.usage.cost.* where a span has none
    usage: bool = False  # sum billable calls per owner and model for the cost metrics


AMOUNT = "otel_cost.cost.amount"  # double, USD: what backends can sum and compare
EXACT = "otel_cost.cost.exact"  # string: the same amount as the ledger's exact decimal
CURRENCY = "otel_cost.cost.currency"  # "USD"
PRICE_VERSION = "otel_cost.price_version"
PRICED_MODEL = "otel_cost.priced_model"
BILLABLE = "otel_cost.billable"
UNPRICED = "otel_cost.unpriced"
UNPRICED_REASON = "otel_cost.unpriced_reason"
COST_CENTER = "otel_cost.cost_center"
TEAM = "otel_cost.team"
FEATURE = "otel_cost.feature"
AGENT = "otel_cost.agent"
#: Per-class costs (double, USD), in `RateCard.breakdown` order; they add up to the amount.
CLASS_ATTRIBUTES = (
    "otel_cost.cost.input",
    "otel_cost.cost.cache_read",
    "otel_cost.cost.cache_write",
    "otel_cost.cost.output",
    "otel_cost.cost.reasoning",
    "otel_cost.cost.request",
)
#: Every attribute otel-cost writes (a span that already has one, e.g. a client's own `otel_cost.team`
#: hint, gets ours instead: keys stay unique).
ATTRIBUTES = frozenset(
    (
        AMOUNT,
        EXACT,
        CURRENCY,
        PRICE_VERSION,
        PRICED_MODEL,
        BILLABLE,
        UNPRICED,
        UNPRICED_REASON,
        COST_CENTER,
        TEAM,
        FEATURE,
        AGENT,
        *CLASS_ATTRIBUTES,
    )
)
_GEN_AI_AMOUNT = "gen_ai.usage.cost.amount"
_GEN_AI_CURRENCY = "gen_ai.usage.cost.currency"
_GEN_AI_SOURCE = "gen_ai.usage.cost.source"
_GEN_AI_KEYS = (_GEN_AI_AMOUNT, _GEN_AI_CURRENCY, _GEN_AI_SOURCE)

_UNITS_PER_USD = 10**24


def exact_usd(units: int) -> str:
    """10^-24 USD units as a plain decimal string, no exponent, no trailing zeros ("0.00042")."""
    whole, fraction = divmod(units, _UNITS_PER_USD)
    if not fraction:
        return str(whole)
    return f"{whole}.{fraction:024d}".rstrip("0")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# The attributes are written as serialized protobuf and merged into the span in one call
# (`MergeFromString` appends to a repeated field): about a tenth of the cost of building each KeyValue
# through the protobuf API. Span.attributes is field 9; KeyValue.key 1 and .value 2; AnyValue's
# string_value 1, bool_value 2, double_value 4.
def _key_field(key: str) -> bytes:
    raw = key.encode()
    return b"\x0a" + _varint(len(raw)) + raw


def _string_attribute(key: str, value: str) -> bytes:
    raw = value.encode("utf-8", "replace")
    any_value = b"\x0a" + _varint(len(raw)) + raw
    key_value = _key_field(key) + b"\x12" + _varint(len(any_value)) + any_value
    return b"\x4a" + _varint(len(key_value)) + key_value


def _bool_attribute(key: str, value: bool) -> bytes:
    key_value = _key_field(key) + b"\x12\x02\x10" + (b"\x01" if value else b"\x00")
    return b"\x4a" + _varint(len(key_value)) + key_value


def _double_prefix(key: str) -> bytes:
    """Everything of a double attribute but its 8 value bytes (`struct.pack("<d", ...)`)."""
    key_field = _key_field(key)
    return b"\x4a" + _varint(len(key_field) + 11) + key_field + b"\x12\x09\x21"


_BILLABLE_TRUE = _bool_attribute(BILLABLE, True)
_BILLABLE_FALSE = _bool_attribute(BILLABLE, False)
_UNPRICED_TRUE = _bool_attribute(UNPRICED, True)
_UNPRICED_FALSE = _bool_attribute(UNPRICED, False)
_USD = _string_attribute(CURRENCY, "USD")
_AMOUNT = _double_prefix(AMOUNT)
_CLASSES = tuple(_double_prefix(name) for name in CLASS_ATTRIBUTES)
_GEN_AI_AMOUNT_PREFIX = _double_prefix(_GEN_AI_AMOUNT)
_GEN_AI_TAIL = _string_attribute(_GEN_AI_CURRENCY, "USD") + _string_attribute(_GEN_AI_SOURCE, "local")
_pack_double = struct.Struct("<d").pack

# Owners, price versions and models repeat across spans: their attributes are serialized once.
_owner_cache: dict[tuple[str, ...], bytes] = {}
_OWNER_CACHE_LIMIT = 10_000


def _owner_attributes(priced: Priced, owner: Owner, unpriced_reason: str) -> bytes:
    key = (
        priced.price_version,
        priced.priced_model,
        owner.team,
        owner.cost_center,
        owner.feature,
        owner.agent,
        unpriced_reason,
    )
    cached = _owner_cache.get(key)
    if cached is None:
        parts = []
        if priced.priced_model:
            parts.append(_string_attribute(PRICED_MODEL, priced.priced_model))
        if unpriced_reason:
            parts.append(_string_attribute(UNPRICED_REASON, unpriced_reason))
        parts.append(_string_attribute(PRICE_VERSION, priced.price_version))
        parts.append(_string_attribute(TEAM, owner.team))  # "unattributed" when no rule named one: worth seeing
        for name, value in ((COST_CENTER, owner.cost_center), (FEATURE, owner.feature), (AGENT, owner.agent)):
            if value:
                parts.append(_string_attribute(name, value))
        cached = b"".join(parts)
        if len(_owner_cache) >= _OWNER_CACHE_LIMIT:
            _owner_cache.clear()
        _owner_cache[key] = cached
    return cached


def enrich_span(
    span: Any,
    attrs: dict[str, Any],
    call: Call,
    priced: Priced,
    owner: Owner,
    breakdown: tuple[int, ...] | None,
    gen_ai_usage_cost: bool,
) -> None:
    """Append the cost attributes to `span` (its protobuf). `attrs`: the span's attribute dict as the
    pipeline read it, to find keys that are ours already without a pass over the protobuf."""
    ours = ATTRIBUTES.intersection(attrs)
    if ours:
        _remove(span.attributes, ours)
    if not call.billable:
        span.MergeFromString(_BILLABLE_FALSE + _owner_attributes(priced, owner, ""))
        return
    if not priced.priced:
        extra = _BILLABLE_TRUE + _UNPRICED_TRUE + _owner_attributes(priced, owner, priced.reason)
        span.MergeFromString(extra)
        return
    units = priced.cost_units
    amount = units / _UNITS_PER_USD  # int / int: the correctly rounded double
    parts = [
        _BILLABLE_TRUE,
        _UNPRICED_FALSE,
        _AMOUNT + _pack_double(amount),
        _string_attribute(EXACT, exact_usd(units)),
        _USD,
    ]
    if breakdown is not None:
        for prefix, part in zip(_CLASSES, breakdown, strict=True):
            if part:  # a class that cost nothing is left out
                parts.append(prefix + _pack_double(part / _UNITS_PER_USD))
    if gen_ai_usage_cost and _GEN_AI_AMOUNT not in attrs:
        if _GEN_AI_CURRENCY in attrs or _GEN_AI_SOURCE in attrs:
            _remove(span.attributes, set(_GEN_AI_KEYS))
        parts.append(_GEN_AI_AMOUNT_PREFIX + _pack_double(amount))
        parts.append(_GEN_AI_TAIL)
    parts.append(_owner_attributes(priced, owner, ""))
    span.MergeFromString(b"".join(parts))


def _remove(key_values: Any, keys: set[str] | frozenset[str]) -> None:
    for index in range(len(key_values) - 1, -1, -1):
        if key_values[index].key in keys:
            del key_values[index]


def needs_scrub(attrs: dict[str, Any], repeated: int, total: int) -> bool:
    """Whether a span's attributes (read into `attrs` by `to_dict_counted`, `total` KeyValues) hold
    anything the forwarded copy must not: content (left out of `attrs`), a secret-named key (its
    value replaced by REDACTED) or a value with a secret's marker. Call it before anything redacts
    `attrs` in place. Most spans have none: their protobuf attributes are not walked again."""
    if repeated or len(attrs) != total:  # a repeated key's earlier values are not in `attrs`
        return True
    for value in attrs.values():
        kind = type(value)
        if kind is str:
            if value is REDACTED or suspicious(value):
                return True
        elif kind is list:
            for item in value:
                item_kind = type(item)
                if item_kind is str:
                    if suspicious(item):
                        return True
                elif item_kind is not int and item_kind is not float and item_kind is not bool:
                    return True  # a nested list or map: walked on the protobuf
        elif kind is dict:
            return True
    return False


def scrub_span(span: Any, attributes: bool, drop_content: bool, counts: dict[str, int]) -> bool:
    """Scrub a span's events, links and status message, and its attributes when `attributes` says
    so (`needs_scrub`). True when anything changed."""
    changed = False
    if attributes:
        changed = _scrub(span.attributes, drop_content, counts)
    if span.events:
        for event in span.events:
            changed = _scrub(event.attributes, drop_content, counts) or changed
    if span.links:
        for link in span.links:
            changed = _scrub(link.attributes, drop_content, counts) or changed
    message = span.status.message
    if message:
        clean = clean_text(message, counts)
        if clean is not message and clean != message:
            span.status.message = clean
            changed = True
    return changed


def scrub_resource(resource_spans: Any, drop_content: bool, counts: dict[str, int]) -> bool:
    """Scrub a resource's attributes and those of its scopes (the spans are scrubbed one by one).
    True when anything changed."""
    changed = _scrub(resource_spans.resource.attributes, drop_content, counts)
    for scope_spans in resource_spans.scope_spans:
        if scope_spans.scope.attributes:
            changed = _scrub(scope_spans.scope.attributes, drop_content, counts) or changed
    return changed


def _scrub(key_values: Any, drop_content: bool, counts: dict[str, int]) -> bool:
    changed = False
    dropped: list[int] | None = None
    for index, kv in enumerate(key_values):
        verdict = classify_key(kv.key)
        if verdict == SECRET:
            kv.value.string_value = REDACTED  # replaces whatever the value was, unread
            counts[SECRET_ATTRIBUTE] = counts.get(SECRET_ATTRIBUTE, 0) + 1
            changed = True
        elif verdict == CONTENT and drop_content:
            if dropped is None:
                dropped = []
            dropped.append(index)
        else:  # kept; content too when it goes on as received (its credentials aside)
            changed = _scrub_value(kv.value, drop_content, counts) or changed
    if dropped:
        for index in reversed(dropped):
            del key_values[index]
        changed = True
    return changed


def _scrub_value(value: Any, drop_content: bool, counts: dict[str, int]) -> bool:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text = value.string_value
        clean = clean_text(text, counts)
        if clean is not text and clean != text:
            value.string_value = clean
            return True
        return False
    changed = False
    if kind == "array_value":
        for item in value.array_value.values:
            changed = _scrub_value(item, drop_content, counts) or changed
    elif kind == "kvlist_value":
        changed = _scrub(value.kvlist_value.values, drop_content, counts)
    return changed
