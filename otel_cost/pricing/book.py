"""Stage 2: Call -> Priced. The price book resolves each (provider, model, day, price context) to a
rate card once and prices every call from the cached card.

A call the catalog cannot price is never $0 in silence: it comes back `priced=False` with a reason,
its tokens are stored, and it is counted as unpriced.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from genai_prices.types import TimeOfDateConstraint

from ..model import Call, Priced
from .catalog import CATALOG_VERSION, CatalogEntry, find_model, pricing_provider_id, request_time
from .ratecard import RateCard, build_rate_card

__all__ = ["PriceBook"]

logger = logging.getLogger(__name__)

_NS_PER_DAY = 86_400 * 1_000_000_000
_CARD_CACHE_LIMIT = 100_000


class _Unpriced:
    __slots__ = ("result",)

    def __init__(self, reason: str, price_version: str) -> None:
        self.result = Priced(0, False, "", price_version, reason)

    def price(self, call: Call) -> Priced:
        return self.result


class _TimeOfDayCard:
    """Cards for a model whose price depends on the time of day (deepseek off-peak)."""

    __slots__ = ("_by_window", "context", "entry", "price_version")

    def __init__(self, entry: CatalogEntry, context: Mapping[str, str] | None, price_version: str) -> None:
        self.entry = entry
        self.context = context
        self.price_version = price_version
        self._by_window: dict[tuple[bool, ...], RateCard] = {}

    def card_for(self, call: Call) -> RateCard:
        when = request_time(call)
        prices = self.entry.model.prices
        window = tuple(
            conditional.constraint.active(when)
            for conditional in (prices if isinstance(prices, list) else [])
            if isinstance(conditional.constraint, TimeOfDateConstraint)
        )
        card = self._by_window.get(window)
        if card is None:
            card = build_rate_card(self.entry, when, self.context, self.price_version)
            self._by_window[window] = card
        return card

    def price(self, call: Call) -> Priced:
        return self.card_for(call).price(call)


_Card = RateCard | _TimeOfDayCard | _Unpriced


class PriceBook:
    """Prices calls from the bundled catalog. Not thread-safe: use one per worker."""

    def __init__(self) -> None:
        self.version = CATALOG_VERSION
        self._cards: dict[tuple[str, str, str, str, int], _Card] = {}
        self._no_usage = Priced(0, False, "", self.version, "no usage reported")
        self._failed_without_usage = Priced(0, True, "", self.version, "")

    def price(self, call: Call) -> Priced:
        if not call.usage_reported:
            # A failed call that reported no usage bills nothing; a successful one is unpriced spend.
            return self._failed_without_usage if call.status == "error" else self._no_usage
        key = (
            call.provider,
            call.response_model,
            call.request_model,
            call.service_tier,
            call.start_ns // _NS_PER_DAY,
        )
        card = self._cards.get(key)
        if card is None:
            card = self._resolve(call)
            if len(self._cards) >= _CARD_CACHE_LIMIT:
                self._cards.clear()
            self._cards[key] = card
        return card.price(call)

    def card(self, call: Call) -> RateCard | None:
        """The rate card that prices `call`, or None when it is unpriced."""
        self.price(call)
        key = (
            call.provider,
            call.response_model,
            call.request_model,
            call.service_tier,
            call.start_ns // _NS_PER_DAY,
        )
        card = self._cards.get(key)
        if isinstance(card, _TimeOfDayCard):
            return card.card_for(call)
        return card if isinstance(card, RateCard) else None

    def _resolve(self, call: Call) -> _Card:
        try:
            provider_id = pricing_provider_id(call.provider)
        except LookupError as exc:
            return _Unpriced(str(exc), self.version)
        models = [model for model in (call.response_model, call.request_model) if model]
        # SDK-style refs such as "models/gemini-2.5-pro" or "openai/gpt-4o": the catalog name comes last.
        models += [model.rsplit("/", 1)[1] for model in models if "/" in model]
        if not models:
            return _Unpriced("no model name on the span", self.version)
        entry = None
        for model_ref in dict.fromkeys(models):
            try:
                entry = find_model(provider_id, model_ref)
                break
            except LookupError:
                continue
        if entry is None:
            where = f" for provider {call.provider!r}" if call.provider else ""
            return _Unpriced(f"model {models[0]!r} is not in the price catalog{where}", self.version)
        context = {"service_tier": call.service_tier} if call.service_tier else None
        try:
            if entry.time_varying:
                return _TimeOfDayCard(entry, context, self.version)
            return build_rate_card(entry, request_time(call), context, self.version)
        except ValueError as exc:
            logger.warning("price data for %s/%s is unusable: %s", entry.provider.id, entry.model.id, exc)
            return _Unpriced(f"price data for {entry.model.id!r} is unusable: {exc}", self.version)
