"""The composer: one OTLP export -> one wire line per model call. spans -> semconv -> pricing -> attribution.

Plain Python over the protobuf objects: one dict of attributes per span, one Call, one TSV line. It
runs where it is cheapest (a worker process, see `workers`), so it holds no shared state: repeats
and nested duplicates across exports are settled by `dedup.admit` in the receiving process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .attribution import Attributor, ResourceOwner
from .dedup import Link, mark_nested_duplicates, model_signature
from .forward.enrich import ForwardOptions, enrich_span, needs_scrub, scrub_resource, scrub_span
from .forward.usage import Usage, add_usage
from .model import UNATTRIBUTED, Call
from .pricing import PriceBook
from .semconv import (
    MAX_ATTRIBUTES,
    MAX_KEY_CHARS,
    TYPED_KEYS,
    InvalidSpanError,
    emitter_for_scope,
    extract,
    redact_values,
    to_dict,
    to_dict_counted,
)
from .semconv.outcomes import OutcomeReader
from .semconv.policy import take_redactions
from .store.wire import SEPARATOR, encode_line, encode_map, tsv_line

__all__ = ["Pipeline", "ProcessedExport"]

_MAX_MESSAGES = 5
_MAX_REASON_CHARS = 300  # per message in partial_success: a span's own text (a 60 MB number) is cut


def _span_name(span: Any, resource_index: int, span_index: int) -> str:
    """How partial_success names a span: its id in hex (cut, for a hostile one), else its position."""
    span_id = span.span_id
    if not span_id:
        return f"span resource {resource_index} span {span_index}"
    return f"span {span_id.hex()}" if len(span_id) <= 16 else f"span {span_id[:16].hex()}..."


def _resource_problem(attrs: dict[str, Any]) -> str:
    """Why a resource's spans cannot be stored ("" if they can): its attributes travel on every row."""
    if len(attrs) > MAX_ATTRIBUTES:
        return f"its resource has {len(attrs)} attributes (at most {MAX_ATTRIBUTES} are read)"
    longest = max(map(len, attrs), default=0)
    if longest > MAX_KEY_CHARS:
        return f"its resource has an attribute key of {longest} characters (at most {MAX_KEY_CHARS})"
    return ""


@dataclass
class ProcessedExport:
    """What one export turned into. Crosses a process boundary, so it is compact: the rows are one
    bytes object of finished wire lines, the span keys (trace id + span id, 24 bytes each) another."""

    data: bytes = b""  # TSV lines, each ending in a newline, `store.wire.INGEST_COLUMNS` order
    rows: int = 0
    keys: bytes = b""  # 24 bytes per row
    links: list[Link | None] = field(default_factory=list)  # per line: billable calls' nesting facts
    spans: int = 0  # every span in the export
    repeats: int = 0  # spans repeated inside the export
    rejected: int = 0
    messages: list[str] = field(default_factory=list)
    billable: int = 0
    unpriced: int = 0  # billable calls without a price
    unattributed: int = 0  # billable calls without an owner
    spend: dict[tuple[str, str], int] = field(default_factory=dict)  # (team, model) -> billable cost units
    outcomes: bytes = b""  # TSV lines, `store.wire.OUTCOME_COLUMNS` order
    outcome_rows: int = 0
    accepted: int = 0
    # outcome signals naming no known result (or on a span with no trace, or at a time outside 2000-2199)
    unrecognized_outcomes: int = 0

    redactions: dict[tuple[str, str], int] = field(default_factory=dict)  # (service.name, kind) -> values redacted
    # `ForwardOptions.spans`: the export as forwarded (enriched, scrubbed, protobuf), with what the
    # scrub redacted by kind; `ForwardOptions.usage`: billable calls summed for the cost metrics
    forward: bytes = b""
    forward_as_received: bool = False  # forward the received protobuf bytes themselves (`forward` is empty)
    forward_redactions: dict[str, int] = field(default_factory=dict)
    usage: Usage = field(default_factory=dict)

    def reject(self, where: str, reason: str) -> None:
        self.rejected += 1
        if len(self.messages) < _MAX_MESSAGES:
            if len(reason) > _MAX_REASON_CHARS:
                reason = reason[:_MAX_REASON_CHARS] + "..."
            self.messages.append(f"{where}: {reason}")

    @property
    def error_message(self) -> str:
        """The partial_success message: how many spans were refused and why (first few)."""
        if not self.rejected:
            return ""
        more = "" if self.rejected <= len(self.messages) else f"; and {self.rejected - len(self.messages)} more"
        return f"{self.rejected} span(s) rejected: " + "; ".join(self.messages) + more


