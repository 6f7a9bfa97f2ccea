"""`otel-cost config check`: validate a whole config file as `otel-cost serve` would, naming every problem
with its file, line and dotted key, or summarize what the file sets up."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import yaml

from ..attribution.catalog import check_service_catalog, load_service_catalog
from ..config import OWNER_DIMENSIONS, Config, load_config
from ..errors import ConfigError
from ..formats import plural
from ..store import parse_store_url
from .options import friendly_errors

# The price-override checks `prices check` runs past a file's first errors, and its line ordering:
# one implementation, so both commands word and order a problem alike.
from .prices import hidden_override_problems, problem_line

__all__ = ["config_group"]


@click.group("config")
def config_group() -> None:
    """Check configuration files before a server reads them.

    \b
    Examples:
      otel-cost config check otel-cost.yaml
    """


def _hidden_catalog_problems(path: Path) -> list[str]:
    """The service catalog's problems, also when the rest of the file does not validate.

    `load_config` reads the catalog only once the whole file validates, so a typo elsewhere would hide
    them until the next run; `check` names every problem at once. A catalog path or cost-center table
    that uses ${env:...} is skipped: it cannot be judged without its substitution.
    """
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return []  # load_config has said so already
    section = document.get("attribution") if isinstance(document, dict) else None
    if not isinstance(section, dict):
        return []
    catalog = section.get("service_catalog")
    cost_centers = section.get("cost_centers") or {}
    if not isinstance(catalog, str) or "${env:" in catalog or not isinstance(cost_centers, dict):
        return []
    if any("${env:" in str(value) for value in cost_centers.values()):
        return []
    catalog_path = Path(catalog) if Path(catalog).is_absolute() else path.parent / catalog
    if not catalog_path.is_file():
        return []  # load_config names the missing file at its line
    return check_service_catalog(catalog_path, {str(team): str(center) for team, center in cost_centers.items()})


def _order(path: Path, problem: str) -> tuple[int, int]:
    # The config file's own problems by line first, then those of files it names (the service catalog).
    return (0 if problem.startswith(f"{path}:") else 1, problem_line(problem))


def _sources(sources: list[Any]) -> str:
    return plural(len(sources), "source")


def summary(config: Config) -> list[str]:
    """What a valid config sets up, one line per part; secrets are counted, never shown."""
    receiver, api, attribution = config.receiver, config.api, config.attribution
    receiving = f"grpc {receiver.grpc_endpoint}, http {receiver.http_endpoint}"
    receiving += f", {plural(len(receiver.bearer_tokens), 'bearer token')}" if receiver.bearer_tokens else ", no auth"
    if receiver.tls is not None:
        receiving += ", TLS"
    overrides = config.pricing.overrides
    pricing = plural(len(overrides), "price override")
    if overrides:
        pricing += ": " + ", ".join(override.name for override in overrides)
    configured = [f"{name} ({_sources(sources)})" for name, sources in attribution.dimensions.items()]
    built_in = [name for name in OWNER_DIMENSIONS if name not in attribution.dimensions]
    dimensions = "; ".join(
        part for part in (", ".join(configured), "built-in: " + ", ".join(built_in) if built_in else "") if part
    )
    tags = ", ".join(f"{name} ({_sources(sources)})" for name, sources in attribution.tags.items())
    if attribution.service_catalog is not None:
        services = load_service_catalog(attribution.service_catalog)
        catalog = f"{attribution.service_catalog}: {plural(len(services), 'service')}"
    else:
        catalog = "none"
    budgets = plural(len(config.budgets), "budget")
    if config.budgets:
        budgets += ": " + ", ".join(budget.name for budget in config.budgets)
    return [
        f"  receiver      {receiving}",
        f"  api           {api.endpoint}, {plural(len(api.read_tokens), 'read token')}, "
        f"{plural(len(api.admin_tokens), 'admin token')}",
        f"  store         {parse_store_url(config.store.url).redacted()}",
        f"  pricing       {pricing}",
        f"  presets       {', '.join(attribution.presets) or 'none'}",
        f"  dimensions    {dimensions}",
        f"  tags          {tags or 'none'}",
        f"  catalog       {catalog}",
        f"  cost centers  {plural(len(attribution.cost_centers), 'team')} mapped",
        f"  budgets       {budgets}; {plural(len(config.gateways), 'gateway webhook')}",
        f"  alerts        {_alerts(config)}",
        f"  forward       {_forward(config)}",
        f"  metrics       {_metrics_export(config)}",
    ]


def _where(endpoint: str, protocol: str, headers: dict[str, str]) -> str:
    """An OTLP destination without its credentials: scheme, host and port; headers only counted."""
    url = urlsplit(endpoint)
    shown = f"{url.scheme}://{url.hostname}" + (f":{url.port}" if url.port else "")
    return f"{shown} ({protocol}" + (f", {plural(len(headers), 'header')})" if headers else ")")


def _forward(config: Config) -> str:
    forward = config.forward
    if not forward.endpoints:
        return "off"
    where = ", ".join(_where(endpoint.endpoint, endpoint.protocol, endpoint.headers) for endpoint in forward.endpoints)
    content = "content dropped" if forward.drop_content else "content as received"
    return f"{where}; {content}, secrets redacted"


def _metrics_export(config: Config) -> str:
    export = config.metrics_export
    if not export.endpoint:
        return "prometheus /metrics only"
    every = f"{export.interval_seconds:g}s"
    return f"/metrics, and OTLP to {_where(export.endpoint, export.protocol, export.headers)} every {every}"


def _alerts(config: Config) -> str:
    alerts = config.alerts
    if not alerts.enabled:
        return "off"
    runaway = alerts.runaway
    detectors = [
        name + (" (contains)" if detector.contain is not None else "")
        for name, detector in (
            ("agent_loop", runaway.agent_loop),
            ("retry_storm", runaway.retry_storm),
            ("spend_spike", runaway.spend_spike),
        )
        if detector.enabled
    ]
    hygiene = alerts.hygiene
    detectors += [
        name
        for name, on in (
            ("unpriced_model", hygiene.unpriced_models),
            ("unattributed_share", hygiene.unattributed_share is not None),
            ("floating_alias", hygiene.floating_aliases),
            ("new_owner", bool(hygiene.new_owners)),
        )
        if on
    ]
    sinks = ", ".join(f"{sink.label} ({sink.kind})" if sink.label != sink.kind else sink.kind for sink in alerts.sinks)
    return f"every {alerts.interval_seconds:g} s: {', '.join(detectors) or 'budgets only'}; sinks: {sinks or 'none'}"


@config_group.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@friendly_errors
def check(file: Path) -> None:
    """Validate a config file the way `otel-cost serve` reads it.

    Every problem is one line, `FILE:LINE: dotted.key: message`: unknown keys and bad values in every
    section, unknown attribution source kinds, presets and dimensions, bad regular expressions,
    service catalog entries (with the catalog's own file and line) and price overrides that overlap or
    match nothing. `${env:VAR}` is substituted and OTEL_COST_* variables apply, as for the server.
    On success it prints `ok: FILE` and what the file sets up; otherwise every problem, and exits 1.

    \b
    Examples:
      otel-cost config check otel-cost.yaml
      OTEL_COST_INGEST_TOKEN=x otel-cost config check deploy/otel-cost.yaml
    """
    try:
        config = load_config(file)
    except ConfigError as exc:
        problems = exc.message.splitlines()
        for extra in (*_hidden_catalog_problems(file), *hidden_override_problems(file)):
            if extra not in problems:
                problems.append(extra)
        for line in sorted(problems, key=lambda problem: _order(file, problem)):
            click.echo(line)
        raise click.ClickException(f"{file}: {plural(len(problems), 'problem')}") from None
    click.echo(f"ok: {file}")
    for line in summary(config):
        click.echo(line)
