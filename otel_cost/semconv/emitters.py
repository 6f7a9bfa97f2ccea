"""Who emitted a span, and what that says about its token counts.

The semantic conventions say `gen_ai.usage.input_tokens` includes cache reads and writes. Anthropic's
API reports input without them, and some instrumentations copy that raw, exclusive count:

| emitter (instrumentation scope)            | Anthropic input tokens |
|--------------------------------------------|------------------------|
| OpenLIT (`openlit*`)                       | exclusive              |
| Vercel AI SDK (`ai`) 5.x                   | exclusive              |
| Vercel AI SDK (`ai`) >= 6                  | inclusive              |
| logfire (`logfire*`)                      | exclusive before pydantic/logfire#1812 (2026-03), inclusive after |
| OpenLLMetry, OpenInference, openai-v2, the Anthropic SDK's own spans, LiteLLM | inclusive |

The logfire release that shipped #1812 is not pinned down here, so logfire spans (like every emitter
not in the table) are decided by the data:  inclusive counts always satisfy
`input >= cache_read + cache_write`; a count that breaks that rule is exclusive.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["EXCLUSIVE", "INCLUSIVE", "UNKNOWN", "Emitter", "emitter_for_scope"]

INCLUSIVE = "inclusive"
EXCLUSIVE = "exclusive"
UNKNOWN = "unknown"


class Emitter(NamedTuple):
    name: str  # instrumentation scope name, e.g. "opentelemetry.instrumentation.anthropic"
    version: str
    label: str  # "name@version", stored on every row
    anthropic_cache: str  # INCLUSIVE, EXCLUSIVE or UNKNOWN (decided per span from the data)


_DIGITS = frozenset("0123456789")


def _version_tuple(version: str) -> tuple[int, ...] | None:
    """The leading numbers of a version string. ASCII digits only: `str.isdigit` also accepts "²",
    which `int` refuses; a piece is cut at 9 digits, so a hostile version string stays cheap."""
    parts: list[int] = []
    for piece in version.lstrip("v").split(".", 8):
        digits = ""
        for char in piece[:9]:
            if char not in _DIGITS:
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None


def _anthropic_cache_convention(name: str, version: str) -> str:
    lowered = name.lower()
    parsed = _version_tuple(version)
    if lowered.startswith("openlit"):
        return EXCLUSIVE
    if lowered == "ai":
        if parsed is None:
            return UNKNOWN
        return EXCLUSIVE if parsed[0] < 6 else INCLUSIVE
    if lowered.startswith(("opentelemetry.instrumentation.", "openinference.", "anthropic", "litellm")):
        return INCLUSIVE
    return UNKNOWN


_cache: dict[tuple[str, str], Emitter] = {}


def emitter_for_scope(name: str, version: str) -> Emitter:
    """The (memoized) emitter for an instrumentation scope."""
    key = (name, version)
    emitter = _cache.get(key)
    if emitter is None:
        label = f"{name}@{version}" if version else name
        emitter = Emitter(name, version, label[:200], _anthropic_cache_convention(name, version))
        if len(_cache) < 10_000 and len(name) + len(version) <= 512:  # bounded: hostile scopes stay cheap
            _cache[key] = emitter
    return emitter
