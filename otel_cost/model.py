"""Plain data shared by the stages: what a model call is after normalization, pricing and attribution.

Stages import this module, never each other. These are slotted classes and named tuples rather than
pydantic models because one is built per span on the hot path.
"""

from __future__ import annotations

from decimal import Context, Decimal
from typing import NamedTuple

__all__ = ["COST_SCALE", "UNATTRIBUTED", "Call", "Owner", "Priced", "units_to_decimal"]

#: The owner of spend nobody claimed. A headline number, never a silent default.
UNATTRIBUTED = "unattributed"


class Call:
    """One model call (or one non-billable aggregate) normalized from a span.

    Token counts follow one convention whatever the emitter: `input_tokens` is uncached input only;
    `cache_read_tokens` and `cache_write_tokens` are the other two parts of the prompt (so the
    whole prompt is their sum); `cache_write_1h_tokens` is the part of the cache writes made with a
    one-hour TTL; `output_tokens` includes `reasoning_tokens`. Audio counts are parts of the uncached
    input and of the non-reasoning output (priced at a model's audio rates where it has them).
    """

    __slots__ = (
        "billable",
        "cache_read_tokens",
        "cache_write_1h_tokens",
        "cache_write_tokens",
        "conversation_id",
        "duplicate_of",
        "duration_ns",
        "emitter",
        "emitter_cost",
        "error_type",
        "flags",
        "input_audio_tokens",
        "input_tokens",
        "operation",
        "output_audio_tokens",
        "output_tokens",
        "parent_span_id",
        "processing",
        "provider",
        "reasoning_tokens",
        "request_model",
        "response_id",
        "response_model",
        "service_tier",
        "span_id",
        "start_ns",
        "status",
        "timestamp_ns",
        "trace_id",
        "usage_reported",
    )

    def __init__(self) -> None:
        self.trace_id: bytes = b""
        self.span_id: bytes = b""
        self.parent_span_id: bytes = b""
        self.timestamp_ns: int = 0  # span end: when the spend happened
        self.start_ns: int = 0  # span start: the request time prices are looked up at
        self.duration_ns: int = 0
        self.provider: str = ""
        self.operation: str = ""
        self.request_model: str = ""
        self.response_model: str = ""
        self.input_tokens: int = 0
        self.cache_read_tokens: int = 0
        self.cache_write_tokens: int = 0
        self.cache_write_1h_tokens: int = 0
        self.output_tokens: int = 0
        self.reasoning_tokens: int = 0
        self.input_audio_tokens: int = 0  # part of input_tokens (uncached) that was audio
        self.output_audio_tokens: int = 0  # part of output_tokens (not reasoning) that was audio
        self.usage_reported: bool = False
        self.billable: bool = True
        self.duplicate_of: bytes = b""  # span id of the call this one repeats (nested instrumentation)
        self.status: str = "ok"
        self.error_type: str = ""
        self.service_tier: str = ""
        self.processing: str = ""  # "batch" for a call served by a batch API (its own, usually halved, prices)
        self.emitter: str = ""
        self.emitter_cost: str = ""
        self.conversation_id: str = ""
        self.response_id: str = ""
        self.flags: list[str] = []

    @property
    def prompt_tokens(self) -> int:
        """The whole prompt: uncached input plus cache reads and writes."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in sorted(self.__slots__))
        return f"Call({fields})"


#: Costs are exact integers of 10^-24 USD on the hot path (`Decimal(38, 24)` in ClickHouse).
COST_SCALE = 24
_EXACT = Context(prec=80)


def units_to_decimal(units: int) -> Decimal:
    """An integer amount of 10^-24 USD as an exact Decimal."""
    return Decimal(units).scaleb(-COST_SCALE, _EXACT)


class Priced(NamedTuple):
    """The pricing stage's verdict on one call."""

    cost_units: int  # exact cost in 10^-24 USD; 0 when unpriced
    priced: bool  # False: no price known, the cost is not a price
    priced_model: str  # the catalog model id that priced it ("" when unpriced)
    price_version: str  # catalog version plus override identity
    reason: str  # why a call is unpriced ("" when priced)

    @property
    def cost(self) -> Decimal:
        """USD, exact."""
        return units_to_decimal(self.cost_units)


class Owner(NamedTuple):
    """The attribution stage's verdict: who pays for a call, and which rule said so."""

    cost_center: str
    team: str
    feature: str
    agent: str
    environment: str
    source: str  # the rule that named the team, e.g. "resource:team"; "unattributed" when none matched
    tag_keys: str = ""  # user-defined tags, keys and values joined by the wire's separator
    tag_values: str = ""
    rule_keys: str = ""  # dimension -> the rule that produced it (for `attribution explain`)
    rule_values: str = ""
