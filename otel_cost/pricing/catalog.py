"""The public price catalog: genai-prices, pinned, bundled in the wheel, never updated at run time.

This module is the only one that knows genai-prices' object model. It turns a call's provider and
model into the catalog's provider and model entry, and a call's token classes into a
`genai_prices.Usage`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import genai_prices
from genai_prices import Usage, data_snapshot
from genai_prices.types import ModelInfo, Provider, TimeOfDateConstraint

from ..model import Call

__all__ = [
    "CATALOG_VERSION",
    "CatalogEntry",
    "find_model",
    "pricing_provider_id",
    "request_time",
    "usage_for",
]

#: Recorded in every row's `price_version` (with the override identity, when one applies).
CATALOG_VERSION = f"genai-prices@{genai_prices.__version__}"

# Canonical provider names (semconv `gen_ai.provider.name` values) -> genai-prices provider ids.
_PROVIDER_IDS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "aws.bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "groq": "groq",
    "mistral_ai": "mistral",
    "perplexity": "perplexity",
    "x_ai": "x-ai",
    "together": "together",
    "fireworks": "fireworks",
    "openrouter": "openrouter",
}


class CatalogEntry:
    """A catalog model as offered by one provider."""

    __slots__ = ("model", "provider", "time_varying")

    def __init__(self, provider: Provider, model: ModelInfo) -> None:
        self.provider = provider
        self.model = model
        # deepseek's off-peak prices depend on the time of day, not only the date.
        self.time_varying = isinstance(model.prices, list) and any(
            isinstance(conditional.constraint, TimeOfDateConstraint) for conditional in model.prices
        )


def pricing_provider_id(provider: str) -> str | None:
    """The genai-prices provider id for a canonical provider name; None lets the model name decide.

    Raises LookupError for a provider the catalog does not know.
    """
    if not provider:
        return None
    known = _PROVIDER_IDS.get(provider)
    if known is not None:
        return known
    found = data_snapshot.find_provider_by_id(data_snapshot.get_snapshot().providers, provider)
    if found is None:
        raise LookupError(f"provider {provider!r} is not in the price catalog")
    return found.id


def find_model(provider_id: str | None, model_ref: str) -> CatalogEntry:
    """Raises LookupError when the catalog has no such model (for that provider)."""
    provider, model = data_snapshot.get_snapshot().find_provider_model(model_ref, None, provider_id, None)
    return CatalogEntry(provider, model)


def usage_for(call: Call) -> Usage:
    """The call's tokens in genai-prices' terms (its input count includes cache reads and writes)."""
    values: dict[str, Any] = {
        "input_tokens": call.input_tokens + call.cache_read_tokens + call.cache_write_tokens,
        "output_tokens": call.output_tokens,
    }
    if call.cache_read_tokens:
        values["cache_read_tokens"] = call.cache_read_tokens
    if call.cache_write_tokens:
        values["cache_write_tokens"] = call.cache_write_tokens
    if call.cache_write_1h_tokens:
        values["cache_write_1h_tokens"] = call.cache_write_1h_tokens
    if call.reasoning_tokens:
        values["output_reasoning_tokens"] = call.reasoning_tokens
    # Our audio counts are uncached input and non-reasoning output: the overlaps genai-prices asks about are 0.
    if call.input_audio_tokens:
        values["input_audio_tokens"] = call.input_audio_tokens
        if call.cache_read_tokens:
            values["cache_audio_read_tokens"] = 0
        if call.cache_write_tokens:
            values["cache_audio_write_tokens"] = 0
            if call.cache_write_1h_tokens:
                values["cache_audio_write_1h_tokens"] = 0
    if call.output_audio_tokens:
        values["output_audio_tokens"] = call.output_audio_tokens
        if call.reasoning_tokens:
            values["output_audio_reasoning_tokens"] = 0
    return Usage(**values)


def request_time(call: Call) -> datetime:
    """When the request was made (span start), at microsecond precision: prices are dated by it."""
    seconds, nanos = divmod(call.start_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=nanos // 1000)
