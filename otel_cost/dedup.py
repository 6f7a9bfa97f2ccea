"""A call is counted once (DESIGN "Principles" 1).

- The same span delivered twice (an exporter's retry, a replayed batch) is stored once: span keys
  (trace id + span id) of recently accepted calls are remembered, in memory and, after a restart,
  reloaded from the store.
- One model call instrumented by two layers (a provider SDK's own span nested in an instrumentation
  library's span for the same call) is billed once: the inner span stays billable and the outer one
  is stored with `billable = 0` and `duplicate_of` = the inner span's id. When the two arrive in
  different exports, the one stored first stays billable.
- Application-level retries are different spans: each is billed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable

from .model import Call
from .store.base import Store

__all__ = ["RecentSpans", "mark_nested_duplicates", "model_signature", "same_call"]

logger = logging.getLogger(__name__)

Signature = tuple[str, str, str]  # (provider, normalized request model, normalized response model)

_REGION = re.compile(r"^(?:us|eu|apac|global|jp|au|ca|us-gov)\.")
_VENDOR = re.compile(r"^(?:anthropic|amazon|meta|cohere|mistral|ai21|openai|google)\.")
_VERSION = re.compile(r"-v\d+(?::\d+)?$")
_SNAPSHOT = re.compile(r"[-@]\d{4}-?\d{2}-?\d{2}$")


_normal_models: dict[str, str] = {}


def _normal_model(model: str) -> str:
    known = _normal_models.get(model)
    if known is not None:
        return known
    name = model.strip().lower().rsplit("/", 1)[-1]
    name = _SNAPSHOT.sub("", _VERSION.sub("", _VENDOR.sub("", _REGION.sub("", name))))
    if len(_normal_models) < 50_000:  # model names repeat; the bound keeps hostile churn cheap
        _normal_models[model] = name
    return name


def model_signature(call: Call) -> Signature:
    return (call.provider, _normal_model(call.request_model), _normal_model(call.response_model))


def same_call(outer: Signature, inner: Signature) -> bool:
    """Could `inner` be the same model call as `outer`, seen by another instrumentation layer?"""
    if outer[0] and inner[0] and outer[0] != inner[0]:
        return False
    outer_models = {model for model in outer[1:] if model}
    inner_models = {model for model in inner[1:] if model}
    return not outer_models or not inner_models or not outer_models.isdisjoint(inner_models)


class RecentSpans:
    """Span keys accepted recently, bounded to `max_keys` in two generations.

    Each key maps to the call's signature when it is billable (the outer layer of a nested pair may
    still arrive), else None. `children` maps trace id + parent span id to the billable child seen.
    Keys of exports still being written are `pending`: a retry that arrives meanwhile waits on the
    first attempt instead of being stored twice or acknowledged early.
    """

    def __init__(self, max_keys: int = 1_000_000) -> None:
        self._generation_size = max(max_keys // 2, 1)
        self._current: dict[bytes, Signature | None] = {}
        self._previous: dict[bytes, Signature | None] = {}
        self._children: dict[bytes, tuple[bytes, Signature]] = {}
        self._previous_children: dict[bytes, tuple[bytes, Signature]] = {}
        self._pending: dict[bytes, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def __contains__(self, key: bytes) -> bool:
        return key in self._current or key in self._previous or key in self._pending

    def pending(self, key: bytes) -> asyncio.Future[None] | None:
        return self._pending.get(key)

    def billable_call(self, key: bytes) -> Signature | None:
        """The signature of a recent billable call with this span key, if any."""
        found = self._current.get(key)
        return found if found is not None else self._previous.get(key)

    def billable_child(self, parent_key: bytes) -> tuple[bytes, Signature] | None:
        found = self._children.get(parent_key)
        return found if found is not None else self._previous_children.get(parent_key)

    def claim(self, entries: Iterable[tuple[bytes, Call]], future: asyncio.Future[None]) -> None:
        """Remember an export's calls as pending until `future` settles."""
        for key, call in entries:
            self._pending[key] = future
            self._remember(key, call)

    def settle(self, keys: Iterable[bytes], stored: bool) -> None:
        """The export's write finished: keep its keys (stored) or forget them (failed, will be retried)."""
        for key in keys:
            self._pending.pop(key, None)
            if not stored:
                self._current.pop(key, None)
                self._previous.pop(key, None)

    def _remember(self, key: bytes, call: Call) -> None:
        if len(self._current) >= self._generation_size:
            self._previous, self._current = self._current, {}
            self._previous_children, self._children = self._children, {}
        if call.billable:
            signature = model_signature(call)
            self._current[key] = signature
            if call.parent_span_id:
                self._children[call.trace_id + call.parent_span_id] = (call.span_id, signature)
        else:
            self._current[key] = None

    def preload(self, store: Store, window_seconds: int = 3600) -> int:
        """Reload the keys of calls ingested in the last `window_seconds` (after a restart)."""
        limit = self._generation_size
        result = store.query(
            "SELECT trace_id, span_id, parent_span_id, billable, operation, provider, request_model, "
            f"response_model FROM requests WHERE ingested_at >= now64(3) - INTERVAL {int(window_seconds)} SECOND "
            f"ORDER BY ingested_at DESC LIMIT {limit}"
        )
        for trace_hex, span_hex, parent_hex, billable, operation, provider, request, response in reversed(result.rows):
            call = Call()
            call.trace_id, call.span_id = bytes.fromhex(trace_hex), bytes.fromhex(span_hex)
            call.parent_span_id = bytes.fromhex(parent_hex)
            call.billable, call.operation = bool(billable), operation
            call.provider, call.request_model, call.response_model = provider, request, response
            self._remember(call.trace_id + call.span_id, call)
        logger.info("reloaded %d recent span keys for deduplication", len(result.rows))
        return len(result.rows)


def mark_nested_duplicates(entries: list[tuple[bytes, Call]], recent: RecentSpans) -> list[tuple[bytes, bytes]]:
    """Make the outer layer of each nested pair non-billable.

    `entries` are one export's calls (span key, call). Pairs inside the export are matched first,
    then pairs whose other half was accepted earlier. Returns the pairs found inside the export as
    (kept inner key, outer duplicate key), so the caller can let the inner call inherit what only the
    outer span says (instrumentation libraries carry the app's attributes, SDK spans do not).
    """
    billable = {key: call for key, call in entries if call.billable}
    pairs: list[tuple[bytes, bytes]] = []
    if not billable:
        return pairs
    signatures = {key: model_signature(call) for key, call in billable.items()}
    for key, call in billable.items():
        signature = signatures[key]
        if call.parent_span_id:
            parent_key = call.trace_id + call.parent_span_id
            parent = billable.get(parent_key)
            if parent is not None:
                if parent.billable and same_call(signatures[parent_key], signature):
                    _mark(parent, call.span_id)
                    pairs.append((key, parent_key))
            else:
                earlier_parent = recent.billable_call(parent_key)
                if earlier_parent is not None and call.billable and same_call(earlier_parent, signature):
                    _mark(call, call.parent_span_id)
                    continue
        earlier_child = recent.billable_child(key)
        if earlier_child is not None and call.billable and same_call(signature, earlier_child[1]):
            _mark(call, earlier_child[0])
    return pairs


def _mark(call: Call, repeated_span_id: bytes) -> None:
    call.billable = False
    call.duplicate_of = repeated_span_id
    call.flags.append("nested_duplicate")
