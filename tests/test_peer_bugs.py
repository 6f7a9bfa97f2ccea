"""Bugs that peers shipped (../shared/reference/peers.md, pricing.md, genai-semconv.md), each as a test that
would have caught it here. Spans go through normalization and pricing exactly as the pipeline runs them.

Prices used (genai-prices 0.2.3, USD per million tokens, at 2026-11-30): gpt-4o 2.50 in / 1.25 cached /
10 out; gpt-4.1 2 / 0.50 / 8; gpt-4 30 / 60; o3 2 / 0.50 / 8 (10 / 40 before 2025-06-10); gpt-5.1 1.25 /
0.125 / 10; chatgpt-4o-latest 5 / 15; claude-sonnet-4-5 3 in / 0.30 read / 3.75 write (5 min) / 6 write
(1 h) / 15 out, doubled (output 22.50) above 200k prompt tokens; gemini-2.5-pro 1.25 / 0.125 / 10, and
2.50 / 0.25 / 15 above 200k; Bedrock Claude Opus 4.5 regional (eu., us.) 5.50 / 0.55 / 6.875 / 27.50,
global 5 / 0.50 / 6.25 / 25.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from otel_cost.model import Call, Priced
from otel_cost.pricing import CATALOG_VERSION, PriceBook
from otel_cost.semconv import emitter_for_scope, extract, to_dict

from .helpers import NOW_NS, chat_attributes, make_span

OPENLLMETRY_OPENAI = ("opentelemetry.instrumentation.openai.v1", "0.62.4")
OPENLLMETRY_ANTHROPIC = ("opentelemetry.instrumentation.anthropic", "0.62.4")
OPENLIT = ("openlit.otel.tracing", "1.35.2")
PYDANTIC_AI = ("pydantic-ai", "1.0.10")
LITELLM = ("litellm", "1.80.11")


def per_mtok(price: str) -> Decimal:
    return Decimal(price) / 1_000_000


def price_span(attributes: dict[str, Any], scope: tuple[str, str] = OPENLLMETRY_OPENAI) -> tuple[Call, Priced]:
    span = make_span(attributes)  # starts 2026-11-30
    call = extract(span, to_dict(span.attributes), emitter_for_scope(*scope), NOW_NS)
    assert call is not None
    return call, PriceBook().price(call)


def anthropic_chat(model: str = "claude-sonnet-4-5", **usage: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": model,
        **usage,
    }


# --- cached tokens counted twice or priced wrong ---------------------------------------------------------


def test_litellm_9812_langfuse_10592_openai_cached_tokens_counted_once() -> None:
    """LiteLLM #9812 / #6215, Langfuse #10592: OpenAI's prompt count INCLUDES the cached tokens; pricing
    the whole prompt at the input rate and the cached part again at the cache rate bills them twice."""
    call, priced = price_span(chat_attributes(**{"gen_ai.usage.cache_read.input_tokens": 1000}))
    assert (call.input_tokens, call.cache_read_tokens, call.output_tokens) == (200, 1000, 300)
    right = 200 * per_mtok("2.50") + 1000 * per_mtok("1.25") + 300 * per_mtok("10")
    counted_twice = 1200 * per_mtok("2.50") + 1000 * per_mtok("1.25") + 300 * per_mtok("10")
    no_discount = 1200 * per_mtok("2.50") + 300 * per_mtok("10")
    assert priced.cost == right == Decimal("0.00475")
    assert priced.cost not in (counted_twice, no_discount)


def test_litellm_6215_cached_tokens_priced_at_the_cached_rate() -> None:
    """LiteLLM #6215: prompt_tokens 2006 of which cached 1920, completion 300, billed as 2006 uncached."""
    attributes = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.prompt_tokens": 2006,
        "gen_ai.usage.completion_tokens": 300,
        "gen_ai.usage.total_tokens": 2306,
        "gen_ai.usage.prompt_tokens_details.cached_tokens": 1920,
    }
    call, priced = price_span(attributes, LITELLM)
    assert (call.input_tokens, call.cache_read_tokens, call.flags) == (86, 1920, [])
    assert priced.cost == 86 * per_mtok("2.50") + 1920 * per_mtok("1.25") + 300 * per_mtok("10")


