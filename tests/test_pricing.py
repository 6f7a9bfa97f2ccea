"""Pricing: the compiled rate cards agree with `genai_prices.calc_price` to the last digit, everywhere.

The fast path prices a call with integer arithmetic from a card built once per (provider, model, day,
price context). These tests prove it equals genai-prices itself on thousands of generated calls, on every
model and price in the bundled catalog, across long-context tiers, service tiers, dated prices and
time-of-day prices; and that what cannot be priced is said so, never $0.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any, NamedTuple

import pytest
from genai_prices import Usage, calc_price, data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider, StartDateConstraint, TimeOfDateConstraint

from otel_cost.model import Call, Priced
from otel_cost.pricing import CATALOG_VERSION, PriceBook, RateCard
from otel_cost.pricing import book as book_module
from otel_cost.pricing.catalog import CatalogEntry, find_model, pricing_provider_id, request_time, usage_for
from otel_cost.pricing.ratecard import CLASSES, build_rate_card

NS = 1_000_000_000


def at(year: int, month: int, day: int, hour: int = 12, minute: int = 0, second: int = 0, nanos: int = 0) -> int:
    """Unix nanoseconds of a UTC wall-clock time."""
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()) * NS + nanos


NOV_30 = at(2026, 11, 30)


def make_call(
    provider: str,
    model: str,
    *,
    response_model: str = "",
    input: int = 0,
    cache_read: int = 0,
    cache_write: int = 0,
    cache_write_1h: int = 0,
    output: int = 0,
    reasoning: int = 0,
    input_audio: int = 0,
    output_audio: int = 0,
    tier: str = "",
    start_ns: int = NOV_30,
    usage: bool = True,
    status: str = "ok",
) -> Call:
    call = Call()
    call.provider = provider
    call.request_model = model
    call.response_model = response_model
    call.input_tokens = input
    call.cache_read_tokens = cache_read
    call.cache_write_tokens = cache_write
    call.cache_write_1h_tokens = cache_write_1h
    call.output_tokens = output
    call.reasoning_tokens = reasoning
    call.input_audio_tokens = input_audio
    call.output_audio_tokens = output_audio
    call.service_tier = tier
    call.start_ns = start_ns
    call.timestamp_ns = start_ns + NS
    call.usage_reported = usage
    call.status = status
    return call


def reference(call: Call) -> tuple[Decimal, str]:
    """genai-prices' own answer for a call, and the model string it was asked about: the response model
    if the catalog knows it, else the request model (the book's order)."""
    provider_id = pricing_provider_id(call.provider)
    context = {"service_tier": call.service_tier} if call.service_tier else None
    for ref in dict.fromkeys(model for model in (call.response_model, call.request_model) if model):
        try:
            result = calc_price(
                usage_for(call),
                ref,
                provider_id=provider_id,
                genai_request_timestamp=request_time(call),
                price_context=context,
            )
        except LookupError:
            continue
        return result.total_price, ref
    raise LookupError(f"no reference price for {call.request_model!r}")


def usd(units: str) -> Decimal:
    return Decimal(units)


# --- the fast path equals calc_price ----------------------------------------------------------------------

#: (canonical provider, model as a span names it): real refs from the catalog's providers, chosen to cover
#: long-context tiers, dated prices, service-tier variants, time-of-day prices, regional ids and fallbacks.
CURATED: list[tuple[str, str]] = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-2024-08-06"),
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4.1"),
    ("openai", "gpt-4.1-mini"),
    ("openai", "gpt-4.1-nano"),
    ("openai", "gpt-4"),
    ("openai", "gpt-5"),
    ("openai", "gpt-5-mini"),
    ("openai", "gpt-5-nano"),
    ("openai", "gpt-5.4"),  # 272k tier
    ("openai", "gpt-5.5"),
    ("openai", "gpt-6.1-terra"),  # tiered flex/priority variants
    ("openai", "o1"),
    ("openai", "o3"),  # price cut 2025-06-10
    ("openai", "o3-mini"),
    ("openai", "o4-mini"),
    ("openai", "chatgpt-4o-latest"),
    ("openai", "gpt-5-chat-latest"),
    ("openai", "gpt-3.5-turbo"),
    ("openai", "text-embedding-3-small"),
    ("anthropic", "claude-sonnet-4-5-20250929"),  # 200k tier, 1h cache writes
    ("anthropic", "claude-opus-4-1"),
    ("anthropic", "claude-haiku-4-5"),
    ("anthropic", "claude-haiku-5-5"),  # 100k tier
    ("anthropic", "claude-3-5-haiku-20241022"),
    ("anthropic", "claude-sonnet-4-20250514"),
    ("anthropic", "claude-opus-4-6"),  # dated prices and a tier
    ("anthropic", "claude-sonnet-4-6"),
    ("anthropic", "claude-opus-4-8"),
    ("anthropic", "claude-3-haiku-20240307"),
    ("aws.bedrock", "us.anthropic.claude-sonnet-4-20250514-v1:0"),
    ("aws.bedrock", "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("aws.bedrock", "global.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("aws.bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
    ("aws.bedrock", "us.anthropic.claude-haiku-5-5"),
    ("aws.bedrock", "global.anthropic.claude-haiku-5-5"),
    ("aws.bedrock", "amazon.nova-pro-v1:0"),
    ("aws.bedrock", "us.amazon.nova-micro-v1:0"),
    ("aws.bedrock", "meta.llama3-70b-instruct-v1:0"),
    ("aws.bedrock", "mistral.mistral-large-2402-v1:0"),
    ("azure.ai.openai", "gpt-4o"),
    ("azure.ai.openai", "gpt-4o-2024-11-20"),
    ("azure.ai.openai", "gpt-4.1-mini"),
    ("azure.ai.openai", "gpt-5"),
    ("azure.ai.openai", "o3-mini"),
    ("azure.ai.openai", "gpt-35-turbo"),
    ("azure.ai.inference", "gpt-4o-mini"),
    ("gcp.gemini", "gemini-2.5-pro"),  # 200k tier
    ("gcp.gemini", "gemini-2.5-flash"),
    ("gcp.gemini", "gemini-2.5-flash-lite"),
    ("gcp.gemini", "gemini-1.5-pro"),  # 128k tier
    ("gcp.gemini", "gemini-2.0-flash"),
    ("gcp.gemini", "gemini-3-pro-preview"),  # dated, tiered
    ("gcp.gemini", "gemini-3.8-flash-tts"),  # dated flex/priority variants
    ("gcp.vertex_ai", "claude-sonnet-4-5@20250929"),
    ("gcp.vertex_ai", "claude-opus-4-1@20250805"),
    ("gcp.vertex_ai", "gemini-2.5-pro"),
    ("mistral_ai", "mistral-large-latest"),
    ("mistral_ai", "mistral-small-latest"),  # dated
    ("mistral_ai", "mistral-medium-latest"),  # dated
    ("mistral_ai", "mistral-large-4"),  # dated twice
    ("mistral_ai", "codestral-latest"),
    ("mistral_ai", "magistral-medium-latest"),
    ("x_ai", "grok-4"),
    ("x_ai", "grok-3-mini"),
    ("x_ai", "grok-4.20"),  # tier above 199,999, dated
    ("x_ai", "grok-4-fast"),
    ("x_ai", "grok-code-fast-1"),
    ("deepseek", "deepseek-chat"),  # time of day
    ("deepseek", "deepseek-reasoner"),  # time of day
    ("deepseek", "deepseek-v4-flash"),  # time of day and dated
    ("deepseek", "deepseek-v4-pro"),
    ("groq", "llama-3.3-70b-versatile"),
    ("groq", "openai/gpt-oss-120b"),
    ("groq", "moonshotai/kimi-k2-instruct"),
    ("groq", "qwen/qwen3-32b"),
    ("cohere", "command-r-plus"),
    ("cohere", "command-a-03-2025"),
    ("cohere", "command-r7b-12-2024"),
    ("perplexity", "sonar"),  # a per-request price
    ("openrouter", "google/gemini-3.8-flash"),  # 18-decimal prices
    ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
    ("", "gpt-4o"),  # no provider: the model name finds it
    ("", "claude-sonnet-4-5"),
    ("", "gemini-2.5-pro"),
]

#: genai-prices provider id -> the canonical provider a span would carry.
CANONICAL = {
    "openai": "openai",
    "anthropic": "anthropic",
    "aws": "aws.bedrock",
    "azure": "azure.ai.openai",
    "google": "gcp.gemini",
    "mistral": "mistral_ai",
    "x-ai": "x_ai",
    "deepseek": "deepseek",
    "groq": "groq",
    "cohere": "cohere",
    "together": "together",
    "fireworks": "fireworks",
    "perplexity": "perplexity",
}

SERVICE_TIERS = ["", "", "", "default", "flex", "priority", "fast", "auto", "scale"]
#: Request days many calls share (so cached cards are reused, across price changes and variant start dates).
COMMON_DAYS = [
    date(2024, 5, 13),
    date(2025, 1, 15),
    date(2025, 6, 9),
    date(2025, 6, 10),
    date(2025, 12, 31),
    date(2026, 3, 12),
    date(2026, 3, 13),
    date(2026, 8, 17),
    date(2026, 9, 10),
    date(2026, 10, 11),
    date(2026, 10, 12),
    date(2026, 11, 30),
]


def sampled_catalog_models(rng: random.Random, per_provider: int) -> list[tuple[str, str]]:
    """Model ids drawn from the catalog for several providers (ids that do not find themselves are left
    to the catalog-wide test below, which prices entries directly)."""
    picked = []
    for provider in data_snapshot.get_snapshot().providers:
        canonical = CANONICAL.get(provider.id)
        if canonical is None:
            continue
        for model in rng.sample(provider.models, min(per_provider, len(provider.models))):
            try:
                find_model(provider.id, model.id)
            except LookupError:
                continue
            picked.append((canonical, model.id))
    return picked


def change_days(entry: CatalogEntry) -> list[date]:
    prices = entry.model.prices
    constraints = [c.constraint for c in prices] if isinstance(prices, list) else []
    constraints += [variant.constraint for variant in entry.model.price_variants or ()]
    return sorted({c.start_date for c in constraints if isinstance(c, StartDateConstraint)})


def day_times(entry: CatalogEntry) -> list[time_of_day]:
    """Times of day where the model's price flips, and just before them."""
    prices = entry.model.prices
    windows = (
        [c.constraint for c in prices if isinstance(c.constraint, TimeOfDateConstraint)]
        if isinstance(prices, list)
        else []
    )
    edges: list[time_of_day] = []
    for window in windows:
        for edge in (window.start_time, window.end_time):
            moment = datetime.combine(date(2026, 1, 2), edge.replace(tzinfo=None))
            edges += [edge.replace(tzinfo=None), (moment - timedelta(microseconds=1)).time()]
    return edges


class Target(NamedTuple):
    provider: str
    model: str
    thresholds: list[int]  # long-context tier starts (prompt sizes above which the tier applies)
    days: list[date]  # days its prices change
    times: list[time_of_day]  # times of day its prices change


def targets(rng: random.Random) -> list[Target]:
    book = PriceBook()
    out = []
    for provider, model in [*CURATED, *sampled_catalog_models(rng, per_provider=8)]:
        probe = make_call(provider, model, input=1)
        card = book.card(probe)
        if card is None:
            continue  # the catalog id is not reachable from this provider's name; counted in the catalog test
        entry = find_model(pricing_provider_id(provider), model)
        thresholds = sorted({start for start, _ in card.rates()[1:]} | set(tier_starts(entry)))
        out.append(Target(provider, model, thresholds, change_days(entry), day_times(entry)))
    return out


def tier_starts(entry: CatalogEntry) -> Iterator[int]:
    """Every tier start in any of the model's prices (some tiers exist only at other dates or tiers)."""
    prices = entry.model.prices
    model_prices = [prices] if isinstance(prices, ModelPrice) else [c.prices for c in prices]
    model_prices += [variant.prices for variant in entry.model.price_variants or ()]
    for model_price in model_prices:
        for value in vars(model_price).values():
            yield from (tier.start for tier in getattr(value, "tiers", ()))


def random_start(rng: random.Random, target: Target) -> int:
    roll = rng.random()
    if target.days and roll < 0.3:
        day = rng.choice(target.days)
        # The last nanosecond before a price change, or its first.
        return at(day.year, day.month, day.day, 0) - rng.choice([1, 0])
    day = rng.choice(COMMON_DAYS) if roll < 0.7 else date(2024, 1, 1) + timedelta(days=rng.randrange(3 * 365))
    if target.times and rng.random() < 0.5:
        moment = rng.choice(target.times)
        return at(day.year, day.month, day.day, moment.hour, moment.minute, moment.second, moment.microsecond * 1000)
    return at(day.year, day.month, day.day, rng.randrange(24), rng.randrange(60), rng.randrange(60), rng.randrange(NS))


def random_call(rng: random.Random, target: Target) -> Call:
    if target.thresholds and rng.random() < 0.4:
        prompt = max(0, rng.choice(target.thresholds) + rng.choice([-1, 0, 1, 2, -5000, 40_000]))
    else:
        prompt = rng.choice([0, 1, rng.randint(1, 100), rng.randint(100, 10_000), rng.randint(10_000, 400_000)])
    cache_read = rng.randint(0, prompt) if rng.random() < 0.5 else 0
    cache_write = rng.randint(0, prompt - cache_read) if rng.random() < 0.4 else 0
    cache_write_1h = rng.randint(0, cache_write) if cache_write and rng.random() < 0.5 else 0
    output = rng.choice([0, rng.randint(1, 500), rng.randint(500, 64_000)])
    reasoning = rng.randint(0, output) if output and rng.random() < 0.4 else 0
    response_model = rng.choice([target.model, target.model, "", "unlisted-model-zz9"])
    uncached = prompt - cache_read - cache_write
    input_audio = rng.randint(0, uncached) if uncached and rng.random() < 0.15 else 0
    output_audio = rng.randint(0, output - reasoning) if output > reasoning and rng.random() < 0.15 else 0
    return make_call(
        target.provider,
        target.model,
        response_model=response_model,
        input=prompt - cache_read - cache_write,
        cache_read=cache_read,
        cache_write=cache_write,
        cache_write_1h=cache_write_1h,
        output=output,
        reasoning=reasoning,
        input_audio=input_audio,
        output_audio=output_audio,
        tier=rng.choice(SERVICE_TIERS),
        start_ns=random_start(rng, target),
    )


def test_fast_path_equals_calc_price_on_generated_calls() -> None:
    rng = random.Random(20261130)
    chosen = targets(rng)
    assert len(chosen) >= 150
    providers = {target.provider for target in chosen}
    assert providers >= {
        "openai",
        "anthropic",
        "aws.bedrock",
        "azure.ai.openai",
        "gcp.gemini",
        "gcp.vertex_ai",
        "mistral_ai",
        "x_ai",
        "deepseek",
        "groq",
        "cohere",
    }
    book = PriceBook()  # one book for every call: a card cached under too coarse a key would show here
    tiered = [target for target in chosen if target.thresholds]
    mismatches: list[str] = []
    checked = tiers_crossed = at_a_cliff = 0
    for _ in range(4000):
        target = rng.choice(tiered if rng.random() < 0.25 else chosen)
        call = random_call(rng, target)
        priced = book.price(call)
        expected, ref = reference(call)
        assert priced.priced, (call, priced)
        checked += 1
        tiers_crossed += any(call.prompt_tokens > threshold for threshold in target.thresholds)
        at_a_cliff += any(abs(call.prompt_tokens - threshold) <= 2 for threshold in target.thresholds)
        if (
            priced.cost != expected
            or priced.priced_model != find_model(pricing_provider_id(call.provider), ref).model.id
        ):
            mismatches.append(f"{call!r} via {ref!r}: {priced} != {expected}")
    assert mismatches == [], f"{len(mismatches)} of {checked} differ, e.g. {mismatches[:5]}"
    assert checked == 4000
    assert tiers_crossed > 300
    assert at_a_cliff > 300


def test_generated_calls_cover_what_they_claim() -> None:
    rng = random.Random(20261130)
    chosen = targets(rng)
    tiered = {(t.provider, t.model) for t in chosen if t.thresholds}
    assert {("gcp.gemini", "gemini-2.5-pro"), ("anthropic", "claude-sonnet-4-5-20250929"), ("x_ai", "grok-4.20")} <= (
        tiered
    )
    timed = {t.model for t in chosen if t.times}
    assert {"deepseek-chat", "deepseek-reasoner", "deepseek-v4-flash"} <= timed
    dated = {t.model for t in chosen if t.days}
    assert {"o3", "mistral-small-latest", "claude-opus-4-6", "gpt-5"} <= dated


# --- every price in the catalog fits the fast path ---------------------------------------------------------


def catalog_cases() -> Iterator[tuple[Provider, ModelInfo, datetime, dict[str, str] | None]]:
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            entry = CatalogEntry(provider, model)
            days = [date(2023, 1, 1), *change_days(entry)]
            contexts: list[dict[str, str] | None] = [None]
            for variant in model.price_variants or ():
                if variant.when not in contexts:
                    contexts.append(dict(variant.when))
            times = [time_of_day(12), *day_times(entry)]
            for day in days:
                for moment in times:
                    for context in contexts:
                        yield provider, model, datetime.combine(day, moment, tzinfo=UTC), context


def segment_usages(thresholds: list[int]) -> Iterator[dict[str, int]]:
    """Usages at both ends of every tier segment, with every token class."""
    starts = [0, *thresholds]
    ends = [*thresholds, thresholds[-1] + 1_000_000 if thresholds else 1_000_000]
    for start, end in zip(starts, ends, strict=True):
        for prompt in sorted({start + 1, end}):
            read, write = prompt // 4, prompt // 8
            yield {
                "input": prompt - read - write,
                "cache_read": read,
                "cache_write": write,
                "cache_write_1h": write // 2,
                "output": 777,
                "reasoning": 333,
            }
    yield {"input": 1234, "output": 56}


def test_every_catalog_price_fits_the_fast_path_and_agrees_with_genai_prices() -> None:
    cards = 0
    mismatches: list[str] = []
    inexact: list[str] = []
    for provider, model, when, context in catalog_cases():
        entry = CatalogEntry(provider, model)
        card = build_rate_card(entry, when, context, CATALOG_VERSION)
        cards += 1
        if not card.exact:
            inexact.append(f"{provider.id}/{model.id} at {when} {context}")
            continue
        thresholds = [start for start, _ in card.rates()[1:]]
        for usage in segment_usages(thresholds):
            call = make_call(provider.id, model.id, **usage)
            expected = model.calc_price(
                usage_for(call), provider, genai_request_timestamp=when, price_context=context
            ).total_price
            got = card.price(call)
            if got.cost != expected or got.priced_model != model.id:
                mismatches.append(f"{provider.id}/{model.id} at {when} {context} {usage}: {got.cost} != {expected}")
    assert inexact == [], f"prices finer than 10^-24 USD per token: {inexact[:10]}"
    assert mismatches == [], f"{len(mismatches)} differ, e.g. {mismatches[:5]}"
    assert cards > 2330  # every model at least once, more for dated, variant and time-of-day prices


# --- what the book says for what it cannot price -------------------------------------------------------------


def test_unknown_model_is_unpriced_not_free() -> None:
    priced = PriceBook().price(make_call("openai", "acme-9000", input=1000, output=10))
    assert priced == Priced(
        0, False, "", CATALOG_VERSION, "model 'acme-9000' is not in the price catalog for provider 'openai'"
    )
    assert priced.cost == 0


def test_unknown_model_names_the_response_model_first() -> None:
    priced = PriceBook().price(make_call("anthropic", "acme-1", response_model="acme-1-2026", input=1))
    assert priced.reason == "model 'acme-1-2026' is not in the price catalog for provider 'anthropic'"


def test_unknown_model_without_provider() -> None:
    priced = PriceBook().price(make_call("", "acme-9000", input=1))
    assert (priced.priced, priced.reason) == (False, "model 'acme-9000' is not in the price catalog")


@pytest.mark.parametrize("provider", ["acme.llm", "ibm.watsonx.ai"])
def test_unknown_provider_is_unpriced(provider: str) -> None:
    priced = PriceBook().price(make_call(provider, "gpt-4o", input=1000))
    assert priced == Priced(0, False, "", CATALOG_VERSION, f"provider {provider!r} is not in the price catalog")


def test_no_model_name() -> None:
    priced = PriceBook().price(make_call("openai", "", input=1000))
    assert priced == Priced(0, False, "", CATALOG_VERSION, "no model name on the span")


def test_no_usage_is_unpriced() -> None:
    priced = PriceBook().price(make_call("openai", "gpt-4o", usage=False))
    assert priced == Priced(0, False, "", CATALOG_VERSION, "no usage reported")


def test_failed_call_without_usage_costs_nothing() -> None:
    priced = PriceBook().price(make_call("openai", "gpt-4o", usage=False, status="error"))
    assert priced == Priced(0, True, "", CATALOG_VERSION, "")


def test_failed_call_with_usage_is_billed() -> None:
    priced = PriceBook().price(make_call("openai", "gpt-4o", input=1000, status="error"))
    assert (priced.priced, priced.cost) == (True, usd("0.0025"))


def test_response_model_is_preferred_and_request_model_is_the_fallback() -> None:
    book = PriceBook()
    # Requested the floating alias, served a snapshot: the snapshot's price.
    served = book.price(make_call("openai", "chatgpt-4o-latest", response_model="gpt-4o-2024-08-06", input=10**6))
    assert (served.priced_model, served.cost) == ("gpt-4o", usd("2.5"))
    unknown_response = book.price(make_call("openai", "gpt-4o-mini", response_model="ft:custom-zz9", input=10**6))
    assert (unknown_response.priced_model, unknown_response.cost) == ("gpt-4o-mini", usd("0.15"))


# --- exact money ------------------------------------------------------------------------------------------


def test_cost_is_an_exact_decimal() -> None:
    priced = PriceBook().price(make_call("openai", "gpt-4o", input=1))
    assert priced.cost_units == 2_500_000_000_000_000_000
    assert isinstance(priced.cost, Decimal)
    assert priced.cost == usd("0.0000025")
    many = PriceBook().price(make_call("openai", "gpt-4o", input=1, cache_read=3, output=7))
    assert many.cost == usd("0.0000025") + 3 * usd("0.00000125") + 7 * usd("0.00001")
    assert str(many.cost.normalize()) == "0.00007625"


def test_price_version() -> None:
    assert CATALOG_VERSION == "genai-prices@0.2.3"
    assert PriceBook().version == CATALOG_VERSION
    assert PriceBook().price(make_call("openai", "gpt-4o", input=1)).price_version == "genai-prices@0.2.3"
    assert PriceBook().price(make_call("openai", "acme", input=1)).price_version == "genai-prices@0.2.3"


def test_known_prices() -> None:
    book = PriceBook()
    gpt_4o = book.price(make_call("openai", "gpt-4o", input=200, cache_read=1000, output=300))
    assert (gpt_4o.cost, gpt_4o.priced_model) == (usd("0.00475"), "gpt-4o")
    sonnet = book.price(
        make_call("anthropic", "claude-sonnet-4-5", input=50, cache_read=2000, cache_write=500, output=400)
    )
    assert (sonnet.cost, sonnet.priced_model) == (usd("0.008625"), "claude-sonnet-4-5")
    embedding = book.price(make_call("openai", "text-embedding-3-small", input=800))
    assert embedding.cost == usd("0.000016")


def test_per_request_price() -> None:
    priced = PriceBook().price(make_call("perplexity", "sonar", input=1000, output=100))
    assert priced.cost == usd("0.012") + 1100 * usd("0.000001")
    assert PriceBook().price(make_call("perplexity", "sonar")).cost == usd("0.012")


# --- long-context tiers ------------------------------------------------------------------------------------


def test_gemini_2_5_pro_rates() -> None:
    card = PriceBook().card(make_call("gcp.gemini", "gemini-2.5-pro", input=1))
    assert card is not None
    assert card.exact
    (low_start, low), (high_start, high) = card.rates()
    assert (low_start, high_start) == (0, 200_000)
    assert (low["input"], low["cache_read"], low["output"]) == (usd("1.25e-6"), usd("1.25e-7"), usd("1e-5"))
    assert (high["input"], high["cache_read"], high["output"]) == (usd("2.5e-6"), usd("2.5e-7"), usd("1.5e-5"))
    assert set(low) == set(CLASSES)


def test_long_context_tier_applies_to_the_whole_request() -> None:
    book = PriceBook()

    def cost(prompt: int) -> Decimal:
        return book.price(make_call("gcp.gemini", "gemini-2.5-pro", input=prompt, output=1000)).cost

    assert cost(199_999) == 199_999 * usd("1.25e-6") + 1000 * usd("1e-5")
    assert cost(200_000) == 200_000 * usd("1.25e-6") + 1000 * usd("1e-5")  # the tier starts ABOVE 200,000
    assert cost(200_001) == 200_001 * usd("2.5e-6") + 1000 * usd("1.5e-5")
    # Two more tokens cost far more than two tokens' price: every token moved to the tier rate.
    assert cost(200_001) - cost(199_999) > 2 * usd("2.5e-6") + usd("0.24")


def test_tier_counts_the_whole_prompt_including_cache() -> None:
    book = PriceBook()
    below = book.price(make_call("anthropic", "claude-sonnet-4-5", input=100, cache_read=199_900, output=10))
    above = book.price(make_call("anthropic", "claude-sonnet-4-5", input=101, cache_read=199_900, output=10))
    assert below.cost == 100 * usd("3e-6") + 199_900 * usd("3e-7") + 10 * usd("1.5e-5")
    assert above.cost == 101 * usd("6e-6") + 199_900 * usd("6e-7") + 10 * usd("2.25e-5")


def test_tier_at_199999_starts_at_200000() -> None:
    book = PriceBook()
    day = at(2026, 6, 1)
    low = book.price(make_call("x_ai", "grok-4.20", input=199_999, start_ns=day))
    high = book.price(make_call("x_ai", "grok-4.20", input=200_000, start_ns=day))
    assert (low.cost, high.cost) == (199_999 * usd("1.25e-6"), 200_000 * usd("2.5e-6"))


# --- service tiers, dates, time of day ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "day", "input_rate", "output_rate"),
    [
        ("", NOV_30, "1.25e-6", "1e-5"),
        ("default", NOV_30, "1.25e-6", "1e-5"),
        ("auto", NOV_30, "1.25e-6", "1e-5"),
        ("flex", NOV_30, "6.25e-7", "5e-6"),
        ("priority", NOV_30, "2.5e-6", "2e-5"),
        ("flex", at(2026, 10, 11, 23, 59, 59, NS - 1), "1.25e-6", "1e-5"),  # the variant starts 2026-10-12
        ("flex", at(2026, 10, 12, 0), "6.25e-7", "5e-6"),
    ],
)
def test_service_tiers(tier: str, day: int, input_rate: str, output_rate: str) -> None:
    priced = PriceBook().price(make_call("openai", "gpt-5", input=1000, output=100, tier=tier, start_ns=day))
    assert priced.cost == 1000 * usd(input_rate) + 100 * usd(output_rate)


@pytest.mark.parametrize(
    ("start_ns", "input_rate", "output_rate"),
    [
        (at(2025, 6, 9, 23, 59, 59, NS - 1), "1e-5", "4e-5"),
        (at(2025, 6, 10, 0), "2e-6", "8e-6"),
        (at(2024, 12, 1), "1e-5", "4e-5"),
        (NOV_30, "2e-6", "8e-6"),
    ],
)
def test_dated_prices_follow_the_request_day(start_ns: int, input_rate: str, output_rate: str) -> None:
    priced = PriceBook().price(make_call("openai", "o3", input=1000, output=100, start_ns=start_ns))
    assert priced.cost == 1000 * usd(input_rate) + 100 * usd(output_rate)


@pytest.mark.parametrize(
    ("hour", "minute", "second", "nanos", "input_rate"),
    [
        (0, 29, 59, NS - 1, "1.35e-7"),  # off-peak
        (0, 30, 0, 0, "2.7e-7"),
        (12, 0, 0, 0, "2.7e-7"),
        (16, 29, 59, NS - 1, "2.7e-7"),
        (16, 30, 0, 0, "1.35e-7"),
        (23, 0, 0, 0, "1.35e-7"),
    ],
)
def test_time_of_day_prices(hour: int, minute: int, second: int, nanos: int, input_rate: str) -> None:
    book = PriceBook()
    for day in (30, 29):  # the same book, different windows on different days
        call = make_call(
            "deepseek", "deepseek-chat", input=1000, start_ns=at(2026, 11, day, hour, minute, second, nanos)
        )
        assert book.price(call).cost == 1000 * usd(input_rate)


# --- caching ------------------------------------------------------------------------------------------------


def test_rate_cards_are_built_once_per_model_day_and_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, datetime]] = []
    real = book_module.build_rate_card

    def counting(entry: CatalogEntry, when: datetime, context: Any, version: str) -> RateCard:
        built.append((entry.model.id, when))
        return real(entry, when, context, version)

    monkeypatch.setattr(book_module, "build_rate_card", counting)
    book = PriceBook()
    first = book.price(make_call("openai", "gpt-4o", input=10, start_ns=at(2026, 11, 30, 1)))
    second = book.price(make_call("openai", "gpt-4o", input=20, output=5, start_ns=at(2026, 11, 30, 23, 59)))
    assert len(built) == 1
    assert (first.cost, second.cost) == (10 * usd("2.5e-6"), 20 * usd("2.5e-6") + 5 * usd("1e-5"))
    book.price(make_call("openai", "gpt-4o", input=10, start_ns=at(2026, 12, 1, 0)))  # another day
    book.price(make_call("openai", "gpt-4o", input=10, tier="priority"))  # another price context
    book.price(make_call("openai", "gpt-4o-mini", input=10))  # another model
    assert len(built) == 4
    book.price(make_call("openai", "gpt-4o", input=99, tier="priority"))
    book.price(make_call("openai", "acme-9000", input=1))
    book.price(make_call("openai", "acme-9000", input=2))
    assert len(built) == 4


