"""The composer: one OTLP export -> `requests` rows. decode'd spans -> semconv -> pricing -> attribution.

Plain Python over the protobuf objects; one dict of attributes per span, one Call, one row tuple.
Nothing here touches the network or the store: `ingest.Ingestor` hands the rows to the writer.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from .attribution import Attributor, ResourceOwner
from .dedup import RecentSpans, mark_nested_duplicates
from .model import UNATTRIBUTED, Call
from .pricing import PriceBook
from .semconv import InvalidSpanError, emitter_for_scope, extract, redact_values, to_dict

__all__ = ["ExportResult", "Pipeline"]

_MAX_MESSAGES = 5


@dataclass
class ExportResult:
    """What one export turned into."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    entries: list[tuple[bytes, Call]] = field(default_factory=list)  # (span key, call) per row
    waits: list[asyncio.Future[None]] = field(default_factory=list)  # earlier attempts still in flight
    spans: int = 0  # every span in the export
    calls: int = 0  # spans that were model calls (stored, or already stored)
    duplicates: int = 0  # spans already stored (retries, replays)
    rejected: int = 0
    unpriced: int = 0  # billable calls without a price
    unattributed: int = 0  # billable calls without an owner
    messages: list[str] = field(default_factory=list)

    def reject(self, where: str, reason: str) -> None:
        self.rejected += 1
        if len(self.messages) < _MAX_MESSAGES:
            self.messages.append(f"{where}: {reason}")

    @property
    def error_message(self) -> str:
        """The partial_success message: how many spans were refused and why (first few)."""
        if not self.rejected:
            return ""
        more = "" if self.rejected <= len(self.messages) else f"; and {self.rejected - len(self.messages)} more"
        return f"{self.rejected} span(s) rejected: " + "; ".join(self.messages) + more


class Pipeline:
    """Turns exports into rows. One per event loop: its price book and caches are not thread-safe."""

    def __init__(self, price_book: PriceBook, attributor: Attributor, recent: RecentSpans) -> None:
        self.price_book = price_book
        self.attributor = attributor
        self.recent = recent

    def process(self, request: Any) -> ExportResult:
        result = ExportResult()
        now_ns = time.time_ns()
        recent = self.recent
        staged: list[tuple[bytes, Call, dict[str, Any], ResourceOwner, dict[str, Any]]] = []
        keys_here: set[bytes] = set()
        for resource_index, resource_spans in enumerate(request.resource_spans):
            resource_attrs = to_dict(resource_spans.resource.attributes)
            redact_values(resource_attrs)
            resource = ResourceOwner(resource_attrs)
            for scope_spans in resource_spans.scope_spans:
                scope = scope_spans.scope
                emitter = emitter_for_scope(scope.name, scope.version)
                for span_index, span in enumerate(scope_spans.spans):
                    result.spans += 1
                    attrs = to_dict(span.attributes)
                    try:
                        call = extract(span, attrs, emitter, now_ns)
                    except InvalidSpanError as exc:
                        where = span.span_id.hex() or f"resource {resource_index} span {span_index}"
                        result.reject(f"span {where}", str(exc))
                        continue
                    if call is None:
                        continue
                    result.calls += 1
                    key = call.trace_id + call.span_id
                    if key in keys_here or key in recent:
                        result.duplicates += 1
                        in_flight = recent.pending(key)
                        if in_flight is not None:
                            result.waits.append(in_flight)
                        continue
                    keys_here.add(key)
                    staged.append((key, call, attrs, resource, resource_attrs))

        entries = [(key, call) for key, call, *_ in staged]
        # A kept inner call (a provider SDK's span) is owned as its outer span says, where it is silent.
        owner_attrs: dict[bytes, dict[str, Any]] = {}
        pairs = mark_nested_duplicates(entries, recent)
        if pairs:
            attrs_by_key = {key: attrs for key, _, attrs, _, _ in staged}
            for inner, outer in pairs:
                owner_attrs[inner] = {**attrs_by_key[outer], **attrs_by_key[inner]}
        result.entries = entries
        price, attribute = self.price_book.price, self.attributor.attribute
        rows = result.rows
        for key, call, attrs, resource, resource_attrs in staged:
            priced = price(call)
            owner = attribute(owner_attrs.get(key, attrs), resource)
            if call.billable:
                if not priced.priced:
                    result.unpriced += 1
                if owner.team == UNATTRIBUTED:
                    result.unattributed += 1
            rows.append(
                (
                    call.timestamp_ns,
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
                    call.input_tokens,
                    call.cache_read_tokens,
                    call.cache_write_tokens,
                    call.cache_write_1h_tokens,
                    call.output_tokens,
                    call.reasoning_tokens,
                    priced.cost_units,
                    priced.price_version,
                    1 if priced.priced else 0,
                    priced.reason,
                    1 if call.billable else 0,
                    call.duplicate_of.hex(),
                    call.status,
                    call.error_type,
                    call.duration_ns,
                    call.emitter,
                    call.emitter_cost,
                    call.flags,
                    call.conversation_id,
                    call.response_id,
                    attrs,
                    resource_attrs,
                )
            )
        return result
