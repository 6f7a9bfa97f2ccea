"""What of a span's attributes may be kept: content is dropped, secrets are redacted.

Content (prompts, completions, tool arguments and results) is named by the GenAI semantic conventions
(`gen_ai.input.messages`, `gen_ai.output.messages`, `gen_ai.system_instructions`, deprecated
`gen_ai.prompt`/`gen_ai.completion` and the indexed `gen_ai.prompt.N.*` form), OpenLLMetry
(`llm.prompts.*`, `traceloop.entity.input/output`), OpenInference (`input.value`, `output.value`,
`llm.input_messages.*`), the Vercel AI SDK (`ai.prompt*`, `ai.response.text`, ...), Langfuse and
pydantic-ai/logfire. Its values are never read, stored or forwarded.

Secrets are caught two ways: by key (`*.api_key`, `*authorization`, `*.password`, ...), whose values
are replaced without being read, and by value (provider key formats for OpenAI, Anthropic, AWS,
Google, GitHub, Slack, Stripe, Hugging Face; bearer/basic credentials; JWTs; PEM private keys).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["CONTENT", "KEEP", "REDACTED", "SECRET", "classify_key", "redact_values"]

KEEP, CONTENT, SECRET = 0, 1, 2
REDACTED = "[REDACTED]"

_CONTENT_EXACT = frozenset(
    {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.prompt",
        "gen_ai.completion",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.tool.definitions",
        "gen_ai.request.messages",
        "gen_ai.response.messages",
        "traceloop.entity.input",
        "traceloop.entity.output",
        "ai.prompt",
        "ai.prompt.messages",
        "ai.prompt.tools",
        "ai.prompt.toolChoice",
        "ai.response.text",
        "ai.response.toolCalls",
        "ai.response.object",
        "ai.response.reasoning",
        "ai.toolCall.args",
        "ai.toolCall.result",
        "ai.value",
        "ai.values",
        "ai.embedding",
        "ai.embeddings",
        "langfuse.observation.input",
        "langfuse.observation.output",
        "langfuse.trace.input",
        "langfuse.trace.output",
        "all_messages_events",
        # OpenInference: whole message lists, embedding inputs, retrieved and reranked documents
        "llm.prompts",
        "llm.input_messages",
        "llm.output_messages",
        "embedding.embeddings",
        "retrieval.documents",
        "reranker.query",
        "reranker.input_documents",
        "reranker.output_documents",
        "final_result",
        "events",
        "prompt",
        "completion",
        "messages",
    }
)

_CONTENT_PREFIXES = (
    "gen_ai.prompt.",
    "gen_ai.completion.",
    "gen_ai.input.messages.",
    "gen_ai.output.messages.",
    "llm.prompts.",
    "llm.completions.",
    "llm.input_messages.",
    "llm.output_messages.",
    "llm.prompt_template.",
    "embedding.embeddings.",
    "retrieval.documents.",
    "reranker.input_documents.",
    "reranker.output_documents.",
    "ai.prompt.",
    "input.",
    "output.",
)

# The last segment of a key (split on "." and "-") that names a credential. "tokens" (usage counts)
# and "*_alias"/"*_hash"/"*_id" (LiteLLM's attribution keys) do not match.
_SECRET_KEY = re.compile(
    r"(?:^|[._-])(?:api[_-]?key|apikey|secret|secret[_-]?key|client[_-]?secret|password|passwd|"
    r"authorization|proxy[_-]authorization|auth[_-]?token|access[_-]?token|refresh[_-]?token|id[_-]?token|"
    r"bearer|token|access[_-]?key|private[_-]?key|credentials?|cookie|set[_-]cookie|session[_-]?key|"
    r"x[_-]api[_-]key|api[_-]?token)$",
    re.IGNORECASE,
)

_SECRET_VALUE = re.compile(
    # OpenAI, Anthropic, Langfuse secret keys; `\b` so "risk-assessment-service-prod" is not one
    r"\bsk-(?:ant-|proj-|svcacct-|admin-|lf-)?[A-Za-z0-9_\-]{16,}"
    r"|\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|AIza[0-9A-Za-z_\-]{35}"  # Google API keys
    r"|\bya29\.[0-9A-Za-z_\-]{20,}"  # Google OAuth access tokens
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{22,}"  # GitHub tokens
    r"|\bxox[abposr]-[A-Za-z0-9\-]{10,}"  # Slack tokens
    r"|\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe keys
    r"|\bhf_[A-Za-z0-9]{30,}"  # Hugging Face tokens
    # authorization header values; the credential must hold a digit, "=" or "." so prose ("basic research") is kept
    r"|\b(?:[Bb]earer|BEARER)\s+(?=[A-Za-z_~+/\-]*[0-9=.])[A-Za-z0-9._~+/=\-]{8,}"
    r"|\b(?:[Bb]asic|BASIC)\s+(?=[A-Za-z+/]*[0-9=])[A-Za-z0-9+/]{8,}={0,2}"
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"  # JWTs
    # PEM private keys: the key material up to the END line (or the end of a cut value), not just BEGIN
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----(?s:.*?-----END [A-Z ]*PRIVATE KEY-----|.*)"
)

_cache: dict[str, int] = {}
_CACHE_LIMIT = 20_000


def classify_key(key: str) -> int:
    """KEEP, CONTENT (drop without reading the value) or SECRET (replace without reading the value)."""
    known = _cache.get(key)
    if known is not None:
        return known
    if key in _CONTENT_EXACT or key.startswith(_CONTENT_PREFIXES):
        verdict = CONTENT
    elif _SECRET_KEY.search(key):
        verdict = SECRET
    else:
        verdict = KEEP
    # Keys repeat across spans; the bound keeps hostile key churn from growing memory.
    if len(_cache) < _CACHE_LIMIT:
        _cache[key] = verdict
    return verdict


def redact_text(text: str) -> str:
    return _SECRET_VALUE.sub(REDACTED, text)


def _redact_nested(value: Any) -> Any:
    if isinstance(value, str):
        return value if value in _clean or not _suspicious(value) else redact_text(value)
    if isinstance(value, list):
        return [_redact_nested(item) for item in value]
    if isinstance(value, dict):
        return {key: _redact_nested(item) for key, item in value.items()}
    return value


# Literal pieces every pattern of _SECRET_VALUE starts with (or contains, for "Bearer"/"Basic"). Substring
# search is ~20x cheaper than the regex, and almost no clean span contains any of them.
_MARKERS = (
    "sk-",
    "sk_",
    "rk_",
    "AKIA",
    "ASIA",
    "ABIA",
    "ACCA",
    "AIza",
    "ya29.",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "hf_",
    "earer",
    "EARER",
    "asic",
    "ASIC",
    "eyJ",
    "-----BEGIN",
)


# Values repeat across spans (models, providers, endpoints, team names): those already seen to hold no
# marker are skipped by one set lookup. Bounded, so hostile value churn only costs the scan.
_clean: set[str] = set()
_CLEAN_LIMIT = 100_000


def _suspicious(text: str) -> bool:
    for marker in _MARKERS:
        if marker in text:
            return True
    if len(_clean) >= _CLEAN_LIMIT:
        _clean.clear()
    _clean.add(text)
    return False


def redact_values(attrs: dict[str, Any]) -> int:
    """Replace secret-looking substrings in `attrs` (in place). Returns how many values changed.

    Numbers cannot hold a credential. A text value is checked for the patterns' literal markers (once
    per distinct value); only a value that has one pays for the regex.
    """
    changed = 0
    for key, value in attrs.items():
        kind = type(value)
        if kind is str:
            if value in _clean or not _suspicious(value):
                continue
            clean: Any = redact_text(value)
        elif kind is list or kind is dict:
            clean = _redact_nested(value)
        else:
            continue
        if clean != value:
            attrs[key] = clean
            changed += 1
    return changed
