"""A call is counted once (DESIGN "Principles" 1).

- The same span delivered twice (an exporter's retry, a replayed batch) is stored once: span keys
  (trace id + span id) of recently accepted calls are remembered, in memory and, after a restart,
  reloaded from the store.
- One model call instrumented by two layers (a provider SDK's own span nested in an instrumentation
  library's span for the same call) is billed once: the inner span stays billable and the outer one
  is stored with `billable = 0` and `duplicate_of` = the inner span's id. When the two arrive in
  different exports, the one stored first stays billable.
- Application-level retries are different spans: each is billed.

Pairs inside one export are settled by the pipeline (`mark_nested_duplicates`, wherever it runs);
everything across exports by `admit`, in the receiving process, which owns `RecentSpans`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .model import Call
from .store.base import Store
from .store.wire import INGEST_COLUMNS, mark_duplicate

if TYPE_CHECKING:
    from .pipeline import ProcessedExport

__all__ = ["Admitted", "Link", "RecentSpans", "admit", "mark_nested_duplicates", "model_signature", "same_call"]

logger = logging.getLogger(__name__)

Signature = tuple[str, str, str]  # (provider, normalized request model, normalized response model)
#: What a billable call tells about its nesting: (trace id + parent span id, or b"", its signature).
Link = tuple[bytes, Signature]

_REGION = re.compile(r"^(?:us|eu|apac|global|jp|au|ca|us-gov)\.")
_VENDOR = re.compile(r"^(?:anthropic|amazon|meta|cohere|mistral|ai21|openai|google)\.")
_VERSION = re.compile(r"-v\d+(?::\d+)?$")
_SNAPSHOT = re.compile(r"[-@]\d{4}-?\d{2}-?\d{2}$")
_normal_models: dict[str, str] = {}
_WIRE_KEY_COLUMNS = tuple(
    INGEST_COLUMNS.index(name)
    for name in ("trace_id", "span_id", "parent_span_id", "billable", "provider", "request_model", "response_model")
)


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


def mark_nested_duplicates(entries: list[tuple[bytes, Call]]) -> list[tuple[bytes, bytes]]:
    """Within one export: make the outer layer of each nested pair non-billable.

    Returns the pairs as (kept inner key, outer duplicate key), so the caller can let the inner call
    inherit what only the outer span says (instrumentation libraries carry the app's attributes,
    SDK spans do not).
    """
    pairs: list[tuple[bytes, bytes]] = []
    parents = {call.trace_id + call.parent_span_id for _, call in entries if call.parent_span_id and call.billable}
    if not parents:
        return pairs
    billable = {key: call for key, call in entries if call.billable}
    if parents.isdisjoint(billable):
        return pairs
    signatures = {key: model_signature(call) for key, call in billable.items()}
    for key, call in billable.items():
        if not call.parent_span_id:
            continue
        parent_key = call.trace_id + call.parent_span_id
        parent = billable.get(parent_key)
        if parent is not None and parent.billable and same_call(signatures[parent_key], signatures[key]):
            parent.billable = False
            parent.duplicate_of = call.span_id
            parent.flags.append("nested_duplicate")
            pairs.append((key, parent_key))
    return pairs


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

    def known(self, keys: list[bytes]) -> set[bytes]:
        """The keys among `keys` that were accepted before (stored, or being stored)."""
        wanted = set(keys)
        return (wanted & self._current.keys()) | (wanted & self._previous.keys()) | (wanted & self._pending.keys())

    def touches(self, keys: list[bytes], parents: set[bytes]) -> set[bytes]:
        """Keys and parent keys that meet a recent call: a parent stored before, or a child stored before."""
        found = (parents & self._current.keys()) | (parents & self._previous.keys())
        if self._children or self._previous_children:
            wanted = set(keys)
            found |= (wanted & self._children.keys()) | (wanted & self._previous_children.keys())
        return found

    def claim(self, keys: list[bytes], links: list[Link | None], future: asyncio.Future[None]) -> None:
        """Remember an export's calls as pending until `future` settles."""
        self._pending.update(dict.fromkeys(keys, future))
        if len(self._current) + len(keys) > self._generation_size:
            self._previous, self._current = self._current, {}
            self._previous_children, self._children = self._children, {}
        self._current.update(zip(keys, [None if link is None else link[1] for link in links], strict=True))
        children = self._children
        for key, link in zip(keys, links, strict=True):
            if link is not None and link[0]:
                children[link[0]] = (key[16:], link[1])

    def settle(self, keys: list[bytes], links: list[Link | None], stored: bool) -> None:
        """The export's write finished: keep its keys (stored) or forget them (failed, will be retried),
        so a call that never reached the store can neither drop its retry nor make another call a
        duplicate of it."""
        for key in keys:
            self._pending.pop(key, None)
        if stored:
            return
        for key, link in zip(keys, links, strict=True):
            self._current.pop(key, None)
            self._previous.pop(key, None)
            if link is not None and link[0]:
                for children in (self._children, self._previous_children):
                    if children.get(link[0], (b"",))[0] == key[16:]:
                        del children[link[0]]

    def remember(self, key: bytes, link: Link | None) -> None:
        if len(self._current) >= self._generation_size:
            self._previous, self._current = self._current, {}
            self._previous_children, self._children = self._children, {}
        if link is None:
            self._current[key] = None
            return
        parent_key, signature = link
        self._current[key] = signature
        if parent_key:
            self._children[parent_key] = (key[16:], signature)

    def preload(self, store: Store, window_seconds: int = 3600) -> int:
        """Reload the keys of calls ingested in the last `window_seconds` (after a restart)."""
        result = store.query(
            "SELECT trace_id, span_id, parent_span_id, billable, provider, request_model, response_model "
            f"FROM requests WHERE ingested_at >= now64(3) - INTERVAL {int(window_seconds)} SECOND "
            f"ORDER BY ingested_at DESC LIMIT {self._generation_size}"
        )
        for row in reversed(result.rows):
            self._remember_row(*row)
        logger.info("reloaded %d recent span keys for deduplication", len(result.rows))
        return len(result.rows)

    def remember_wire(self, data: bytes) -> int:
        """Remember the calls in wire lines not yet in the store (the spool's, after a restart)."""
        lines = data.decode().split("\n")[:-1]
        for text in lines:
            fields = text.split("\t")
            self._remember_row(*(fields[index] for index in _WIRE_KEY_COLUMNS))
        return len(lines)

    def _remember_row(
        self,
        trace_hex: str,
        span_hex: str,
        parent_hex: str,
        billable: object,
        provider: str,
        request: str,
        response: str,
    ) -> None:
        trace_id = bytes.fromhex(trace_hex)
        link: Link | None = None
        if billable and billable != "0":
            parent_key = trace_id + bytes.fromhex(parent_hex) if parent_hex else b""
            link = (parent_key, (provider, _normal_model(request), _normal_model(response)))
        self.remember(trace_id + bytes.fromhex(span_hex), link)


