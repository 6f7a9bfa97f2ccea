"""Stage 2: Call -> Priced. The price book resolves each (provider, model, day, price context) to a
rate card once and prices every call from the cached card.

A call the catalog cannot price is never $0 in silence: it comes back `priced=False` with a reason,
its tokens are stored, and it is counted as unpriced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime

from genai_prices.types import TimeOfDateConstraint

from ..config import PriceOverride
from ..model import Call, Priced
from .catalog import CATALOG_VERSION, CatalogEntry, find_model, pricing_provider_id, request_time
from .overrides import Rule, compile_rules
from .ratecard import RateCard, build_rate_card, fixed_rate_card

__all__ = ["PriceBook", "probe_call"]

logger = logging.getLogger(__name__)

_NS_PER_DAY = 86_400 * 1_000_000_000
_CARD_CACHE_LIMIT = 100_000


def probe_call(model: str, provider: str, day: date, *, service_tier: str = "", processing: str = "") -> Call:
    """A chat call to `model` at noon UTC on `day`: what asking the book for a model's prices means.
    Noon: the day's price whatever the time zone of whoever asks (and a fixed time for the few models
    whose price depends on the time of day)."""
    call = Call()
    call.provider = provider
    call.operation = "chat"
    call.request_model = model
    call.usage_reported = True
    call.start_ns = int(datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp()) * 1_000_000_000
    call.timestamp_ns = call.start_ns
    call.service_tier = service_tier
    call.processing = processing
    return call


class _Unpriced:
    __slots__ = ("result",)

    def __init__(self, reason: str, price_version: str) -> None:
        self.result = Priced(0, False, "", price_version, reason)

    def price(self, call: Call) -> Priced:
        return self.result


class _TimeOfDayCard:
    """Cards for a model whose price depends on the time of day (deepseek off-peak)."""

    __slots__ = ("_by_window", "_finish", "context", "entry", "price_version")

    def __init__(
        self,
        entry: CatalogEntry,
        context: Mapping[str, str] | None,
        price_version: str,
        finish: Callable[[RateCard], RateCard],
    ) -> None:
        self.entry = entry
        self.context = context
        self.price_version = price_version
        self._finish = finish  # applies the overrides to each window's catalog card
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
            card = self._finish(build_rate_card(self.entry, when, self.context, self.price_version))
            self._by_window[window] = card
        return card

    def price(self, call: Call) -> Priced:
        return self.card_for(call).price(call)


_Card = RateCard | _TimeOfDayCard | _Unpriced


def _card_key(call: Call) -> tuple[str, str, str, str, str, int]:
    """What a rate card is cached by (`PriceBook.price` builds the same tuple inline: the hot path)."""
    return (
        call.provider,
        call.response_model,
        call.request_model,
        call.service_tier,
        call.processing,
        call.start_ns // _NS_PER_DAY,
    )


class PriceBook:
    """Prices calls from the bundled catalog and the configured overrides. Not thread-safe: use one
    per worker.

    Resolution for a call (at its request time, in its price variant): a deployment alias renames what
    is priced (or prices it outright); then the first model override that matches, else the first
    provider-wide override, adjusts the catalog's card; a model the catalog does not know is priced only
    by a model override with prices of its own (self-hosted models). `price_version` names the catalog
    and every override that shaped the price.
    """

    def __init__(self, overrides: Sequence[PriceOverride] = ()) -> None:
        self.version = CATALOG_VERSION
        self.rules = compile_rules(overrides)
        self._aliases = [rule for rule in self.rules if rule.kind == "deployment"]
        self._model_rules = [rule for rule in self.rules if rule.kind == "model"]
        self._provider_rules = [rule for rule in self.rules if rule.kind == "provider"]
        self._cards: dict[tuple[str, str, str, str, str, int], _Card] = {}
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
            call.processing,
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
        card = self._cards.get(_card_key(call))
        if isinstance(card, _TimeOfDayCard):
            return card.card_for(call)
        return card if isinstance(card, RateCard) else None

    def breakdown(self, call: Call, priced: Priced) -> tuple[int, int, int, int, int, int] | None:
        """`priced` (this book's price of `call`) split by class (`RateCard.breakdown`); None when the
        call is unpriced or its card reports no split."""
        if not priced.priced or not call.usage_reported:
            return None
        card = self._cards.get(_card_key(call))  # the card `price` just used, without pricing the call again
        if isinstance(card, _TimeOfDayCard):
            card = card.card_for(call)
        return card.breakdown(call) if isinstance(card, RateCard) else None

    def _resolve(self, call: Call) -> _Card:
        at = call.start_ns
        names = [model for model in (call.response_model, call.request_model) if model]
        lowered = {name.lower() for name in names}
        provider = call.provider
        applied: list[Rule] = []
        alias = next(
            (
                rule
                for rule in self._aliases
                if rule.deployment in lowered and rule.active(at) and rule.fits_variant(call)
            ),
            None,
        )
        if alias is not None:
            applied.append(alias)
            if not alias.model:
                assert alias.prices is not None  # config validation: an alias has a model or prices
                return fixed_rate_card(alias.deployment, alias.prices, alias.identity, self._version(applied))
            provider = alias.provider or provider
            names = [alias.model]
            lowered = {alias.model}

        try:
            provider_id = pricing_provider_id(provider)
        except LookupError as exc:
            return self._self_hosted(call, lowered, applied) or _Unpriced(str(exc), self.version)
        models = list(names)
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
            found = self._self_hosted(call, lowered, applied)
            if found is not None:
                return found
            where = f" for provider {provider!r}" if provider else ""
            return _Unpriced(f"model {models[0]!r} is not in the price catalog{where}", self.version)

        catalog_model = entry.model.id.lower()
        rule = next(
            (
                rule
                for rule in self._model_rules
                if (rule.model == catalog_model or rule.model in lowered)
                and rule.active(at)
                and rule.fits_variant(call)
                and rule.fits_provider(call.provider, provider, entry.provider.id)
            ),
            None,
        )
        if rule is None and not (alias is not None and alias.prices):
            rule = next(
                (
                    rule
                    for rule in self._provider_rules
                    if rule.active(at)
                    and rule.fits_variant(call)
                    and rule.fits_provider(call.provider, provider, entry.provider.id)
                ),
                None,
            )
        if alias is not None and alias.prices:
            rule = None  # the deployment's own prices are final
        adjustments = [rule for rule in (alias, rule) if rule is not None and (rule.prices or rule.multiplier)]
        if rule is not None:
            applied.append(rule)
        version = self._version(applied)

        def finish(card: RateCard) -> RateCard:
            for adjustment in adjustments:
                if adjustment.prices:
                    card = card.with_prices(adjustment.prices, adjustment.identity, version)
                elif adjustment.multiplier is not None:
                    card = card.with_multiplier(adjustment.multiplier, adjustment.identity, version)
            return card

        context: dict[str, str] = {}
        if call.service_tier:
            context["service_tier"] = call.service_tier
        if call.processing:
            context["processing"] = call.processing
        try:
            if entry.time_varying:
                return _TimeOfDayCard(entry, context or None, version, finish)
            return finish(build_rate_card(entry, request_time(call), context or None, version))
        except ValueError as exc:
            logger.warning("price data for %s/%s is unusable: %s", entry.provider.id, entry.model.id, exc)
            return _Unpriced(f"price data for {entry.model.id!r} is unusable: {exc}", self.version)

    def _self_hosted(self, call: Call, lowered: set[str], applied: list[Rule]) -> RateCard | None:
        """A model the catalog does not know, priced by a model override with prices of its own."""
        for rule in self._model_rules:
            if (
                rule.prices
                and rule.model in lowered
                and rule.active(call.start_ns)
                and rule.fits_variant(call)
                and rule.fits_provider(call.provider)
            ):
                return fixed_rate_card(rule.model, rule.prices, rule.identity, self._version([*applied, rule]))
        return None

    def _version(self, applied: Sequence[Rule]) -> str:
        return self.version + "".join(f"+{rule.identity}" for rule in applied)