def test_litellm_14849_gemini_cache_hits_not_charged_twice_and_the_tier_still_applies() -> None:
    """LiteLLM #14849: gemini-2.5-pro, prompt 262,960 with 257,955 cache hits, completion 1,744: reported
    $0.7642 by charging the hits at both rates. The prompt is past 200k, so every token is at the tier rate."""
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "gcp.gemini",
        "gen_ai.request.model": "gemini-2.5-pro",
        "gen_ai.usage.input_tokens": 262_960,
        "gen_ai.usage.cache_read.input_tokens": 257_955,
        "gen_ai.usage.output_tokens": 1_744,
    }
    call, priced = price_span(attributes, ("opentelemetry.instrumentation.google_genai", "0.4b0"))
    assert (call.input_tokens, call.cache_read_tokens) == (5_005, 257_955)
    assert priced.cost == 5_005 * per_mtok("2.50") + 257_955 * per_mtok("0.25") + 1_744 * per_mtok("15")
    assert priced.cost == Decimal("0.10316125")


def test_litellm_36168_langfuse_12306_anthropic_cache_priced_at_cache_rates() -> None:
    """LiteLLM #36168, Langfuse #12306: pydantic-ai reports Anthropic input INCLUDING the cache (130,213 =
    5 uncached + 128,955 read + 1,253 written); adding the cache on top doubled the prompt and the cost."""
    attributes = anthropic_chat(
        **{
            "gen_ai.usage.input_tokens": 130_213,
            "gen_ai.usage.output_tokens": 800,
            "gen_ai.usage.details.cache_read_tokens": 128_955,
            "gen_ai.usage.details.cache_write_tokens": 1_253,
        }
    )
    call, priced = price_span(attributes, PYDANTIC_AI)
    assert (call.input_tokens, call.cache_read_tokens, call.cache_write_tokens, call.prompt_tokens) == (
        5,
        128_955,
        1_253,
        130_213,
    )
    assert call.flags == []
    assert priced.cost == (
        5 * per_mtok("3") + 128_955 * per_mtok("0.30") + 1_253 * per_mtok("3.75") + 800 * per_mtok("15")
    )


def test_litellm_11364_bedrock_anthropic_cache_reads_and_writes_priced() -> None:
    """LiteLLM #11364: Bedrock eu. Claude Opus 4.5, prompt 98,805 incl. 66,360 cache reads and 32,435 cache
    writes, 5,120 completion (1,710 reasoning): recorded as $0.047080."""
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "bedrock",
        "gen_ai.request.model": "eu.anthropic.claude-opus-4-5-20251101-v1:0",
        "gen_ai.usage.prompt_tokens": 98_805,
        "gen_ai.usage.completion_tokens": 5_120,
        "gen_ai.usage.total_tokens": 103_925,
        "gen_ai.usage.cache_read_input_tokens": 66_360,
        "gen_ai.usage.cache_creation_input_tokens": 32_435,
        "gen_ai.usage.reasoning_tokens": 1_710,
    }
    call, priced = price_span(attributes, LITELLM)
    assert (call.input_tokens, call.cache_read_tokens, call.cache_write_tokens, call.reasoning_tokens) == (
        10,
        66_360,
        32_435,
        1_710,
    )
    assert call.flags == []
    assert priced.priced_model == "regional.anthropic.claude-opus-4-5-v1:0"
    assert priced.cost == (
        10 * per_mtok("5.50") + 66_360 * per_mtok("0.55") + 32_435 * per_mtok("6.875") + 5_120 * per_mtok("27.50")
    )
    assert priced.cost == Decimal("0.400343625")


def test_openllmetry_anthropic_inclusive_input_not_charged_twice() -> None:
    """genai-semconv.md: OpenLLMetry reports Anthropic input as 2550 = 50 + 2000 read + 500 written."""
    attributes = anthropic_chat(
        **{
            "gen_ai.usage.input_tokens": 2550,
            "gen_ai.usage.output_tokens": 400,
            "gen_ai.usage.cache_read.input_tokens": 2000,
            "gen_ai.usage.cache_creation.input_tokens": 500,
        }
    )
    call, priced = price_span(attributes, OPENLLMETRY_ANTHROPIC)
    assert call.input_tokens == 50
    assert priced.cost == Decimal("0.008625")


def test_openlit_1378_exclusive_anthropic_counts_not_subtracted_again() -> None:
    """OpenLIT #1378: OpenLIT copies Anthropic's raw, EXCLUSIVE input count. Subtracting the cache from it
    (as if inclusive) under-bills, or goes negative; here 3000 uncached stays 3000 although it is larger than
    the cache parts, and 50 stays 50 although it is smaller."""
    for uncached in (3000, 50):
        attributes = anthropic_chat(
            **{
                "gen_ai.usage.input_tokens": uncached,
                "gen_ai.usage.output_tokens": 400,
                "gen_ai.usage.cache_read.input_tokens": 2000,
                "gen_ai.usage.cache_creation.input_tokens": 500,
            }
        )
        call, priced = price_span(attributes, OPENLIT)
        assert (call.input_tokens, call.prompt_tokens, call.flags) == (uncached, uncached + 2500, [])
        assert priced.cost == (
            uncached * per_mtok("3") + 2000 * per_mtok("0.30") + 500 * per_mtok("3.75") + 400 * per_mtok("15")
        )


