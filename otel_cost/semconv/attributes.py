"""OTLP `KeyValue` lists to plain dicts: the one place attribute values are read from protobuf.

Content attributes are skipped before their values are read (a megabyte of prompt never becomes a
Python string) and secret-named attributes are replaced unread; see `policy`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .policy import CONTENT, KEEP, REDACTED, classify_key
from .policy import _cache as _verdicts

__all__ = ["AttrValue", "any_value", "to_dict", "to_dict_counted"]

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


def to_dict(key_values: Collection[Any]) -> dict[str, AttrValue]:
    """`KeyValue` list to dict. Content keys are dropped, secret keys redacted; a repeated key keeps
    its last value."""
    return to_dict_counted(key_values)[0]


def to_dict_counted(key_values: Collection[Any]) -> tuple[dict[str, AttrValue], int]:
    """`to_dict`, and how many KeyValues repeated a kept key (OTLP forbids it; 0 for every SDK).
    The hot path: one dict lookup per key beyond reading the value."""
    out: dict[str, AttrValue] = {}
    known = _verdicts.get
    dropped = 0
    for kv in key_values:
        key = kv.key
        verdict = known(key)
        if verdict is None:
            verdict = classify_key(key)
        if verdict:
            if verdict != CONTENT:
                out[key] = REDACTED
            else:
                dropped += 1
            continue
        value = kv.value
        which = value.WhichOneof("value")
        if which in _SCALARS:
            out[key] = getattr(value, which)
        elif which == "array_value":
            out[key] = [
                getattr(item, kind) if (kind := item.WhichOneof("value")) in _SCALARS else any_value(item, 1)
                for item in value.array_value.values
            ]
        elif which is not None:
            out[key] = any_value(value)
        else:
            dropped += 1  # a KeyValue without a value is left out
    return out, len(key_values) - dropped - len(out)
