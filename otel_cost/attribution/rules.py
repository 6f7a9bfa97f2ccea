"""Attribution sources compiled into chains: ordered rules, first non-empty value wins.

A rule reads the span (`span:KEY`, `baggage:KEY`) or the resource (`resource:KEY`, `catalog`); a
regex or JSON rule transforms what another source reads. `attribute:KEY` is the span, then the
resource; `preset:NAME` expands in place to that preset's sources for the dimension. Every rule has a
label (its source text) that rows record, so each owner can be explained.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..config import JSONSource, RegexSource, check_source
from .presets import PRESETS

if TYPE_CHECKING:
    from .owner import ResourceOwner

__all__ = ["Chain", "compile_chain", "text_value"]

_MAX_VALUE = 128
_JSON_CACHE_LIMIT = 10_000
_parsed_json: dict[str, dict[str, Any]] = {}


def text_value(value: Any) -> str:
    """An attribute value as an owner name: text, trimmed, at most 128 characters ("" for none)."""
    if value is None or isinstance(value, list | dict):
        return ""
    if type(value) is bool:  # as the stored attributes spell it, so re-attribution reads the same text
        return "true" if value else "false"
    text = value if type(value) is str else str(value)
    return text.strip()[:_MAX_VALUE]


def _json_object(text: str) -> dict[str, Any]:
    found = _parsed_json.get(text)
    if found is None:
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        found = loaded if isinstance(loaded, dict) else {}
        if len(_parsed_json) >= _JSON_CACHE_LIMIT:
            _parsed_json.clear()
        _parsed_json[text] = found
    return found


Reader = Callable[[Any], Any]  # span attributes (a mapping) or a ResourceOwner -> raw value


class Rule:
    """One source: on which side it reads (span or resource), how, and its label."""

    __slots__ = ("keys", "label", "read", "side")

    def __init__(self, side: str, read: Reader, label: str, keys: tuple[str, ...] = ()) -> None:
        self.side = side  # "span" or "resource"
        self.read = read
        self.label = label
        self.keys = keys  # span keys it looks at (the fast path skips spans with none of them)


def _attribute_rule(text: str, label: str, dimension: str, catalog_label: str) -> list[Rule]:
    kind, _, key = text.partition(":")
    if text == "catalog":
        return [Rule("resource", lambda resource: resource.catalog_entry.get(dimension), catalog_label)]
    if kind == "span":
        return [Rule("span", lambda attrs: attrs.get(key), label, (key,))]
    if kind == "baggage":
        # A BaggageSpanProcessor copies entries under their own key; some prefix them with "baggage.".
        prefixed = f"baggage.{key}"

        def from_baggage(attrs: Mapping[str, Any]) -> Any:
            value = attrs.get(key)
            return value if value is not None else attrs.get(prefixed)

        return [Rule("span", from_baggage, label, (key, prefixed))]
    if kind == "resource":
        if key == "service.name":  # the SDK's default name owns nothing
            return [
                Rule(
                    "resource",
                    lambda resource: (
                        "" if resource.service_name.startswith("unknown_service") else resource.service_name
                    ),
                    label,
                )
            ]
        return [Rule("resource", lambda resource: resource.attrs.get(key), label)]
    if kind == "attribute":
        return [
            Rule("span", lambda attrs: attrs.get(key), label, (key,)),
            *_attribute_rule(f"resource:{key}", label, dimension, catalog_label),
        ]
    raise ValueError(f"unknown source {text!r}")  # config validation keeps this unreachable


def _transformed(source: RegexSource | JSONSource, dimension: str, prefix: str, catalog_label: str) -> list[Rule]:
    inner_rules = _attribute_rule(source.from_, source.from_, dimension, catalog_label)
    out: list[Rule] = []
    for inner in inner_rules:
        read = inner.read
        if isinstance(source, RegexSource):
            pattern = re.compile(source.regex)
            template = source.value
            label = f"{prefix}regex:{source.from_}:{source.regex}"

            def transform(raw: Any, pattern: re.Pattern[str] = pattern, template: str | None = template) -> str:
                match = pattern.search(text_value(raw))
                if match is None:
                    return ""
                if template is not None:
                    return match.expand(template)
                return match.group(1) if pattern.groups else match.group(0)

        else:
            field = source.json_field
            label = f"{prefix}json:{source.from_}:{field}"

            def transform(raw: Any, field: str = field) -> str:  # type: ignore[misc]
                return text_value(_json_object(raw).get(field)) if isinstance(raw, str) else ""

        def derived(target: Any, read: Reader = read, transform: Callable[[Any], str] = transform) -> str:
            raw = read(target)
            return transform(raw) if raw is not None else ""

        out.append(Rule(inner.side, derived, label, inner.keys))
    return out


def _compile(source: Any, dimension: str, catalog_label: str, prefix: str = "") -> list[Rule]:
    if isinstance(source, dict):  # a preset's {regex|json, from} entry
        model = RegexSource.model_validate(source) if "regex" in source else JSONSource.model_validate(source)
        return _transformed(model, dimension, prefix, catalog_label)
    if isinstance(source, RegexSource | JSONSource):
        return _transformed(source, dimension, prefix, catalog_label)
    text = check_source(source)
    if text.startswith("preset:"):
        name = text.split(":", 1)[1]
        rules: list[Rule] = []
        for preset_source in PRESETS[name].get(dimension, ()):
            rules += _compile(preset_source, dimension, catalog_label, f"preset:{name} ")
        return rules
    return _attribute_rule(text, prefix + text, dimension, catalog_label)


class Chain:
    """A dimension's rules in order. The resource side is settled once per resource (`first_resource`);
    per span only the span-side rules ahead of that match are tried (`pick`)."""

    __slots__ = ("_span_rules", "rules", "span_keys")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)
        self._span_rules = [(position, rule) for position, rule in enumerate(self.rules) if rule.side == "span"]
        self.span_keys = frozenset(key for rule in self.rules for key in rule.keys)

    def first_resource(self, resource: ResourceOwner) -> tuple[int, str, str] | None:
        for position, rule in enumerate(self.rules):
            if rule.side == "resource":
                value = text_value(rule.read(resource))
                if value:
                    return position, value, rule.label
        return None

    def pick(self, span_attrs: Mapping[str, Any], first: tuple[int, str, str] | None) -> tuple[int, str, str] | None:
        limit = first[0] if first is not None else len(self.rules)
        for position, rule in self._span_rules:
            if position >= limit:
                break
            value = text_value(rule.read(span_attrs))
            if value:
                return position, value, rule.label
        return first


def compile_chain(dimension: str, sources: Sequence[Any], catalog_label: str = "catalog") -> Chain:
    rules: list[Rule] = []
    for source in sources:
        rules += _compile(source, dimension, catalog_label)
    return Chain(rules)
