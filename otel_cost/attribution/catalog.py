"""The service catalog: `service.name` -> team, cost center, feature, kept in a YAML file by whoever
owns the services (platform teams usually have one already).

```yaml
services:
  search-api: {team: search, cost_center: CC-2001, feature: search}
  checkout-assistant: {team: payments}
```
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from ..errors import ConfigError

__all__ = ["CATALOG_FIELDS", "check_service_catalog", "load_service_catalog"]

CATALOG_FIELDS = ("team", "cost_center", "feature")


def _problems(path: Path, cost_centers: Mapping[str, str]) -> tuple[dict[str, dict[str, str]], list[str]]:
    source = str(path)
    try:
        text = path.read_text()
        root = yaml.compose(text)
        document = yaml.safe_load(text)
    except OSError as exc:
        return {}, [f"{source}: cannot read the service catalog: {exc.strerror}"]
    except yaml.YAMLError as exc:
        return {}, [f"{source}: not valid YAML: {exc}"]
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict):
        return {}, [f"{source}: the service catalog must be a mapping with a 'services' mapping"]
    lines: dict[str, int] = {}
    fields_at: dict[tuple[str, str], int] = {}
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "services" and isinstance(value, yaml.MappingNode):
                for service_key, entry in value.value:
                    lines[str(service_key.value)] = service_key.start_mark.line + 1
                    if isinstance(entry, yaml.MappingNode):
                        for field_key, _ in entry.value:
                            fields_at[(str(service_key.value), str(field_key.value))] = field_key.start_mark.line + 1
    known_cost_centers = set(cost_centers.values())
    catalog: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    for service, entry in document["services"].items():
        name = str(service)
        where = f"{source}:{lines.get(name, '?')}: services.{name}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a mapping of {', '.join(CATALOG_FIELDS)}")
            continue
        clean: dict[str, str] = {}
        for field, value in entry.items():
            at = f"{source}:{fields_at.get((name, str(field)), lines.get(name, '?'))}: services.{name}.{field}"
            if field not in CATALOG_FIELDS:
                problems.append(f"{at}: unknown key {field!r} (known: {', '.join(CATALOG_FIELDS)})")
            elif not isinstance(value, str | int) or not str(value).strip():
                problems.append(f"{at}: must be a non-empty name")
            else:
                clean[str(field)] = str(value).strip()
        cost_center = clean.get("cost_center")
        if cost_center and known_cost_centers and cost_center not in known_cost_centers:
            at = f"{source}:{fields_at.get((name, 'cost_center'), '?')}: services.{name}.cost_center"
            problems.append(
                f"{at}: unknown cost center {cost_center!r} (attribution.cost_centers names "
                f"{', '.join(sorted(known_cost_centers))})"
            )
        catalog[name] = clean
    return catalog, problems


def check_service_catalog(path: Path, cost_centers: Mapping[str, str]) -> list[str]:
    """One located message per problem; empty when the catalog is sound."""
    return _problems(path, cost_centers)[1]


def load_service_catalog(path: Path | str) -> dict[str, dict[str, str]]:
    catalog, problems = _problems(Path(path), {})
    if problems:
        raise ConfigError("\n".join(problems))
    return catalog
