"""Rate cards: a catalog model's prices for one day and price context, compiled to integer arithmetic.

`genai_prices.calc_price` costs ~100-200 µs a call (lookup, validation, unit decomposition). For one
model on one day the cost of a call is a linear function of its token classes, piecewise by
long-context tier (past a tier's threshold every token of the request is charged at the tier rate).
So the card is built once by asking genai-prices itself what one more token of each class costs, in
each tier segment, and pricing a call is then a handful of integer multiplications.

Coefficients are integers in units of 10^-24 USD per token (the catalog's prices have at most 18
decimal places per million tokens). A card whose prices would not fit falls back to calling
genai-prices for every call, so the result is exact either way.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal

from genai_prices import Usage
from genai_prices.types import TieredPrices

from ..model import COST_SCALE, Call, Priced, units_to_decimal
from .catalog import CatalogEntry, usage_for

__all__ = ["CLASSES", "PRICE_CLASSES", "RateCard", "build_rate_card", "fixed_rate_card"]

_EXACT = Context(prec=80)
_new_priced = tuple.__new__

#: Token classes in the order of a segment's coefficients.
CLASSES = (
    "input",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "output",
    "reasoning",
    "per_request",
    "input_audio",
    "output_audio",
)


class RateCard:
    """One model's prices for one day and price context."""

    __slots__ = (
        "_entry",
        "_flat",
        "_multiplier",
        "_segments",
        "_thresholds",
        "_when",
        "context",
        "model_id",
        "price_version",
        "sources",
    )

    def __init__(
        self,
        entry: CatalogEntry | None,
        when: datetime | None,
        context: Mapping[str, str] | None,
        price_version: str,
        thresholds: list[int],
        segments: list[tuple[int, ...]] | None,
        *,
        model_id: str = "",
        sources: tuple[str, ...] = (),
        multiplier: Decimal | None = None,
    ) -> None:
        self._entry = entry
        self._when = when
        self.context = context
        self.model_id: str = model_id or (entry.model.id if entry is not None else "")
        self.price_version = price_version
        self._thresholds = thresholds
        self._segments = segments
        self._flat = segments[0] if segments and not thresholds else None
        #: Per class (CLASSES order): where its price came from, for `otel-cost prices show`.
        self.sources = sources or (self._catalog_source(),) * len(CLASSES)
        self._multiplier = multiplier  # applied on the slow path (the fast path has it in the segments)

    def _catalog_source(self) -> str:
        if self._entry is None:
            return ""
        variant = "".join(f" {key}={value}" for key, value in (self.context or {}).items())
        return f"catalog {self._entry.provider.id}/{self._entry.model.id}{variant}"

    @property
    def thresholds(self) -> list[int]:
        return list(self._thresholds)

    def with_multiplier(self, multiplier: Decimal, identity: str, price_version: str) -> RateCard:
        """The same card with every price times `multiplier` (after tier and variant selection).
        Exact where the product is a whole number of 10^-24 USD per token (any multiplier with up to
        six decimals on catalog prices); otherwise rounded half-even to that unit."""
        segments = None
        if self._segments is not None:
            segments = [tuple(_scale(units, multiplier) for units in segment) for segment in self._segments]
        label = format(multiplier.normalize(), "f")
        return RateCard(
            self._entry,
            self._when,
            self.context,
            price_version,
            self._thresholds,
            segments,
            model_id=self.model_id,
            sources=tuple(f"{source} x {label} (override {identity})" for source in self.sources),
            multiplier=(self._multiplier or Decimal(1)) * multiplier,
        )

    def with_prices(self, prices: Mapping[str, Decimal], identity: str, price_version: str) -> RateCard:
        """The same card with some classes at fixed prices (every tier segment alike), e.g. a negotiated
        output price. Classes not named keep the catalog's price; reasoning follows a new output price."""
        if self._segments is None:
            raise ValueError("this model's catalog prices cannot be combined with fixed prices")
        fixed = _fixed_units(prices)
        if "output" in fixed and "reasoning" not in fixed:
            fixed["reasoning"] = fixed["output"]
        if "output" in fixed and "output_audio" not in fixed:
            fixed["output_audio"] = fixed["output"]
        if "input" in fixed and "input_audio" not in fixed:
            fixed["input_audio"] = fixed["input"]
        positions = {name: index for index, name in enumerate(CLASSES)}
        segments = []
        for segment in self._segments:
            values = list(segment)
            for name, units in fixed.items():
                values[positions[name]] = units
            segments.append(tuple(values))
        sources = tuple(
            f"override {identity}" if name in fixed else source
            for name, source in zip(CLASSES, self.sources, strict=True)
        )
        return RateCard(
            self._entry,
            self._when,
            self.context,
            price_version,
            self._thresholds,
            segments,
            model_id=self.model_id,
            sources=sources,
        )

    @property
    def exact(self) -> bool:
        """False when every call is priced by genai-prices itself (prices too fine for the fast path)."""
        return self._segments is not None

    def rates(self) -> list[tuple[int, dict[str, Decimal]]]:
        """Per tier segment: (the prompt size it applies above, {class: USD per token})."""
        starts = [0, *self._thresholds]
        return [
            (start, {name: units_to_decimal(units) for name, units in zip(CLASSES, segment, strict=True)})
            for start, segment in zip(starts, self._segments or [], strict=False)
        ]

    def price(self, call: Call) -> Priced:
        segment = self._flat
        if segment is None:
            if self._segments is None:
                return self._price_slowly(call)
            prompt = call.input_tokens + call.cache_read_tokens + call.cache_write_tokens
            segment = self._segments[bisect_left(self._thresholds, prompt)]
        c_in, c_read, c_write, c_write_1h, c_out, c_reason, c_request, c_in_audio, c_out_audio = segment
        reasoning = call.reasoning_tokens
        units = c_in * call.input_tokens + c_out * (call.output_tokens - reasoning) + c_request
        if reasoning:
            units += c_reason * reasoning
        if call.input_audio_tokens or call.output_audio_tokens:
            units += (c_in_audio - c_in) * call.input_audio_tokens + (c_out_audio - c_out) * call.output_audio_tokens
        if call.cache_read_tokens:
            units += c_read * call.cache_read_tokens
        if call.cache_write_tokens:
            one_hour = call.cache_write_1h_tokens
            units += c_write * (call.cache_write_tokens - one_hour) + c_write_1h * one_hour
        return _new_priced(Priced, (units, True, self.model_id, self.price_version, ""))  # type: ignore[arg-type]

    def breakdown(self, call: Call) -> tuple[int, int, int, int, int, int] | None:
        """`price(call)` split by what was paid for, in 10^-24 USD: (input, cache_read, cache_write,
        output, reasoning, per-request fee), audio inside input and output. The parts add up to the
        price exactly. None where genai-prices computes the price itself (it reports no split)."""
        segment = self._flat
        if segment is None:
            if self._segments is None:
                return None
            prompt = call.input_tokens + call.cache_read_tokens + call.cache_write_tokens
            segment = self._segments[bisect_left(self._thresholds, prompt)]
        c_in, c_read, c_write, c_write_1h, c_out, c_reason, c_request, c_in_audio, c_out_audio = segment
        reasoning = call.reasoning_tokens
        one_hour = call.cache_write_1h_tokens
        return (
            c_in * call.input_tokens + (c_in_audio - c_in) * call.input_audio_tokens,
            c_read * call.cache_read_tokens,
            c_write * (call.cache_write_tokens - one_hour) + c_write_1h * one_hour,
            c_out * (call.output_tokens - reasoning) + (c_out_audio - c_out) * call.output_audio_tokens,
            c_reason * reasoning,
            c_request,
        )

    def _price_slowly(self, call: Call) -> Priced:
        if self._entry is None or self._when is None:  # pragma: no cover - fixed cards always have segments
            return Priced(0, False, "", self.price_version, "no price data")
        try:
            total = self._entry.model.calc_price(
                usage_for(call),
                self._entry.provider,
                genai_request_timestamp=self._when,
                price_context=self.context,
            ).total_price
        except ValueError as exc:
            return Priced(0, False, "", self.price_version, f"genai-prices cannot price this usage: {exc}")
        if self._multiplier is not None:
            total = total * self._multiplier
        units = int(total.scaleb(COST_SCALE, _EXACT).to_integral_value(ROUND_HALF_EVEN))
        return Priced(units, True, self.model_id, self.price_version, "")