def test_time_of_day_cards_are_built_once_per_window(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[datetime] = []
    real = book_module.build_rate_card

    def counting(entry: CatalogEntry, when: datetime, context: Any, version: str) -> RateCard:
        built.append(when)
        return real(entry, when, context, version)

    monkeypatch.setattr(book_module, "build_rate_card", counting)
    book = PriceBook()
    for hour in (1, 2, 3, 20, 21, 5, 6):
        book.price(make_call("deepseek", "deepseek-chat", input=1, start_ns=at(2026, 11, 30, hour)))
    assert len(built) == 2  # peak and off-peak


def test_card_lookup() -> None:
    book = PriceBook()
    card = book.card(make_call("anthropic", "claude-sonnet-4-5-20250929", input=1))
    assert isinstance(card, RateCard)
    assert (card.model_id, card.price_version, card.context) == ("claude-sonnet-4-5", CATALOG_VERSION, None)
    flex = book.card(make_call("openai", "gpt-5", input=1, tier="flex"))
    assert flex is not None
    assert flex.context == {"service_tier": "flex"}
    assert book.card(make_call("openai", "acme-9000", input=1)) is None
    assert book.card(make_call("openai", "gpt-4o", usage=False)) is None
    deepseek = book.card(make_call("deepseek", "deepseek-chat", input=1))
    assert isinstance(deepseek, RateCard)


# --- the catalog adapter -------------------------------------------------------------------------------------


def test_usage_for_counts_the_whole_prompt_as_input() -> None:
    call = make_call("openai", "gpt-4o", input=200, cache_read=1000, cache_write=500, cache_write_1h=100)
    call.output_tokens, call.reasoning_tokens = 300, 50
    assert usage_for(call) == Usage(
        input_tokens=1700,
        cache_read_tokens=1000,
        cache_write_tokens=500,
        cache_write_1h_tokens=100,
        output_tokens=300,
        output_reasoning_tokens=50,
    )
    assert usage_for(make_call("openai", "gpt-4o", input=5)) == Usage(input_tokens=5, output_tokens=0)


def test_request_time_is_the_span_start_in_utc() -> None:
    call = make_call("openai", "gpt-4o", start_ns=at(2026, 11, 30, 16, 29, 59, 999_999_999))
    assert request_time(call) == datetime(2026, 11, 30, 16, 29, 59, 999_999, tzinfo=UTC)


@pytest.mark.parametrize(
    ("provider", "provider_id"),
    [
        ("openai", "openai"),
        ("anthropic", "anthropic"),
        ("aws.bedrock", "aws"),
        ("azure.ai.openai", "azure"),
        ("azure.ai.inference", "azure"),
        ("gcp.gemini", "google"),
        ("gcp.vertex_ai", "google"),
        ("gcp.gen_ai", "google"),
        ("mistral_ai", "mistral"),
        ("x_ai", "x-ai"),
        ("deepseek", "deepseek"),
        ("groq", "groq"),
        ("cohere", "cohere"),
        ("perplexity", "perplexity"),
        ("moonshotai", "moonshotai"),  # not mapped: the catalog's own id
        ("", None),
    ],
)
def test_pricing_provider_id(provider: str, provider_id: str | None) -> None:
    assert pricing_provider_id(provider) == provider_id


def test_pricing_provider_id_unknown() -> None:
    with pytest.raises(LookupError) as caught:
        pricing_provider_id("acme.llm")
    assert str(caught.value) == "provider 'acme.llm' is not in the price catalog"


def test_find_model_unknown() -> None:
    with pytest.raises(LookupError) as caught:
        find_model("openai", "acme-9000")
    assert "acme-9000" in str(caught.value)


def test_sdk_style_model_paths_fall_back_to_the_catalog_name() -> None:
    book = PriceBook()
    path_ref = make_call("gcp.gemini", "models/gemini-2.5-pro", input=1000, output=100)
    plain = make_call("gcp.gemini", "gemini-2.5-pro", input=1000, output=100)
    priced = book.price(path_ref)
    assert priced.priced and priced.priced_model == "gemini-2.5-pro"
    assert priced.cost == book.price(plain).cost
