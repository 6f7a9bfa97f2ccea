"""Stage 3: who pays for a call. Every dollar has an owner, or is visibly `unattributed`.

Each owner dimension (`cost_center`, `team`, `feature`, `agent`, `environment`) and each user-defined
tag has an ordered list of sources (`rules.compile_chain`); the first that yields a non-empty value wins
and the row records which one it was (`owner_rules`, and `owner_source` for the team). Without
configuration the built-in chains below apply, after any enabled presets:

- `team`: `team`, `app.team`, `otel_cost.team`, `owner.team` on the span, then the service catalog,
  then the same keys on the resource; else `unattributed`.
- `cost_center`: `cost_center`, `cost.center`, `app.cost_center`, `otel_cost.cost_center` (span,
  catalog, resource); else the `cost_centers` table's entry for the team; else the team.
- `feature`: `feature`, `app.feature`, `otel_cost.feature` (span, catalog, resource); else the service
  name (the SDK default `unknown_service:*` is not an owner); else `unattributed`.
- `agent`: `gen_ai.agent.name`, `gen_ai.agent.id`, `agent`, `app.agent`; else "".
- `environment`: `deployment.environment.name`, `deployment.environment`, `environment`; else "".

Resource-side sources are evaluated once per resource; a span that carries none of the span-side keys
gets its resource's owner unchanged (the common case, one dict lookup).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import OWNER_DIMENSIONS, AttributionConfig
from ..model import UNATTRIBUTED, Owner
from ..store.wire import SEPARATOR
from .catalog import load_service_catalog
from .rules import Chain, compile_chain, text_value

__all__ = ["DEFAULT_SOURCES", "DIMENSION_SOURCES", "OTHER", "Attributor", "ResourceOwner"]

logger = logging.getLogger(__name__)

#: Built-in keys per dimension, looked up on the span and then on the resource.
DIMENSION_SOURCES: dict[str, tuple[str, ...]] = {
    "team": ("team", "app.team", "otel_cost.team", "owner.team"),
    "cost_center": ("cost_center", "cost.center", "app.cost_center", "otel_cost.cost_center"),
    "feature": ("feature", "app.feature", "otel_cost.feature"),
    "agent": ("gen_ai.agent.name", "gen_ai.agent.id", "agent", "app.agent"),
    "environment": ("deployment.environment.name", "deployment.environment", "environment"),
}
_CATALOG_DIMENSIONS = ("team", "cost_center", "feature")

#: What a dimension's new values become once it holds `max_values` distinct ones.
OTHER = "other"
_CACHE_LIMIT = 20_000


def _default_sources(dimension: str, presets: list[str], with_catalog: bool) -> list[Any]:
    keys = DIMENSION_SOURCES[dimension]
    sources: list[Any] = [f"preset:{name}" for name in presets]
    sources += [f"span:{key}" for key in keys]
    if with_catalog and dimension in _CATALOG_DIMENSIONS:
        sources.append("catalog")
    sources += [f"resource:{key}" for key in keys]
    return sources


DEFAULT_SOURCES = {dimension: _default_sources(dimension, [], False) for dimension in OWNER_DIMENSIONS}


class ResourceOwner:
    """What a resource says about ownership, computed once per ResourceSpans."""

    __slots__ = ("attrs", "catalog_entry", "first", "owner", "service_name")

    def __init__(self, attributor: Attributor, resource_attrs: Mapping[str, Any]) -> None:
        self.attrs = resource_attrs
        self.service_name = text_value(resource_attrs.get("service.name"))  # stored as sent
        self.catalog_entry = attributor.catalog.get(self.service_name, {})
        # Per chain: (position, value, label) of its first resource-side match, or None.
        self.first = {name: chain.first_resource(self) for name, chain in attributor.chains.items()}
        self.owner = attributor.combine({}, self)  # the owner of a span that says nothing itself

    @property
    def owner_key(self) -> str:
        """The service name, unless it is the SDK's default: the unit unattributed spend is grouped by."""
        return "" if self.service_name.startswith("unknown_service") else self.service_name


