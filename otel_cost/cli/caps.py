"""`otel-cost caps` (the current cap state) and `otel-cost enforce` (the enforcer alone, for a
ClickHouse server shared by several replicas)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import click

from ..config import Config, load_config
from ..enforcer import Enforcer
from ..errors import OtelCostError, StoreError
from ..store import QueryResult, open_store, parse_store_url
from .options import friendly_errors
from .remote import get_json
from .reprice import api_url_for
from .sql import query_options, render

__all__ = ["caps", "enforce"]


def _fetch(api_url: str, token: str | None) -> dict[str, Any] | None:
    document: dict[str, Any] | None = get_json(api_url, "/v1/caps", token)
    return document


def _evaluate_directly(config: Config) -> dict[str, Any]:
    parsed = parse_store_url(config.store.url)
    if parsed.kind == "chdb" and parsed.path is not None and not parsed.path.exists():
        raise StoreError(f"there is no store at {parsed.path} yet: start `otel-cost serve` first, or pass --store")
    store = open_store(config.store.url, migrate=False)
    try:
        enforcer = Enforcer(store, config)
        enforcer.poll_once()
        if enforcer.last_error:
            raise StoreError(f"evaluating budgets failed: {enforcer.last_error}")
        return enforcer.state.document()
    finally:
        store.close()


def _table(document: dict[str, Any]) -> str:
    rows = [
        [
            cap["budget"],
            ", ".join(f"{key}={value}" for key, value in cap["scope"].items()) or "*",
            cap["action"],
            cap["spent"],
            cap["limit"],
            cap["forecast"],
            cap["period_end"],
            cap["reason"],
        ]
        for cap in document["caps"]
    ]
    columns = [
        (name, "String") for name in ("budget", "scope", "action", "spent", "limit", "forecast", "period_end", "reason")
    ]
    header = f"version {document['version']}, generated {document['generated_at']}"
    return header + "\n" + render(QueryResult(columns, rows), "table")


@click.command()
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="Output format."
)
@query_options
@friendly_errors
def caps(fmt: str, api_url: str | None, store_url: str | None, token: str | None, config_path: Path | None) -> None:
    """Print the current cap state: every budget's spend, forecast and action.

    Asks the running server (GET /v1/caps); when none answers, evaluates the config's budgets from the
    store directly. Which one answered is said on stderr.

    \b
    Examples:
      otel-cost caps
      otel-cost caps --format json --api http://otel-cost.internal:8318
      otel-cost caps --config otel-cost.yaml --store chdb:./otel-cost-data
    """
    config = load_config(config_path, overrides={"store": {"url": store_url}} if store_url else None)
    url = api_url or api_url_for(config)
    document = _fetch(url, token)
    if document is not None:
        click.echo(f"(answered by the server at {url})", err=True)
    else:
        click.echo(f"(no server at {url}; evaluated the budgets of the config from the store)", err=True)
        document = _evaluate_directly(config)
    if fmt == "json":
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(_table(document), nl=False)


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="OTEL_COST_CONFIG",
    help="Config file: budgets, gateways, the store and the API endpoint.",
)
@click.option("--store", "store_url", metavar="URL", envvar="OTEL_COST_STORE_URL", help="The store to read.")
@friendly_errors
def enforce(config_path: Path | None, store_url: str | None) -> None:
    """Run the enforcer alone: evaluate budgets, serve GET /v1/caps, push webhooks, raise alerts.

    For a ClickHouse server that several receivers write to: run as many replicas as you like, each
    publishes the same cap state (the version is derived from the decisions). `otel-cost serve` already
    runs an enforcer; this command is for deployments that separate the two.

    \b
    Examples:
      otel-cost enforce --config otel-cost.yaml --store clickhouse://enforcer:secret@clickhouse:8123/otel_cost
      OTEL_COST_API_ENDPOINT=0.0.0.0:8319 otel-cost enforce --config otel-cost.yaml
    """
    from ..enforcer.service import EnforcerService

    config = load_config(config_path, overrides={"store": {"url": store_url}} if store_url else None)
    if not config.budgets and not config.alerts.enabled:
        raise click.ClickException("no budgets in the config and alerts are disabled: nothing to do")

    async def run() -> None:
        service = EnforcerService(config)
        await service.start()
        click.echo(
            f"otel-cost enforcing {len(config.budgets)} budget(s)"
            + (f", alerting to {len(config.alerts.sinks)} sink(s)" if config.alerts.enabled else "")
            + f"; caps at :{service.api_port}/v1/caps",
            err=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await service.stop()

    try:
        asyncio.run(run())
    except OtelCostError as exc:
        raise click.ClickException(exc.message) from None
