"""Stage 1: span -> Call. Reads every GenAI attribute dialect found in the wild into one convention."""

from .attributes import to_dict, to_dict_counted
from .emitters import Emitter, emitter_for_scope
from .extract import MAX_ATTRIBUTES, MAX_KEY_CHARS, MAX_TOKENS, InvalidSpanError, extract
from .keys import TYPED_KEYS
from .policy import redact_values

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_KEY_CHARS",
    "MAX_TOKENS",
    "TYPED_KEYS",
    "Emitter",
    "InvalidSpanError",
    "emitter_for_scope",
    "extract",
    "redact_values",
    "to_dict",
    "to_dict_counted",
]