class Attributor:
    """Assigns every call an owner; calls nobody claims belong to `unattributed`. Not thread-safe
    (its cardinality guard): one per pipeline."""

    def __init__(self, config: AttributionConfig | None = None) -> None:
        config = config or AttributionConfig()
        self.config = config
        self.catalog: dict[str, dict[str, str]] = (
            load_service_catalog(config.service_catalog) if config.service_catalog else {}
        )
        catalog_label = f"catalog:{Path(config.service_catalog).name}" if config.service_catalog else "catalog"
        self.chains: dict[str, Chain] = {}
        for dimension in OWNER_DIMENSIONS:
            sources = config.dimensions.get(dimension)
            if sources is None:
                sources = _default_sources(dimension, config.presets, bool(self.catalog))
            self.chains[dimension] = compile_chain(dimension, sources, catalog_label)
        self.tags = tuple(config.tags)
        for tag, sources in config.tags.items():
            self.chains[f"tag:{tag}"] = compile_chain(tag, sources, catalog_label)
        self._span_keys = frozenset(key for chain in self.chains.values() for key in chain.span_keys)
        self._seen: dict[str, set[str]] = {
            dimension: set() for dimension in ("cost_center", "team", "feature", "agent")
        }
        self._capped: set[str] = set()
        # Resources repeat in every export of a service, and spans that name an owner repeat the same few
        # values: both are worked out once (bounded, so hostile churn only costs the work).
        self._resources: dict[tuple[tuple[str, Any], ...], ResourceOwner] = {}
        self._owners: dict[tuple[ResourceOwner, frozenset[tuple[str, Any]]], Owner] = {}

    def resource(self, resource_attrs: Mapping[str, Any]) -> ResourceOwner:
        try:
            key = tuple(resource_attrs.items())
            found = self._resources.get(key)
        except TypeError:  # a list or map value: not a key, just compute it
            return ResourceOwner(self, resource_attrs)
        if found is None:
            found = ResourceOwner(self, resource_attrs)
            if len(self._resources) >= _CACHE_LIMIT:
                self._resources.clear()
                self._owners.clear()
            self._resources[key] = found
        return found

    def attribute(self, span_attrs: Mapping[str, Any], resource: ResourceOwner) -> Owner:
        if span_attrs.keys().isdisjoint(self._span_keys):
            return resource.owner
        present = span_attrs.keys() & self._span_keys
        try:
            key = (resource, frozenset([(name, span_attrs[name]) for name in present]))  # holds it: no id reuse
            found = self._owners.get(key)
        except TypeError:
            return self.combine(span_attrs, resource)
        if found is None:
            found = self.combine(span_attrs, resource)
            if len(self._owners) >= _CACHE_LIMIT:
                self._owners.clear()
            self._owners[key] = found
        return found

    def combine(self, span_attrs: Mapping[str, Any], resource: ResourceOwner) -> Owner:
        picked: dict[str, tuple[str, str]] = {}
        for name, chain in self.chains.items():
            found = chain.pick(span_attrs, resource.first[name]) if span_attrs else resource.first[name]
            if found is not None:
                picked[name] = (found[1], found[2])
        team, team_rule = picked.get("team", (UNATTRIBUTED, UNATTRIBUTED))
        cost_center, cost_rule = picked.get("cost_center", ("", ""))
        if not cost_center:
            mapped = self.config.cost_centers.get(team)
            cost_center, cost_rule = (mapped, f"cost_centers:{team}") if mapped else (team, "team")
        feature, feature_rule = picked.get("feature", ("", ""))
        if not feature:
            service = resource.owner_key
            feature, feature_rule = (service, "resource:service.name") if service else (UNATTRIBUTED, UNATTRIBUTED)
        agent, agent_rule = picked.get("agent", ("", ""))
        environment, environment_rule = picked.get("environment", ("", ""))

        team, team_rule = self._guard("team", team, team_rule)
        cost_center, cost_rule = self._guard("cost_center", cost_center, cost_rule)
        feature, feature_rule = self._guard("feature", feature, feature_rule)
        agent, agent_rule = self._guard("agent", agent, agent_rule)

        rules = {"cost_center": cost_rule, "team": team_rule, "feature": feature_rule}
        if agent:
            rules["agent"] = agent_rule
        if environment:
            rules["environment"] = environment_rule
        tag_keys: list[str] = []
        tag_values: list[str] = []
        for tag in self.tags:
            found_tag = picked.get(f"tag:{tag}")
            if found_tag is not None:
                tag_keys.append(tag)
                tag_values.append(found_tag[0].replace(SEPARATOR, " "))
                rules[f"tag:{tag}"] = found_tag[1]
        return Owner(
            cost_center,
            team,
            feature,
            agent,
            environment,
            team_rule,
            SEPARATOR.join(tag_keys),
            SEPARATOR.join(tag_values),
            SEPARATOR.join(rules),
            SEPARATOR.join(rule.replace(SEPARATOR, " ") for rule in rules.values()),
        )

    def _guard(self, dimension: str, value: str, rule: str) -> tuple[str, str]:
        """Cap a dimension's distinct values so that a mistake (a user id mapped into `team`) cannot
        explode the rollups: past `max_values`, new values become `other`."""
        if not value or value in (UNATTRIBUTED, OTHER):
            return value, rule
        seen = self._seen[dimension]
        if value in seen:
            return value, rule
        if len(seen) < self.config.max_values:
            seen.add(value)
            return value, rule
        if dimension not in self._capped:
            self._capped.add(dimension)
            logger.warning(
                "attribution: %s has %d distinct values (attribution.max_values); new ones are stored as %r. "
                "Is an id mapped into it by mistake? Last rule: %s",
                dimension,
                len(seen),
                OTHER,
                rule,
            )
        return OTHER, f"{rule} (capped)"
