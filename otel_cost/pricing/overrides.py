"""Price overrides from config (`pricing.overrides`): deployment aliases, negotiated model prices or
multipliers, provider-wide discounts. Resolved in that order before the public catalog; each is dated
(`effective_from` inclusive, `effective_until` exclusive, UTC days) and optionally limited to one price
variant (a service tier, or batch processing).

A rule is compiled once into `Rule`; `check_overrides` finds what pydantic cannot: rules for the same
thing whose dates overlap, and rules that can never match a call (a model or provider the catalog does
not know, with no prices of their own to apply).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime

from ..config import PriceOverride
from ..model import Call
from ..semconv.keys import PROVIDER_ALIASES
from .catalog import find_model, pricing_provider_id

__all__ = ["Rule", "canonical_provider", "check_overrides", "compile_rules"]

_NS_PER_DAY = 86_400 * 1_000_000_000
_NEVER = 1 << 63


def _day_ns(day: date | None, default: int) -> int:
    if day is None:
        return default
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000_000


def canonical_provider(name: str) -> str:
    lowered = name.strip().lower()
    return PROVIDER_ALIASES.get(lowered, lowered)


class Rule:
    """A compiled override: what it matches, when, and what it does to the price."""

    __slots__ = (
        "deployment",
        "identity",
        "kind",
        "model",
        "multiplier",
        "name",
        "prices",
        "processing",
        "provider",
        "service_tier",
        "since_ns",
        "until_ns",
    )

    def __init__(self, override: PriceOverride) -> None:
        self.name = override.name
        self.kind = override.kind
        self.deployment = override.deployment.lower() if override.deployment else ""
        self.provider = canonical_provider(override.provider) if override.provider else ""
        self.model = override.model.lower() if override.model else ""
        self.multiplier = override.multiplier
        self.prices = dict(override.prices) if override.prices else None
        self.service_tier = (override.service_tier or "").lower()
        self.processing = override.processing or ""
        self.since_ns = _day_ns(override.effective_from, 0)
        self.until_ns = _day_ns(override.effective_until, _NEVER)
        # The name plus a digest of the content: a row records exactly which rule priced it, even if
        # someone edits an entry in place instead of adding a new dated one.
        content = json.dumps(override.model_dump(mode="json"), sort_keys=True).encode()
        self.identity = f"{self.name}#{hashlib.sha256(content).hexdigest()[:8]}"

    def active(self, at_ns: int) -> bool:
        return self.since_ns <= at_ns < self.until_ns

    def fits_variant(self, call: Call) -> bool:
        if self.service_tier and self.service_tier != (call.service_tier or "default"):
            return False
        return not self.processing or self.processing == call.processing

    def fits_provider(self, *providers: str) -> bool:
        return not self.provider or any(
            self.provider == provider or self.provider == canonical_provider(provider)
            for provider in providers
            if provider
        )

    def __repr__(self) -> str:
        return f"Rule({self.identity}, {self.kind})"


def compile_rules(overrides: Sequence[PriceOverride]) -> list[Rule]:
    return [Rule(override) for override in overrides]


def _target(rule: Rule) -> tuple[str, ...]:
    return (rule.kind, rule.deployment, rule.provider, rule.model, rule.service_tier, rule.processing)


def _catalog_knows(provider: str, model: str) -> bool:
    try:
        provider_id = pricing_provider_id(provider) if provider else None
        find_model(provider_id, model)
    except LookupError:
        return False
    return True


def _provider_known(provider: str) -> bool:
    try:
        return pricing_provider_id(provider) is not None
    except LookupError:
        return False


def check_overrides(overrides: Sequence[PriceOverride]) -> list[tuple[int, str, str]]:
    """(index, key, message) for every override that overlaps another for the same target, or can never
    match a call. An empty list: the overrides are sound."""
    problems: list[tuple[int, str, str]] = []
    rules = compile_rules(overrides)
    for index, rule in enumerate(rules):
        for earlier_index in range(index):
            earlier = rules[earlier_index]
            if (
                _target(earlier) == _target(rule)
                and rule.since_ns < earlier.until_ns
                and earlier.since_ns < rule.until_ns
            ):
                problems.append(
                    (
                        index,
                        "effective_from",
                        f"{rule.name!r} overlaps {earlier.name!r} (override #{earlier_index}) for the same "
                        f"{rule.kind}: corrections are new entries whose dates follow the old one's "
                        "effective_until",
                    )
                )
        if rule.prices is not None:
            continue  # prices of its own: it prices whatever it matches, catalog or not
        if rule.kind == "provider":
            if not _provider_known(rule.provider):
                problems.append((index, "provider", f"provider {rule.provider!r} is not in the price catalog"))
        elif not _catalog_knows(rule.provider, rule.model):
            where = f" for provider {rule.provider!r}" if rule.provider else ""
            problems.append(
                (index, "model", f"model {rule.model!r} is not in the price catalog{where}: add prices to price it")
            )
    return problems