def _scale(units: int, multiplier: Decimal) -> int:
    return int((units * multiplier).to_integral_value(ROUND_HALF_EVEN))


#: config price key -> (rate-card class, how many tokens or requests the price is for)
PRICE_CLASSES: dict[str, tuple[str, int]] = {
    "input_mtok": ("input", 1_000_000),
    "cache_read_mtok": ("cache_read", 1_000_000),
    "cache_write_mtok": ("cache_write", 1_000_000),
    "cache_write_1h_mtok": ("cache_write_1h", 1_000_000),
    "output_mtok": ("output", 1_000_000),
    "output_reasoning_mtok": ("reasoning", 1_000_000),
    "requests_kcount": ("per_request", 1_000),
    "input_audio_mtok": ("input_audio", 1_000_000),
    "output_audio_mtok": ("output_audio", 1_000_000),
}


def _fixed_units(prices: Mapping[str, Decimal]) -> dict[str, int]:
    """Config prices (USD per million tokens, per thousand requests) -> {class: 10^-24 USD per token}."""
    units: dict[str, int] = {}
    for key, amount in prices.items():
        name, per = PRICE_CLASSES[key]
        exact = (amount / per).scaleb(COST_SCALE, _EXACT)
        rounded = exact.to_integral_value(ROUND_HALF_EVEN)
        units[name] = int(rounded)
    return units


