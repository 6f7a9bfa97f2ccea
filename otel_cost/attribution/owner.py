"""Stage 3: who pays for a call (first cut; the "Attribution rules" issue makes this configurable).

For each dimension the span's attributes are consulted first, then its resource's, in the order
below; the first non-empty value wins and the row records which source it was (`owner_source`).

- `team`: `team`, `app.team`, `otel_cost.team`, `owner.team`; else `unattributed`.
- `cost_center`: `cost_center`, `cost.center`, `app.cost_center`, `otel_cost.cost_center`; else the team.
- `feature`: `feature`, `app.feature`, `otel_cost.feature`; else the service name (`service.name` is the
  fallback owner key: the unit unattributed spend is grouped by and mapped from); else `unattributed`.
- `agent`: `gen_ai.agent.name`, `gen_ai.agent.id`, `agent`, `app.agent`; else "" (not every call is an
  agent's).
- `environment`: `deployment.environment.name`, `deployment.environment`, `environment`; else "".

The SDK default service name (`unknown_service...`) is not an owner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import UNATTRIBUTED, Owner

__all__ = ["DIMENSION_SOURCES", "Attributor", "ResourceOwner"]

DIMENSION_SOURCES: dict[str, tuple[str, ...]] = {
    "team": ("team", "app.team", "otel_cost.team", "owner.team"),
    "cost_center": ("cost_center", "cost.center", "app.cost_center", "otel_cost.cost_center"),
    "feature": ("feature", "app.feature", "otel_cost.feature"),
    "agent": ("gen_ai.agent.name", "gen_ai.agent.id", "agent", "app.agent"),
    "environment": ("deployment.environment.name", "deployment.environment", "environment"),
}
_DIMENSIONS = tuple(DIMENSION_SOURCES)
_ALL_KEYS = frozenset(key for keys in DIMENSION_SOURCES.values() for key in keys)
_MAX_VALUE = 128


def _clean(value: Any) -> str:
    if value is None:
        return ""
    text = value if type(value) is str else str(value)
    return text.strip()[:_MAX_VALUE]


def _first(attrs: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, str]:
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            text = _clean(value)
            if text:
                return text, key
    return "", ""


class ResourceOwner:
    """What a resource says about ownership, computed once per ResourceSpans."""

    __slots__ = ("owner", "owner_key", "service_name", "values")

    def __init__(self, resource_attrs: Mapping[str, Any]) -> None:
        self.service_name = _clean(resource_attrs.get("service.name"))  # stored as sent
        service = "" if self.service_name.startswith("unknown_service") else self.service_name
        self.values: dict[str, tuple[str, str]] = {
            dimension: _first(resource_attrs, keys) for dimension, keys in DIMENSION_SOURCES.items()
        }
        # The owner of a span that says nothing itself (the common case: computed once, reused).
        self.owner_key = service  # the service name, unless it is the SDK's default
        self.owner = _combine({}, self.values, service)


def _combine(
    span_values: Mapping[str, tuple[str, str]], resource_values: Mapping[str, tuple[str, str]], service: str
) -> Owner:
    picked: dict[str, str] = {}
    sources: dict[str, str] = {}
    for dimension in _DIMENSIONS:
        value, key = span_values.get(dimension, ("", ""))
        if value:
            picked[dimension], sources[dimension] = value, f"span:{key}"
            continue
        value, key = resource_values[dimension]
        if value:
            picked[dimension], sources[dimension] = value, f"resource:{key}"
    team = picked.get("team", UNATTRIBUTED)
    cost_center = picked.get("cost_center") or team
    feature = picked.get("feature") or service or UNATTRIBUTED
    source = sources.get("team", UNATTRIBUTED)
    return Owner(cost_center, team, feature, picked.get("agent", ""), picked.get("environment", ""), source)


class Attributor:
    """Assigns every call an owner; calls nobody claims belong to `unattributed`."""

    def attribute(self, span_attrs: Mapping[str, Any], resource: ResourceOwner) -> Owner:
        present = span_attrs.keys() & _ALL_KEYS
        if not present:
            return resource.owner
        span_values = {
            dimension: _first(span_attrs, keys)
            for dimension, keys in DIMENSION_SOURCES.items()
            if not present.isdisjoint(keys)
        }
        return _combine(span_values, resource.values, resource.owner_key)