def test_litellm_33772_cache_writes_not_priced_as_plain_input() -> None:
    """LiteLLM #33772: cache-write tokens fell through to the plain input rate."""
    attributes = anthropic_chat(
        **{
            "gen_ai.usage.input_tokens": 10_100,
            "gen_ai.usage.output_tokens": 0,
            "gen_ai.usage.cache_write.input_tokens": 10_000,
        }
    )
    call, priced = price_span(attributes, OPENLLMETRY_ANTHROPIC)
    assert (call.input_tokens, call.cache_write_tokens) == (100, 10_000)
    assert priced.cost == 100 * per_mtok("3") + 10_000 * per_mtok("3.75")
    assert priced.cost != 10_100 * per_mtok("3")


def test_genai_prices_295_anthropic_one_hour_cache_writes_cost_2x_input() -> None:
    """genai-prices #295: Anthropic bills 5-minute cache writes at 1.25x input and 1-hour writes at 2x;
    pricing every write at the 5-minute rate under-bills 1-hour caching by 1.6x."""
    attributes = anthropic_chat(
        **{
            "gen_ai.usage.input_tokens": 1_100,
            "gen_ai.usage.output_tokens": 0,
            "gen_ai.usage.cache_creation.input_tokens": 1_000,
            "gen_ai.usage.cache_creation.ephemeral_1h_input_tokens": 400,
        }
    )
    call, priced = price_span(attributes, OPENLLMETRY_ANTHROPIC)
    assert (call.input_tokens, call.cache_write_tokens, call.cache_write_1h_tokens) == (100, 1_000, 400)
    five_minute, one_hour = per_mtok("3.75"), per_mtok("6")
    assert (five_minute, one_hour) == (per_mtok("3") * Decimal("1.25"), per_mtok("3") * 2)
    assert priced.cost == 100 * per_mtok("3") + 600 * five_minute + 400 * one_hour
    card = PriceBook().card(call)
    assert card is not None
    (_, rates), _ = card.rates()
    assert rates["cache_write_1h"] == 2 * rates["input"]
    assert rates["cache_write"] == Decimal("1.25") * rates["input"]


# --- reasoning tokens dropped or double counted ----------------------------------------------------------


def test_litellm_10567_langfuse_11244_reasoning_billed_once() -> None:
    """LiteLLM #10567 / #18599 / #30099, Langfuse #11244: reasoning is a SUBSET of output. Langfuse #11244's
    span (AI SDK, gpt-5.1, values as strings): output 1970 of which 956 reasoning was billed as 2926."""
    attributes = {
        "ai.operationId": "ai.generateText.doGenerate",
        "ai.model.provider": "openai.responses",
        "gen_ai.system": "openai.responses",
        "gen_ai.request.model": "gpt-5.1",
        "gen_ai.usage.input_tokens": "22118",
        "gen_ai.usage.output_tokens": "1970",
        "ai.usage.reasoningTokens": "956",
        "ai.usage.totalTokens": "24088",
    }
    call, priced = price_span(attributes, ("ai", "5.0.52"))
    assert (call.provider, call.output_tokens, call.reasoning_tokens, call.flags) == ("openai", 1970, 956, [])
    assert priced.cost == 22_118 * per_mtok("1.25") + 1_970 * per_mtok("10")
    assert priced.cost != 22_118 * per_mtok("1.25") + 2_926 * per_mtok("10")  # double counted
    assert priced.cost != 22_118 * per_mtok("1.25") + 1_014 * per_mtok("10")  # reasoning dropped


def test_o_series_reasoning_tokens_billed_as_output() -> None:
    """LiteLLM #10567: o-series reasoning tokens must be billed (at the output rate), exactly once."""
    attributes = chat_attributes(
        **{
            "gen_ai.request.model": "o3",
            "gen_ai.response.model": "o3-2025-04-16",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 1000,
            "gen_ai.usage.reasoning_tokens": 600,
        }
    )
    call, priced = price_span(attributes)
    assert (call.output_tokens, call.reasoning_tokens) == (1000, 600)
    assert priced.cost == 100 * per_mtok("2") + 1000 * per_mtok("8") == Decimal("0.0082")


