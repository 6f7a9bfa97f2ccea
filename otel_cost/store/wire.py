"""The wire format of bulk inserts (`clickhouse/003_ingest.sql`): one TabSeparated line per call.

Lines are built where the calls are priced (possibly in a worker process) and handed to any store
as text, which the engine parses without the GIL. Strings are TSV-escaped only when they need it.
An attribute map travels as two strings, its keys and its values joined by the unit separator
(\\x1f), which the ingest view zips into Map(String, String): splitting is far cheaper for the
engine than parsing JSON. Values are text as is, numbers as digits, booleans as true/false, bytes
as hex, arrays and maps as JSON, cut at 256 characters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

__all__ = [
    "INGEST_COLUMNS",
    "MAX_ATTRIBUTE_CHARS",
    "OUTCOME_COLUMNS",
    "SEPARATOR",
    "attribute_text",
    "encode_line",
    "encode_map",
    "mark_duplicate",
    "tsv_line",
]

#: Column order of an outcome line (the `outcomes` table, `clickhouse/009_review.sql`).
OUTCOME_COLUMNS = (
    "timestamp",
    "trace_id",
    "span_id",
    "service_name",
    "environment",
    "team",
    "feature",
    "agent",
    "outcome",
    "source",
    "name",
    "label",
    "score",
    "response_id",
)

#: Column order of a line (the `requests_ingest` table).
INGEST_COLUMNS = (
    "timestamp_ns",
    "trace_id",
    "span_id",
    "parent_span_id",
    "service_name",
    "environment",
    "cost_center",
    "team",
    "feature",
    "agent",
    "owner_source",
    "provider",
    "operation",
    "request_model",
    "response_model",
    "priced_model",
    "service_tier",
    "processing",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "cost_units",
    "price_version",
    "priced",
    "unpriced_reason",
    "status",
    "error_type",
    "duration_ns",
    "emitter",
    "emitter_cost",
    "conversation_id",
    "response_id",
    "attribute_keys",
    "attribute_values",
    "resource_keys",
    "resource_values",
    "tag_keys",
    "tag_values",
    "owner_rule_keys",
    "owner_rule_values",
    "flags",
    "billable",
    "duplicate_of",
)

SEPARATOR = "\x1f"  # joins flags and attribute keys and values
_TABS = len(INGEST_COLUMNS) - 1
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


MAX_ATTRIBUTE_CHARS = 256
_rendered: dict[tuple[Any, ...], str] = {}  # small arrays repeat (finish reasons, tags)


def attribute_text(value: Any) -> str:
    """How an attribute value is stored (before the 256-character cut)."""
    kind = type(value)
    if kind is str:
        text: str = value
    elif kind is bool:
        text = "true" if value else "false"
    elif kind is int or kind is float:
        text = str(value)
    elif kind is bytes:
        text = value.hex()
    elif kind is list and len(value) <= 8 and all(type(item) is str for item in value):
        key = tuple(value)
        text = _rendered.get(key) or ""
        if not text:
            text = json.dumps(value, ensure_ascii=False)
            if len(_rendered) < 10_000:
                _rendered[key] = text
    else:
        text = json.dumps(value, default=str, ensure_ascii=False)
    return text


_map_plans: dict[
    tuple[tuple[str, ...], frozenset[str]], tuple[str, Callable[[Mapping[str, Any]], tuple[Any, ...]]]
] = {}


def _plan_map(
    shape: tuple[str, ...], skip: frozenset[str]
) -> tuple[str, Callable[[Mapping[str, Any]], tuple[Any, ...]]]:
    stored = [key for key in shape if key not in skip]
    keys = SEPARATOR.join(key.replace(SEPARATOR, " ") for key in stored)
    if not stored:
        return keys, lambda attrs: ()
    if len(stored) == 1:
        only = stored[0]
        return keys, lambda attrs: (attrs[only],)
    return keys, itemgetter(*stored)


def encode_map(attrs: Mapping[str, Any], skip: frozenset[str] = frozenset()) -> tuple[str, str]:
    """(keys, values) joined by SEPARATOR, leaving out the keys in `skip`. Maps of one shape (the same
    keys in the same order: every span of one emitter) share the joined keys and a C getter."""
    shape = tuple(attrs)
    plan = _map_plans.get((shape, skip))
    if plan is None:
        plan = _plan_map(shape, skip)
        if len(_map_plans) >= 10_000:  # the bound keeps hostile key churn cheap
            _map_plans.clear()
        _map_plans[(shape, skip)] = plan
    keys, getter = plan
    values = SEPARATOR.join([value if type(value) is str else attribute_text(value) for value in getter(attrs)])
    if SEPARATOR in values and values.count(SEPARATOR) != keys.count(SEPARATOR):
        values = SEPARATOR.join(attribute_text(value).replace(SEPARATOR, " ") for value in getter(attrs))
    return keys, values


def tsv_line(values: Sequence[str]) -> str:
    """Any row of text values as a TabSeparated line, escaped."""
    return "\t".join(value.translate(_TSV_ESCAPES) for value in values)


def encode_line(values: tuple[str, ...]) -> str:
    """One call as a TSV line, in INGEST_COLUMNS order (every value already text)."""
    line = "\t".join(values)
    if line.count("\t") == _TABS and "\\" not in line and "\n" not in line and "\r" not in line and "\0" not in line:
        return line
    return tsv_line(values)


def mark_duplicate(line: str, duplicate_of: str) -> str:
    """The same line, with the call made non-billable as a nested duplicate of span `duplicate_of`."""
    head, flags, _billable, _ = line.rsplit("\t", 3)
    flags = f"{flags}{SEPARATOR}nested_duplicate" if flags else "nested_duplicate"
    return f"{head}\t{flags}\t0\t{duplicate_of}"
