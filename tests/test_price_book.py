"""The price book end to end: spans from the real OTel SDK and OTLP exporter, through the real receiver,
stored by the real engine, with costs computed here, independently, from the providers' published list
prices (USD per million tokens).

- Gemini 2.5 Pro: input 1.25 / output 10 up to 200,000 prompt tokens; past that every token of the
  request at input 2.50 / output 15.
- Claude Sonnet 4.5: input 3, output 15, cache write 3.75 (5-minute TTL, 1.25x input) or 6 (1-hour TTL,
  2x input).
- GPT-5: input 1.25, output 10; flex tier input 0.625, output 5.
- GPT-4o: input 2.50, output 10; Batch API input 1.25, output 5.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from otel_cost.pricing import CATALOG_VERSION

from .helpers import RunningServer, send_with_sdk_span

MTOK = Decimal(1_000_000)


def at(day: str) -> int:
    """Noon UTC on `day`, in ns."""
    return int(datetime.fromisoformat(f"{day}T12:00:00").replace(tzinfo=UTC).timestamp()) * 1_000_000_000


def send(server: RunningServer, attributes: Mapping[str, Any], **options: Any) -> str:
    return send_with_sdk_span(server, attributes, **options)


def stored(server: RunningServer, span_id: str) -> dict[str, Any]:
    result = server.query(
        "SELECT toString(cost) AS cost, priced, priced_model, price_version, service_tier, processing, flags, "
        "emitter_cost, team, toString(input_audio_tokens) AS input_audio, "
        f"toString(output_audio_tokens) AS output_audio FROM requests WHERE span_id = '{span_id}'"
    )
    assert len(result.rows) == 1, result.rows
    row = result.dicts()[0]
    row["cost"] = Decimal(row["cost"])
    return row


def chat(provider: str, model: str, input_tokens: int, output_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        **extra,
    }


@pytest.mark.parametrize(
    ("prompt", "input_rate", "output_rate"),
    [(199_999, Decimal("1.25"), Decimal("10")), (200_001, Decimal("2.50"), Decimal("15"))],
)
def test_gemini_long_context_tier_applies_to_the_whole_request(
    server: RunningServer, prompt: int, input_rate: Decimal, output_rate: Decimal
) -> None:
    span_id = send(server, chat("gcp.gemini", "gemini-2.5-pro", prompt, 1_000), scope="openinference.instrumentation")
    row = stored(server, span_id)
    assert row["cost"] == (prompt * input_rate + 1_000 * output_rate) / MTOK
    assert (row["priced"], row["priced_model"]) == (1, "gemini-2.5-pro")


@pytest.mark.parametrize(("one_hour", "write_rate"), [(2_000, Decimal("6")), (0, Decimal("3.75"))])
def test_anthropic_cache_writes_at_their_ttl_rate(server: RunningServer, one_hour: int, write_rate: Decimal) -> None:
    # OpenLLMetry's Anthropic input count includes the cache: 1,000 uncached + 2,000 written.
    attributes = chat(
        "anthropic",
        "claude-sonnet-4-5",
        3_000,
        500,
        **{"gen_ai.usage.cache_creation.input_tokens": 2_000},
    )
    if one_hour:
        attributes["gen_ai.usage.cache_creation.ephemeral_1h_input_tokens"] = one_hour
    span_id = send(server, attributes, scope="opentelemetry.instrumentation.anthropic", version="0.62.4")
    row = stored(server, span_id)
    assert row["cost"] == (1_000 * Decimal(3) + 2_000 * write_rate + 500 * Decimal(15)) / MTOK


def test_openai_flex_tier_and_batch_api_each_at_their_own_price(server: RunningServer) -> None:
    flex = stored(
        server, send(server, chat("openai", "gpt-5", 1_000, 100, **{"gen_ai.openai.response.service_tier": "flex"}))
    )
    standard = stored(server, send(server, chat("openai", "gpt-5", 1_000, 100)))
    batch = stored(server, send(server, chat("openai", "gpt-4o", 1_000, 100, **{"gen_ai.batch.id": "batch_6f2a"})))
    online = stored(server, send(server, chat("openai", "gpt-4o", 1_000, 100)))
    assert flex["cost"] == (1_000 * Decimal("0.625") + 100 * Decimal(5)) / MTOK
    assert standard["cost"] == (1_000 * Decimal("1.25") + 100 * Decimal(10)) / MTOK
    assert batch["cost"] == (1_000 * Decimal("1.25") + 100 * Decimal(5)) / MTOK
    assert online["cost"] == (1_000 * Decimal("2.50") + 100 * Decimal(10)) / MTOK
    assert (flex["service_tier"], flex["processing"]) == ("flex", "")
    assert (batch["service_tier"], batch["processing"]) == ("", "batch")


def test_the_response_tier_wins_over_the_request_tier(server: RunningServer) -> None:
    attributes = chat(
        "openai",
        "gpt-5",
        1_000,
        100,
        **{"gen_ai.openai.request.service_tier": "priority", "gen_ai.openai.response.service_tier": "flex"},
    )
    row = stored(server, send(server, attributes))
    assert row["service_tier"] == "flex"
    assert row["cost"] == (1_000 * Decimal("0.625") + 100 * Decimal(5)) / MTOK


OVERRIDES = [
    {"name": "azure-prod-gpt4o", "deployment": "my-gpt4o-prod", "provider": "openai", "model": "gpt-4o"},
    {
        "name": "anthropic-contract-2026",
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "multiplier": "0.80",
        "effective_from": "2026-12-01",
    },
    {"name": "self-hosted-llama", "provider": "vllm", "model": "llama-3.3-70b", "prices": {"input_mtok": "0.10"}},
]


@pytest.fixture
def negotiated(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server({"pricing": {"overrides": OVERRIDES}})


def test_an_azure_deployment_alias_is_priced_as_its_model(negotiated: RunningServer) -> None:
    row = stored(negotiated, send(negotiated, chat("azure.ai.openai", "my-gpt4o-prod", 1_000, 100)))
    assert row["cost"] == (1_000 * Decimal("2.50") + 100 * Decimal(10)) / MTOK
    assert row["priced_model"] == "gpt-4o"
    assert row["price_version"].startswith(f"{CATALOG_VERSION}+azure-prod-gpt4o#")


def test_a_negotiated_discount_starts_on_its_effective_date(negotiated: RunningServer) -> None:
    attributes = chat("anthropic", "claude-sonnet-4-5", 1_000, 100)
    before = stored(negotiated, send(negotiated, attributes, start_ns=at("2026-11-30")))
    after = stored(negotiated, send(negotiated, attributes, start_ns=at("2026-12-02")))
    list_price = (1_000 * Decimal(3) + 100 * Decimal(15)) / MTOK
    assert before["cost"] == list_price
    assert before["price_version"] == CATALOG_VERSION
    assert after["cost"] == list_price * Decimal("0.80")
    assert after["price_version"].startswith(f"{CATALOG_VERSION}+anthropic-contract-2026#")


def test_a_self_hosted_model_is_priced_per_token_from_config(negotiated: RunningServer) -> None:
    row = stored(negotiated, send(negotiated, chat("vllm", "llama-3.3-70b", 5_000, 100)))
    assert row["cost"] == 5_000 * Decimal("0.10") / MTOK  # output has no price: free, as configured
    assert (row["priced"], row["priced_model"]) == (1, "llama-3.3-70b")


def test_openlit_reported_zero_cost_is_kept_apart_and_we_price_the_call(server: RunningServer) -> None:
    attributes = chat("openai", "gpt-4o", 1_000, 100, **{"gen_ai.usage.cost": 0.0})
    row = stored(server, send(server, attributes, scope="openlit.otel.tracing", version="1.35.0"))
    assert row["cost"] == (1_000 * Decimal("2.50") + 100 * Decimal(10)) / MTOK
    assert row["emitter_cost"] == "0.0"
    assert row["priced"] == 1


def test_a_floating_alias_is_flagged_and_priced_by_what_served(server: RunningServer) -> None:
    attributes = chat("openai", "gpt-4o", 1_000, 100, **{"gen_ai.response.model": "gpt-4o-mini-2024-07-18"})
    row = stored(server, send(server, attributes))
    assert "floating_alias" in row["flags"]
    assert row["priced_model"] == "gpt-4o-mini"
    assert row["cost"] == (1_000 * Decimal("0.15") + 100 * Decimal("0.60")) / MTOK


def test_audio_tokens_at_the_audio_rates(server: RunningServer) -> None:
    # gpt-audio: text input 2.50, output 10; audio input 32, output 64. logfire reports the modality split.
    attributes = chat(
        "openai",
        "gpt-audio",
        1_000,
        200,
        **{"gen_ai.usage.details.input_audio_tokens": 400, "gen_ai.usage.details.output_audio_tokens": 150},
    )
    row = stored(server, send(server, attributes, scope="pydantic-ai", version="1.0.0"))
    text = 600 * Decimal("2.50") + 50 * Decimal(10)
    audio = 400 * Decimal(32) + 150 * Decimal(64)
    assert row["cost"] == (text + audio) / MTOK
    assert (row["input_audio"], row["output_audio"]) == ("400", "150")