def test_reasoning_reported_outside_output_is_added_not_dropped() -> None:
    """The other way round (Langfuse #11244's inverse): an emitter whose output excludes reasoning reports
    more reasoning than output. The reasoning is billed on top, and the row is flagged."""
    attributes = chat_attributes(
        **{
            "gen_ai.request.model": "o3",
            "gen_ai.response.model": "o3",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 200,
            "gen_ai.usage.reasoning_tokens": 600,
        }
    )
    call, priced = price_span(attributes)
    assert (call.output_tokens, call.flags) == (800, ["reasoning_exceeds_output"])
    assert priced.cost == 100 * per_mtok("2") + 800 * per_mtok("8")


# --- silent $0 -------------------------------------------------------------------------------------------


def test_litellm_37923_langfuse_4112_unknown_model_is_unpriced_not_zero() -> None:
    """LiteLLM #37923 (€830 billed, $1.47 recorded), Langfuse #4112: a model the catalog does not know was
    recorded as $0 and budgets never triggered. Here it is unpriced, with its tokens and a reason."""
    call, priced = price_span(chat_attributes(**{"gen_ai.request.model": "gpt-7-preview", "gen_ai.response.model": ""}))
    assert (call.input_tokens, call.output_tokens) == (1200, 300)
    assert priced == Priced(
        0, False, "", CATALOG_VERSION, "model 'gpt-7-preview' is not in the price catalog for provider 'openai'"
    )


def test_langfuse_4112_chatgpt_4o_latest_has_its_own_price() -> None:
    """Langfuse #4112: chatgpt-4o-latest was priced at $0 (and elsewhere with swapped prices)."""
    _, priced = price_span(
        chat_attributes(**{"gen_ai.request.model": "chatgpt-4o-latest", "gen_ai.response.model": ""})
    )
    assert priced.priced_model == "chatgpt-4o-latest"
    assert priced.cost == 1200 * per_mtok("5") + 300 * per_mtok("15") == Decimal("0.0105")


def test_litellm_40100_streamed_call_without_usage_is_unpriced_not_zero() -> None:
    """LiteLLM #40100: streamed responses without usage recorded as $0 spend. A successful call that
    reports no usage is flagged and unpriced, never a priced $0."""
    call, priced = price_span(
        {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}
    )
    assert call.flags == ["usage_missing"]
    assert (priced.priced, priced.cost, priced.reason) == (False, Decimal(0), "no usage reported")


def test_openlit_zero_emitter_cost_is_not_trusted() -> None:
    """genai-semconv.md: OpenLIT's `gen_ai.usage.cost` is often 0 when its own price fetch failed. It is
    kept for comparison; the bill comes from the catalog."""
    call, priced = price_span(chat_attributes(**{"gen_ai.usage.cost": 0.0}), OPENLIT)
    assert call.emitter_cost == "0.0"
    assert priced.cost == 1200 * per_mtok("2.50") + 300 * per_mtok("10")


# --- model matching --------------------------------------------------------------------------------------


def test_prefix_matching_does_not_send_gpt_4_1_to_gpt_4() -> None:
    """pricing.md: prefix matching sent gpt-4.1 to gpt-4 ($30/$60 instead of $2/$8)."""
    book = PriceBook()
    expectations = {
        "gpt-4.1": ("gpt-4.1", "2", "8"),
        "gpt-4.1-2025-04-14": ("gpt-4.1", "2", "8"),
        "gpt-4.1-mini": ("gpt-4.1-mini", "0.40", "1.60"),
        "gpt-4o": ("gpt-4o", "2.50", "10"),
        "gpt-4-turbo": ("gpt-4-turbo", "10", "30"),
        "gpt-4": ("gpt-4", "30", "60"),
    }
    for model, (priced_model, input_price, output_price) in expectations.items():
        call, _ = price_span(chat_attributes(**{"gen_ai.request.model": model, "gen_ai.response.model": model}))
        priced = book.price(call)
        assert priced.priced_model == priced_model, model
        assert priced.cost == 1200 * per_mtok(input_price) + 300 * per_mtok(output_price), model


def test_floating_alias_served_snapshot_is_priced_as_served() -> None:
    """pricing.md: floating aliases. The response model (what served) prices the call, not the request."""
    _, priced = price_span(
        chat_attributes(**{"gen_ai.request.model": "chatgpt-4o-latest", "gen_ai.response.model": "gpt-4o-2024-08-06"})
    )
    assert priced.priced_model == "gpt-4o"
    assert priced.cost == 1200 * per_mtok("2.50") + 300 * per_mtok("10")