def fixed_rate_card(model_id: str, prices: Mapping[str, Decimal], identity: str, price_version: str) -> RateCard:
    """A card from prices in config alone (a self-hosted model, or a deployment with its own prices).
    Flat: no long-context tiers. Cache reads and writes not priced cost what input costs; 1-hour writes
    what writes cost; reasoning what output costs."""
    fixed = _fixed_units(prices)
    given = set(fixed)
    fixed.setdefault("input", 0)
    fixed.setdefault("cache_read", fixed["input"])
    fixed.setdefault("cache_write", fixed["input"])
    fixed.setdefault("cache_write_1h", fixed["cache_write"])
    fixed.setdefault("output", 0)
    fixed.setdefault("reasoning", fixed["output"])
    fixed.setdefault("per_request", 0)
    fixed.setdefault("input_audio", fixed["input"])
    fixed.setdefault("output_audio", fixed["output"])
    source = f"override {identity}"
    return RateCard(
        None,
        None,
        None,
        price_version,
        [],
        [tuple(fixed[name] for name in CLASSES)],
        model_id=model_id,
        sources=tuple(source if name in given else f"{source} (default)" for name in CLASSES),
    )


def _tier_starts(entry: CatalogEntry, when: datetime, context: Mapping[str, str] | None) -> list[int]:
    model_price = entry.model.calc_price(
        Usage(input_tokens=0), entry.provider, genai_request_timestamp=when, price_context=context
    ).model_price
    starts = {
        tier.start for value in vars(model_price).values() if isinstance(value, TieredPrices) for tier in value.tiers
    }
    return sorted(starts)


def _to_units(amount: Decimal) -> int | None:
    scaled = amount.scaleb(COST_SCALE, _EXACT)
    integral = scaled.to_integral_value()
    return int(integral) if scaled == integral else None


def build_rate_card(
    entry: CatalogEntry, when: datetime, context: Mapping[str, str] | None, price_version: str
) -> RateCard:
    """Compile `entry`'s prices at `when` (under `context`, e.g. {"service_tier": "flex"}).

    Raises ValueError when genai-prices rejects the model's price data.
    """

    def total(**usage: int) -> Decimal:
        return entry.model.calc_price(
            Usage(**usage), entry.provider, genai_request_timestamp=when, price_context=context
        ).total_price

    thresholds = _tier_starts(entry, when, context)
    segments: list[tuple[int, ...]] = []
    for index in range(len(thresholds) + 1):
        prompt = 0 if index == 0 else thresholds[index - 1] + 1
        base = total(input_tokens=prompt)
        try:
            per_token = (
                total(input_tokens=prompt + 1) - base,
                total(input_tokens=prompt + 1, cache_read_tokens=1) - base,
                total(input_tokens=prompt + 1, cache_write_tokens=1) - base,
                total(input_tokens=prompt + 1, cache_write_tokens=1, cache_write_1h_tokens=1) - base,
                total(input_tokens=prompt, output_tokens=1) - base,
                total(input_tokens=prompt, output_tokens=1, output_reasoning_tokens=1) - base,
            )
            audio = (
                total(input_tokens=prompt + 1, input_audio_tokens=1) - base,
                total(input_tokens=prompt, output_tokens=1, output_audio_tokens=1) - base,
            )
        except ValueError:
            # Some token class is not priceable for this model: let genai-prices judge each call.
            return RateCard(entry, when, context, price_version, thresholds, None)
        per_request = base - prompt * per_token[0]
        units = [_to_units(amount) for amount in (*per_token, per_request, *audio)]
        if any(unit is None for unit in units):
            return RateCard(entry, when, context, price_version, thresholds, None)
        segments.append(tuple(unit for unit in units if unit is not None))
    return RateCard(entry, when, context, price_version, thresholds, segments)