@dataclass
class Admitted:
    """The part of an export to store, after what was stored before is taken out."""

    data: bytes = b""  # wire lines
    rows: int = 0
    keys: list[bytes] = field(default_factory=list)  # per row
    links: list[Link | None] = field(default_factory=list)  # per row
    waits: list[asyncio.Future[None]] = field(default_factory=list)  # earlier attempts still in flight
    duplicates: int = 0  # spans stored (or being stored) before
    nested: int = 0  # calls found to repeat a call stored before
    changed: bool = False  # rows were dropped or rewritten (counts must be taken from `data`)


def admit(processed: ProcessedExport, recent: RecentSpans) -> Admitted:
    """Drop spans stored before; mark calls nested with (or around) an earlier-stored call.

    The common export has neither: set operations over all its keys prove it, and its bytes go to
    the store untouched. Only an export with a hit is split into lines and rewritten.
    """
    blob = processed.keys
    keys = [blob[start : start + 24] for start in range(0, len(blob), 24)]
    links = processed.links
    admitted = Admitted(duplicates=processed.repeats, keys=keys, links=links, data=processed.data, rows=processed.rows)
    seen = recent.known(keys)
    parents = {link[0] for link in links if link is not None and link[0]}
    nested = recent.touches(keys, parents)
    if not seen and not nested:
        return admitted
    admitted.changed = True
    lines = processed.data.decode().split("\n")[:-1]
    kept_lines: list[str] = []
    kept_keys: list[bytes] = []
    kept_links: list[Link | None] = []
    for key, original, link in zip(keys, lines, links, strict=True):
        if key in seen:
            admitted.duplicates += 1
            in_flight = recent.pending(key)
            if in_flight is not None:
                admitted.waits.append(in_flight)
            continue
        line, kept_link = original, link
        if link is not None and (key in nested or link[0] in nested):
            parent_key, signature = link
            earlier_parent = recent.billable_call(parent_key) if parent_key else None
            earlier_child = None if earlier_parent else recent.billable_child(key)
            if earlier_parent is not None and same_call(earlier_parent, signature):
                line, kept_link = mark_duplicate(original, parent_key[16:].hex()), None
            elif earlier_child is not None and same_call(signature, earlier_child[1]):
                line, kept_link = mark_duplicate(original, earlier_child[0].hex()), None
            if kept_link is None:
                admitted.nested += 1
        kept_lines.append(line)
        kept_keys.append(key)
        kept_links.append(kept_link)
    admitted.keys, admitted.links, admitted.rows = kept_keys, kept_links, len(kept_lines)
    admitted.data = "".join(line + "\n" for line in kept_lines).encode()
    return admitted
