"""What of a span's attributes may be kept: content is dropped, secrets are redacted.

Content (prompts, completions, tool arguments and results) is named by the GenAI semantic conventions
(`gen_ai.input.messages`, `gen_ai.output.messages`, `gen_ai.system_instructions`, deprecated
`gen_ai.prompt`/`gen_ai.completion` and the indexed `gen_ai.prompt.N.*` form), OpenLLMetry
(`llm.prompts.*`, `traceloop.entity.input/output`), OpenInference (`input.value`, `output.value`,
`llm.input_messages.*`), the Vercel AI SDK (`ai.prompt*`, `ai.response.text`, ...), Langfuse and
pydantic-ai/logfire. Its values are never read, stored or forwarded.

Secrets are caught two ways: by key (`*.api_key`, `*authorization`, `*.password`, ...), whose values
are replaced without being read, and by value (provider key formats for OpenAI, Anthropic, AWS access
key ids and the secret keys written next to them or under an AWS secret key label, Google, GitHub,
Slack, Stripe, Hugging Face; bearer/basic credentials; JWTs; PEM private keys).

Every redaction is counted by kind (`KINDS`; `secret_attribute` for a value replaced because of its
key): `redact_values` adds to the mapping it is given, else to this process's tally, which
`take_redactions` hands over (the pipeline turns it into a count per service for /metrics).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "CONTENT",
    "KEEP",
    "KINDS",
    "REDACTED",
    "SECRET",
    "SECRET_ATTRIBUTE",
    "classify_key",
    "clean_text",
    "redact_text",
    "redact_values",
    "suspicious",
    "take_redactions",
]

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

# One named group per kind (the group's name is the kind counted); the first alternative that matches
# at a position wins, so Anthropic's and Langfuse's "sk-" keys come before OpenAI's.
_SECRET_VALUE = re.compile(
    # `\b` so "risk-assessment-service-prod" is not a key
    r"(?P<anthropic>\bsk-ant-[A-Za-z0-9_\-]{16,})"
    r"|(?P<langfuse>\bsk-lf-[A-Za-z0-9_\-]{16,})"
    r"|(?P<openai>\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,})"
    # AWS access key ids, with the 40-character secret key when it follows (a "key id:secret" pair)
    r"|(?P<aws_access_key>\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"
    r"(?:[\s:=,;|/\"']{1,4}[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=]))?)"
    # an AWS secret key under its label (aws_secret_access_key=..., "SecretAccessKey": "..."): the label stays
    r"|(?P<aws_secret_key>(?P<aws_label>(?i:(?:aws_?)?secret_?access_?key|aws_?secret_?key)[\"']?\s*[:=]\s*[\"']?)"
    r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=]))"
    r"|(?P<google_api_key>AIza[0-9A-Za-z_\-]{35})"
    r"|(?P<google_oauth_token>\bya29\.[0-9A-Za-z_\-]{20,})"
    r"|(?P<github_token>\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{22,})"
    r"|(?P<slack_token>\bxox[abposr]-[A-Za-z0-9\-]{10,})"
    r"|(?P<stripe_key>\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,})"
    r"|(?P<huggingface_token>\bhf_[A-Za-z0-9]{30,})"
    # authorization header values; the credential must hold a digit, "=" or "." so prose ("basic research") is kept
    r"|(?P<bearer>\b(?:[Bb]earer|BEARER)\s+(?=[A-Za-z_~+/\-]*[0-9=.])[A-Za-z0-9._~+/=\-]{8,})"
    r"|(?P<basic_auth>\b(?:[Bb]asic|BASIC)\s+(?=[A-Za-z+/]*[0-9=])[A-Za-z0-9+/]{8,}={0,2})"
    r"|(?P<jwt>\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,})"
    # PEM private keys: the key material up to the END line (or the end of a cut value), not just BEGIN
    r"|(?P<private_key>-----BEGIN [A-Z ]*PRIVATE KEY-----(?s:.*?-----END [A-Z ]*PRIVATE KEY-----|.*))"
)

#: A value replaced because its key names a credential (`http.request.header.authorization`, `*.api_key`).
SECRET_ATTRIBUTE = "secret_attribute"
#: Every kind a redaction is counted as.
KINDS = (*(name for name in _SECRET_VALUE.groupindex if name != "aws_label"), SECRET_ATTRIBUTE)

_tally: dict[str, int] = {}


def take_redactions() -> dict[str, int]:
    """Redactions counted in this process since the last call (kind -> values), by `redact_values`
    calls given no mapping of their own."""
    global _tally
    taken, _tally = _tally, {}
    return taken


_cache: dict[str, int] = {}
_CACHE_LIMIT = 20_000
_CACHE_MAX_CHARS = 256


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
    # Keys repeat across spans; the bounds (entries, and characters per key) keep hostile key churn from
    # growing memory.
    if len(_cache) < _CACHE_LIMIT and len(key) <= _CACHE_MAX_CHARS:
        _cache[key] = verdict
    return verdict


def redact_text(text: str, counts: dict[str, int] | None = None) -> str:
    """`text` with every secret-looking substring replaced; each counted by kind in `counts`."""

    def replace(match: re.Match[str]) -> str:
        kind = match.lastgroup or "secret"
        if counts is not None:
            counts[kind] = counts.get(kind, 0) + 1
        if kind == "aws_secret_key":
            return match.group("aws_label") + REDACTED
        return REDACTED

    return _SECRET_VALUE.sub(replace, text)


def _redact_nested(value: Any, counts: dict[str, int]) -> Any:
    if isinstance(value, str):
        if value is REDACTED:  # replaced unread by `attributes.to_dict` (a secret-named key in a map)
            counts[SECRET_ATTRIBUTE] = counts.get(SECRET_ATTRIBUTE, 0) + 1
            return value
        return value if value in _clean or not _suspicious(value) else redact_text(value, counts)
    if isinstance(value, list):
        return [_redact_nested(item, counts) for item in value]
    if isinstance(value, dict):
        return {key: _redact_nested(item, counts) for key, item in value.items()}
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
    # AWS secret key labels (the pattern ignores case; these are the spellings in use)
    "ecret_access",
    "ECRET_ACCESS",
    "ecretAccess",
    "ecretaccess",
    "ecret_key",
    "ECRET_KEY",
    "ecretKey",
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
# marker are skipped by one set lookup. Bounded in entries and in characters per value, so hostile value
# churn (or a 60 MB value) only costs the scan.
_clean: set[str] = set()
_CLEAN_LIMIT = 100_000
_CLEAN_MAX_CHARS = 1024


def _suspicious(text: str) -> bool:
    for marker in _MARKERS:
        if marker in text:
            return True
    if len(text) <= _CLEAN_MAX_CHARS:  # a long value is scanned every time rather than kept alive here
        if len(_clean) >= _CLEAN_LIMIT:
            _clean.clear()
        _clean.add(text)
    return False


def suspicious(text: str) -> bool:
    """Whether `text` may hold a secret (it has one of the patterns' markers; `redact_text` decides)."""
    return text not in _clean and _suspicious(text)


def clean_text(text: str, counts: dict[str, int]) -> str:
    """`text` with its secrets redacted (each counted by kind in `counts`); `text` itself when it has
    none. The cheap path of `redact_values` for one value: a value without a marker skips the regex."""
    if text in _clean or not _suspicious(text):
        return text
    return redact_text(text, counts)


def redact_values(attrs: dict[str, Any], counts: dict[str, int] | None = None) -> int:
    """Replace secret-looking substrings in `attrs` (in place). Returns how many values changed.

    Every redaction is counted by kind in `counts` (else in this process's tally, see
    `take_redactions`), values `attributes.to_dict` already replaced for their key included.
    Numbers cannot hold a credential. A text value is checked for the patterns' literal markers (once
    per distinct value); only a value that has one pays for the regex.
    """
    tally = _tally if counts is None else counts
    changed = 0
    for key, value in attrs.items():
        kind = type(value)
        if kind is str:
            if value is REDACTED:  # replaced unread by `attributes.to_dict`: its key names a credential
                tally[SECRET_ATTRIBUTE] = tally.get(SECRET_ATTRIBUTE, 0) + 1
                continue
            if value in _clean or not _suspicious(value):
                continue
            clean: Any = redact_text(value, tally)
        elif kind is list or kind is dict:
            clean = _redact_nested(value, tally)
        else:
            continue
        if clean != value:
            attrs[key] = clean
            changed += 1
    return changed