class Pipeline:
    """Turns exports into lines. Not thread-safe (its caches): one per worker."""

    def __init__(
        self,
        price_book: PriceBook,
        attributor: Attributor,
        outcomes: OutcomeReader | None = None,
        forward: ForwardOptions | None = None,
    ) -> None:
        self.price_book = price_book
        self.attributor = attributor
        self.outcomes = outcomes or OutcomeReader()
        self.forward = forward or ForwardOptions()

    def process(self, request: Any) -> ProcessedExport:
        result = ProcessedExport()
        now_ns = time.time_ns()
        staged: list[tuple[bytes, Call, dict[str, Any], ResourceOwner, tuple[str, str], Any]] = []
        keys_here: set[bytes] = set()
        outcome_lines: list[str] = []
        wants_outcomes = self.outcomes.wants
        take_redactions()  # counted elsewhere in this process: not this export's
        forward = self.forward
        enrich = forward.spans
        to_scrub: list[tuple[Any, bool]] = []  # forwarding: each span, and whether its attributes need it
        for resource_index, resource_spans in enumerate(request.resource_spans):
            resource_attrs = to_dict(resource_spans.resource.attributes)
            problem = _resource_problem(resource_attrs)
            if problem:
                for scope_spans in resource_spans.scope_spans:
                    for span_index, span in enumerate(scope_spans.spans):
                        result.spans += 1
                        result.reject(_span_name(span, resource_index, span_index), problem)
                        if enrich:
                            to_scrub.append((span, True))
                continue
            redact_values(resource_attrs)
            resource = self.attributor.resource(resource_attrs)
            resource_map = encode_map(resource_attrs)
            for scope_spans in resource_spans.scope_spans:
                scope = scope_spans.scope
                emitter = emitter_for_scope(scope.name, scope.version)
                for span_index, span in enumerate(scope_spans.spans):
                    result.spans += 1
                    attrs, repeated = to_dict_counted(span.attributes)
                    if enrich:  # before anything redacts `attrs` in place
                        to_scrub.append((span, needs_scrub(attrs, repeated, len(span.attributes))))
                    if wants_outcomes(span, attrs):
                        self._read_outcomes(span, attrs, resource, result, outcome_lines)
                    try:
                        call = extract(span, attrs, emitter, now_ns, repeated)
                    except InvalidSpanError as exc:
                        result.reject(_span_name(span, resource_index, span_index), str(exc))
                        continue
                    if call is None:
                        continue
                    key = call.trace_id + call.span_id
                    if key in keys_here:
                        result.repeats += 1
                        continue
                    keys_here.add(key)
                    staged.append((key, call, attrs, resource, resource_map, span))
            for kind, count in take_redactions().items():  # the resource's values and its spans'
                where = (resource.service_name, kind)
                result.redactions[where] = result.redactions.get(where, 0) + count

        # A kept inner call (a provider SDK's span) is owned as its outer span says, where it is silent.
        owner_attrs: dict[bytes, dict[str, Any]] = {}
        pairs = mark_nested_duplicates([(key, call) for key, call, *_ in staged])
        if pairs:
            attrs_by_key = {key: attrs for key, _, attrs, *_ in staged}
            for inner, outer in pairs:
                owner_attrs[inner] = {**attrs_by_key[outer], **attrs_by_key[inner]}

        price, attribute = self.price_book.price, self.attributor.attribute
        usage = forward.usage
        lines: list[str] = []
        links = result.links
        spend = result.spend
        for key, call, attrs, resource, (resource_keys, resource_values), span in staged:
            priced = price(call)
            owner = attribute(owner_attrs.get(key, attrs), resource)
            if enrich:
                breakdown = self.price_book.breakdown(call, priced) if call.billable else None
                enrich_span(span, attrs, call, priced, owner, breakdown, forward.gen_ai_usage_cost)
            attribute_keys, attribute_values = encode_map(attrs, TYPED_KEYS)
            if call.billable:
                result.billable += 1
                if not priced.priced:
                    result.unpriced += 1
                if owner.team == UNATTRIBUTED:
                    result.unattributed += 1
                spent = (owner.team, priced.priced_model or call.response_model or call.request_model)
                spend[spent] = spend.get(spent, 0) + priced.cost_units
                if usage:
                    add_usage(
                        result.usage,
                        (call.provider, spent[1], owner.team, owner.feature, owner.agent),
                        priced.cost_units,
                        priced.priced,
                        call.input_tokens,
                        call.cache_read_tokens,
                        call.cache_write_tokens,
                        call.output_tokens,
                        call.reasoning_tokens,
                    )
                links.append(
                    (call.trace_id + call.parent_span_id if call.parent_span_id else b"", model_signature(call))
                )
            else:
                links.append(None)
            lines.append(
                encode_line(
                    (
                        str(call.timestamp_ns),
                        call.trace_id.hex(),
                        call.span_id.hex(),
                        call.parent_span_id.hex(),
                        resource.service_name,
                        owner.environment,
                        owner.cost_center,
                        owner.team,
                        owner.feature,
                        owner.agent,
                        owner.source,
                        call.provider,
                        call.operation,
                        call.request_model,
                        call.response_model,
                        priced.priced_model,
                        call.service_tier,
                        call.processing,
                        str(call.input_tokens),
                        str(call.cache_read_tokens),
                        str(call.cache_write_tokens),
                        str(call.cache_write_1h_tokens),
                        str(call.output_tokens),
                        str(call.reasoning_tokens),
                        str(call.input_audio_tokens),
                        str(call.output_audio_tokens),
                        str(priced.cost_units),
                        priced.price_version,
                        "1" if priced.priced else "0",
                        priced.reason,
                        call.status,
                        call.error_type,
                        str(call.duration_ns),
                        call.emitter,
                        call.emitter_cost,
                        call.conversation_id,
                        call.response_id,
                        attribute_keys,
                        attribute_values,
                        resource_keys,
                        resource_values,
                        owner.tag_keys,
                        owner.tag_values,
                        owner.rule_keys,
                        owner.rule_values,
                        SEPARATOR.join(call.flags),
                        "1" if call.billable else "0",
                        call.duplicate_of.hex(),
                    )
                )
            )
        if outcome_lines:
            outcome_lines.append("")
            result.outcomes = "\n".join(outcome_lines).encode()
            result.outcome_rows = len(outcome_lines) - 1
        if enrich:
            counts, drop_content = result.forward_redactions, forward.drop_content
            changed = bool(staged)  # enriched
            for resource_spans in request.resource_spans:
                changed = scrub_resource(resource_spans, drop_content, counts) or changed
            for span, attributes in to_scrub:
                changed = scrub_span(span, attributes, drop_content, counts) or changed
            if changed:
                result.forward = request.SerializeToString()
            else:
                result.forward_as_received = True  # no model call, no secret: the bytes that came in go on
        result.keys = b"".join(key for key, *_ in staged)
        if lines:
            lines.append("")  # every line ends in a newline
            result.data = "\n".join(lines).encode()
            result.rows = len(staged)
        return result

    def _read_outcomes(
        self, span: Any, attrs: dict[str, Any], resource: ResourceOwner, result: ProcessedExport, lines: list[str]
    ) -> None:
        found, unrecognized = self.outcomes.read(span, attrs, to_dict)
        result.unrecognized_outcomes += unrecognized
        if not found:
            return
        if len(span.trace_id) != 16:
            result.unrecognized_outcomes += len(found)  # an outcome belongs to a trace: nothing to join it to
            return
        owner = self.attributor.attribute(attrs, resource)
        trace_id = span.trace_id.hex()
        span_id = span.span_id.hex() if len(span.span_id) == 8 else ""  # an id of any other size is garbage
        for timestamp_ns, outcome, source, name, label, score, response_id in found:
            seconds, fraction = divmod(timestamp_ns, 1_000_000_000)
            result.accepted += outcome == "accepted"
            lines.append(
                tsv_line(
                    (
                        f"{seconds}.{fraction:09d}",
                        trace_id,
                        span_id,
                        resource.service_name,
                        owner.environment,
                        owner.team,
                        owner.feature,
                        owner.agent,
                        outcome,
                        source,
                        name[:256],
                        label[:256],
                        score[:64],
                        response_id[:256],
                    )
                )
            )
