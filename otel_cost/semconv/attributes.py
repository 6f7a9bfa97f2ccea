"""OTLP `KeyValue` lists to plain dicts: the one place attribute values are read from protobuf.

Content attributes are skipped before their values are read (a megabyte of prompt never becomes a
Python string) and secret-named attributes are replaced unread; see `policy`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .policy import CONTENT, KEEP, REDACTED, classify_key

__all__ = ["AttrValue", "any_value", "to_dict", "to_strings"]

AttrValue = str | bool | int | float | bytes | list[Any] | dict[str, Any] | None

_SCALARS = frozenset({"string_value", "bool_value", "int_value", "double_value", "bytes_value"})
_MAX_DEPTH = 8


def any_value(value: Any, depth: int = 0) -> AttrValue:
    """Convert one `AnyValue` (protobuf) to a Python value; nesting deeper than 8 levels is cut."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which in _SCALARS:
        result: AttrValue = getattr(value, which)
        return result
    if depth >= _MAX_DEPTH:
        return None
    if which == "array_value":
        return [any_value(item, depth + 1) for item in value.array_value.values]
    out: dict[str, Any] = {}
    for kv in value.kvlist_value.values:
        verdict = classify_key(kv.key)
        if verdict == KEEP:
            out[kv.key] = any_value(kv.value, depth + 1)
        elif verdict != CONTENT:
            out[kv.key] = REDACTED
    return out


def to_dict(key_values: Iterable[Any]) -> dict[str, AttrValue]:
    """`KeyValue` list to dict. Content keys are dropped, secret keys redacted; a repeated key keeps
    its last value."""
    out: dict[str, AttrValue] = {}
    for kv in key_values:
        key = kv.key
        verdict = classify_key(key)
        if verdict != KEEP:
            if verdict != CONTENT:
                out[key] = REDACTED
            continue
        value = kv.value
        which = value.WhichOneof("value")
        if which in _SCALARS:
            out[key] = getattr(value, which)
        elif which is not None:
            out[key] = any_value(value)
    return out


_MAX_STORED_VALUE = 256


def to_strings(attrs: dict[str, AttrValue]) -> dict[str, str]:
    """Attribute values as strings for the `attributes` map column (long values cut to 256 chars)."""
    out: dict[str, str] = {}
    for key, value in attrs.items():
        if isinstance(value, str):
            text = value
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = str(value)
        elif isinstance(value, bytes):
            text = value.hex()
        elif value is None:
            continue
        else:
            text = json.dumps(value, default=str, ensure_ascii=False)
        if len(text) > _MAX_STORED_VALUE:
            text = text[:_MAX_STORED_VALUE] + "…"
        out[key] = text
    return out
