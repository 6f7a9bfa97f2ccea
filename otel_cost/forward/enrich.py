"""What a forwarded span carries: cost attributes on each model call, secrets never, content if allowed.

Runs inside the pipeline (a worker process), over the export's own protobuf objects, after pricing
and attribution: each span that became a row gets the `otel_cost.*` attributes below appended; then
every span, resource, event and link of the export is scrubbed (`scrub_request`) and the export is
serialized again for the forwarder. Spans that are no model call pass through as received, secrets
aside.

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

from dataclasses import dataclass
from typing import Any

from ..model import Call, Owner, Priced
from ..semconv.policy import CONTENT, REDACTED, SECRET, SECRET_ATTRIBUTE, classify_key, clean_text

__all__ = [
    "ATTRIBUTES",
    "CLASS_ATTRIBUTES",
    "ForwardOptions",
    "enrich_span",
    "exact_usd",
    "scrub_request",
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
    key_values = span.attributes
    ours = ATTRIBUTES.intersection(attrs)
    if ours:
        _remove(key_values, ours)

    def text(key: str, value: str) -> None:
        kv = key_values.add()
        kv.key = key
        kv.value.string_value = value

    def flag(key: str, value: bool) -> None:
        kv = key_values.add()
        kv.key = key
        kv.value.bool_value = value

    def usd(key: str, units: int) -> None:
        kv = key_values.add()
        kv.key = key
        kv.value.double_value = units / _UNITS_PER_USD  # int / int: the correctly rounded double

    billable = call.billable
    flag(BILLABLE, billable)
    if billable:
        flag(UNPRICED, not priced.priced)
        if priced.priced:
            units = priced.cost_units
            usd(AMOUNT, units)
            text(EXACT, exact_usd(units))
            text(CURRENCY, "USD")
            if breakdown is not None:
                for name, part in zip(CLASS_ATTRIBUTES, breakdown, strict=True):
                    usd(name, part)
            if priced.priced_model:
                text(PRICED_MODEL, priced.priced_model)
            if gen_ai_usage_cost and _GEN_AI_AMOUNT not in attrs:
                if _GEN_AI_CURRENCY in attrs or _GEN_AI_SOURCE in attrs:
                    _remove(key_values, set(_GEN_AI_KEYS))
                usd(_GEN_AI_AMOUNT, units)
                text(_GEN_AI_CURRENCY, "USD")
                text(_GEN_AI_SOURCE, "local")
        elif priced.reason:
            text(UNPRICED_REASON, priced.reason)
    text(PRICE_VERSION, priced.price_version)
    text(TEAM, owner.team)  # "unattributed" when no rule named one: that is worth seeing on the span
    if owner.cost_center:
        text(COST_CENTER, owner.cost_center)
    if owner.feature:
        text(FEATURE, owner.feature)
    if owner.agent:
        text(AGENT, owner.agent)


def _remove(key_values: Any, keys: set[str] | frozenset[str]) -> None:
    for index in range(len(key_values) - 1, -1, -1):
        if key_values[index].key in keys:
            del key_values[index]


def scrub_request(request: Any, drop_content: bool, counts: dict[str, int]) -> None:
    """Redact secrets in every attribute of the export (in place), and drop content when asked.
    Each redaction is counted by kind in `counts` (`semconv.policy.KINDS`)."""
    for resource_spans in request.resource_spans:
        _scrub(resource_spans.resource.attributes, drop_content, counts)
        for scope_spans in resource_spans.scope_spans:
            _scrub(scope_spans.scope.attributes, drop_content, counts)
            for span in scope_spans.spans:
                _scrub(span.attributes, drop_content, counts)
                for event in span.events:
                    _scrub(event.attributes, drop_content, counts)
                for link in span.links:
                    _scrub(link.attributes, drop_content, counts)
                message = span.status.message
                if message:
                    clean = clean_text(message, counts)
                    if clean is not message:
                        span.status.message = clean


def _scrub(key_values: Any, drop_content: bool, counts: dict[str, int]) -> None:
    dropped: list[int] | None = None
    for index, kv in enumerate(key_values):
        verdict = classify_key(kv.key)
        if verdict == SECRET:
            kv.value.string_value = REDACTED  # replaces whatever the value was, unread
            counts[SECRET_ATTRIBUTE] = counts.get(SECRET_ATTRIBUTE, 0) + 1
        elif verdict == CONTENT:
            if drop_content:
                if dropped is None:
                    dropped = []
                dropped.append(index)
            else:
                _scrub_value(kv.value, drop_content, counts)  # content as received, credentials aside
        else:
            _scrub_value(kv.value, drop_content, counts)
    if dropped:
        for index in reversed(dropped):
            del key_values[index]


def _scrub_value(value: Any, drop_content: bool, counts: dict[str, int]) -> None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text = value.string_value
        clean = clean_text(text, counts)
        if clean is not text:
            value.string_value = clean
    elif kind == "array_value":
        for item in value.array_value.values:
            _scrub_value(item, drop_content, counts)
    elif kind == "kvlist_value":
        _scrub(value.kvlist_value.values, drop_content, counts)
