"""`otel-cost serve`."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import click

from ..config import Config, load_config
from ..errors import OtelCostError
from .options import friendly_errors

__all__ = ["serve"]


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="OTEL_COST_CONFIG",
    help="YAML config file (every section optional).",
)
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    help="Store URL: chdb:PATH (default chdb:./otel-cost-data), "
    "clickhouse://user:pass@host:8123/db or clickhouses://... [env OTEL_COST_STORE_URL]",
)
@click.option("--grpc-endpoint", metavar="HOST:PORT", help="OTLP/gRPC listen address (default 0.0.0.0:4317).")
@click.option("--http-endpoint", metavar="HOST:PORT", help="OTLP/HTTP listen address (default 0.0.0.0:4318).")
@click.option("--api-endpoint", metavar="HOST:PORT", help="API listen address (default 0.0.0.0:8318).")
@friendly_errors
def serve(
    config_path: Path | None,
    store_url: str | None,
    grpc_endpoint: str | None,
    http_endpoint: str | None,
    api_endpoint: str | None,
) -> None:
    """Receive OTLP traces, price and attribute every model call, store it.

    Runs the OTLP receiver (gRPC and HTTP), the pricing pipeline, the store writer and the API in one
    process until interrupted (Ctrl-C or SIGTERM finish in-flight exports first).

    \b
    Examples:
      otel-cost serve
      otel-cost serve --config otel-cost.yaml
      otel-cost serve --store clickhouse://otel:secret@clickhouse:8123/otel_cost --grpc-endpoint 0.0.0.0:14317
    """
    overrides: dict[str, dict[str, Any]] = {}
    if store_url:
        overrides.setdefault("store", {})["url"] = store_url
    if grpc_endpoint:
        overrides.setdefault("receiver", {})["grpc_endpoint"] = grpc_endpoint
    if http_endpoint:
        overrides.setdefault("receiver", {})["http_endpoint"] = http_endpoint
    if api_endpoint:
        overrides.setdefault("api", {})["endpoint"] = api_endpoint
    config = load_config(config_path, overrides=overrides)
    asyncio.run(_serve(config))


async def _serve(config: Config) -> None:
    from ..server import Server

    server = Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    click.echo("otel-cost: opening the store (the first start creates it)...", err=True)
    await server.start()
    assert server.store is not None
    click.echo(
        f"otel-cost: ready. OTLP gRPC :{server.grpc_port}  OTLP HTTP :{server.http_port}/v1/traces  "
        f"API :{server.api_port}  store {server.store.url}\n"
        f'  try:  otel-cost demo   then   otel-cost sql "SELECT team, sum(cost) FROM requests '
        'WHERE billable GROUP BY team"',
        err=True,
    )
    try:
        await stop.wait()
    finally:
        click.echo("otel-cost: stopping (finishing in-flight exports)...", err=True)
        try:
            await server.stop()
        except OtelCostError as exc:  # pragma: no cover - reported, not raised, while stopping
            print(f"otel-cost: {exc.message}", file=sys.stderr)