def test_bedrock_regional_ids_are_priced_as_regional() -> None:
    """pricing.md: Bedrock `eu.`/`us.` regional ids cost 10% more than `global.`; a regional id must not be
    priced as global (nor go unpriced)."""
    prices = {}
    for model in (
        "eu.anthropic.claude-opus-4-5-20251101-v1:0",
        "us.anthropic.claude-opus-4-5-20251101-v1:0",
        "global.anthropic.claude-opus-4-5-20251101-v1:0",
    ):
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "aws.bedrock",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": 1_000_000,
            "gen_ai.usage.output_tokens": 0,
        }
        _, priced = price_span(attributes, ("opentelemetry.instrumentation.bedrock", "0.62.4"))
        prices[model.split(".", 1)[0]] = (priced.priced_model, priced.cost)
    assert prices == {
        "eu": ("regional.anthropic.claude-opus-4-5-v1:0", Decimal("5.5")),
        "us": ("regional.anthropic.claude-opus-4-5-v1:0", Decimal("5.5")),
        "global": ("global.anthropic.claude-opus-4-5-v1:0", Decimal("5")),
    }


def test_azure_deployment_names_are_unpriced_not_guessed() -> None:
    """pricing.md: Azure deployment names do not match catalog models; without an alias they are unpriced
    with the name in the reason (never priced as some other model, never $0)."""
    attributes = chat_attributes(
        **{
            "gen_ai.provider.name": "azure.ai.openai",
            "gen_ai.request.model": "my-gpt4o-prod",
            "gen_ai.response.model": "",
        }
    )
    _, priced = price_span(attributes)
    assert priced == Priced(
        0,
        False,
        "",
        CATALOG_VERSION,
        "model 'my-gpt4o-prod' is not in the price catalog for provider 'azure.ai.openai'",
    )


# --- tiers, variants, dates ------------------------------------------------------------------------------


def test_litellm_10597_long_context_cliff_applies_to_the_whole_request() -> None:
    """LiteLLM #10597: past 200k prompt tokens EVERY token of the request is charged at the long-context
    rate, not only the tokens above the threshold."""
    costs = {}
    for prompt in (200_000, 200_001):
        attributes = anthropic_chat(**{"gen_ai.usage.input_tokens": prompt, "gen_ai.usage.output_tokens": 1000})
        _, priced = price_span(attributes, OPENLLMETRY_ANTHROPIC)
        costs[prompt] = priced.cost
    assert costs[200_000] == 200_000 * per_mtok("3") + 1000 * per_mtok("15")
    assert costs[200_001] == 200_001 * per_mtok("6") + 1000 * per_mtok("22.50")
    marginal = 200_000 * per_mtok("3") + 1 * per_mtok("6") + 1000 * per_mtok("15")
    assert costs[200_001] != marginal


def test_service_tier_is_read_from_the_response_not_the_request() -> None:
    """pricing.md: flex/priority must come from the response: a priority request served at default pays
    default prices."""
    attributes = chat_attributes(
        **{
            "gen_ai.request.model": "gpt-5",
            "gen_ai.response.model": "gpt-5-2025-08-07",
            "gen_ai.openai.request.service_tier": "priority",
            "gen_ai.openai.response.service_tier": "default",
        }
    )
    call, priced = price_span(attributes)
    assert call.service_tier == "default"
    assert priced.cost == 1200 * per_mtok("1.25") + 300 * per_mtok("10")
    del attributes["gen_ai.openai.response.service_tier"]
    _, priority = price_span(attributes)
    assert priority.cost == 1200 * per_mtok("2.50") + 300 * per_mtok("20")


def test_genai_prices_535_every_price_carries_its_version_and_date() -> None:
    """genai-prices #535 (price history overwritten by an update), Langfuse #12184: every verdict records
    the catalog version, and a call is priced at the price of its own request date."""
    # 2025-06-09T23:59:59Z, the last second before o3's price cut
    before_cut = int(datetime(2025, 6, 9, 23, 59, 59, tzinfo=UTC).timestamp()) * 1_000_000_000
    attributes = chat_attributes(**{"gen_ai.request.model": "o3", "gen_ai.response.model": "o3"})
    span = make_span(attributes, start_ns=before_cut)
    call = extract(span, to_dict(span.attributes), emitter_for_scope(*OPENLLMETRY_OPENAI), NOW_NS)
    assert call is not None
    old = PriceBook().price(call)
    _, new = price_span(attributes)
    assert (old.price_version, new.price_version) == ("genai-prices@0.2.3", "genai-prices@0.2.3")
    assert old.cost == 1200 * per_mtok("10") + 300 * per_mtok("40")
    assert new.cost == 1200 * per_mtok("2") + 300 * per_mtok("8")
