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
from collections.abc import Mapping
from typing import Any

__all__ = [
    "INGEST_COLUMNS",
    "MAX_ATTRIBUTE_CHARS",
    "SEPARATOR",
    "attribute_text",
    "encode_line",
    "encode_map",
    "mark_duplicate",
]

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
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
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


def encode_map(attrs: Mapping[str, Any]) -> tuple[str, str]:
    """(keys, values) joined by SEPARATOR. Clean maps (the norm) take the C fast path of str.join."""
    texts = [value if type(value) is str else attribute_text(value) for value in attrs.values()]
    keys = SEPARATOR.join(attrs)
    values = SEPARATOR.join(texts)
    expected = len(texts) - 1 if texts else 0
    if keys.count(SEPARATOR) == expected and values.count(SEPARATOR) == expected:
        return keys, values
    return (
        SEPARATOR.join(key.replace(SEPARATOR, " ") for key in attrs),
        SEPARATOR.join(text.replace(SEPARATOR, " ") for text in texts),
    )


def encode_line(values: tuple[Any, ...]) -> str:
    """One call as a TSV line, in INGEST_COLUMNS order (ints and strs only)."""
    line = "\t".join(map(str, values))
    if line.count("\t") == _TABS and "\\" not in line and "\n" not in line and "\r" not in line and "\0" not in line:
        return line
    return "\t".join(value.translate(_TSV_ESCAPES) if type(value) is str else str(value) for value in values)


def mark_duplicate(line: str, duplicate_of: str) -> str:
    """The same line, with the call made non-billable as a nested duplicate of span `duplicate_of`."""
    head, flags, _billable, _ = line.rsplit("\t", 3)
    flags = f"{flags}{SEPARATOR}nested_duplicate" if flags else "nested_duplicate"
    return f"{head}\t{flags}\t0\t{duplicate_of}"
