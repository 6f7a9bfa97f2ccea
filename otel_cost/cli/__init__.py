"""`otel-cost`: the command line. A thin layer: options in, library calls, output out."""

from __future__ import annotations

import logging
import sys

import click

from .. import __version__
from .alerts import alerts
from .attribution import attribution
from .caps import caps, enforce
from .config_check import config_group
from .demo import demo
from .prices import prices
from .reattribute import reattribute_command
from .reprice import reprice_command
from .review import review
from .serve import serve
from .sql import sql

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="otel-cost")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    envvar="OTEL_COST_LOG_LEVEL",
    help="How much otel-cost logs (to stderr).",
)
def cli(log_level: str) -> None:
    """otel-cost: the meter, the ledger and the circuit breaker for LLM spend.

    Receives OpenTelemetry GenAI spans, prices every model call exactly, attributes it to an owner
    and stores it in ClickHouse.

    \b
    Quick start:
      otel-cost serve                 # receiver on :4317/:4318, API on :8318, store ./otel-cost-data
      otel-cost demo                  # send realistic GenAI traffic to it
      otel-cost sql "SELECT team, sum(cost) FROM requests WHERE billable GROUP BY team"
    """
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


cli.add_command(serve)
cli.add_command(sql)
cli.add_command(demo)
cli.add_command(prices)
cli.add_command(reprice_command)
cli.add_command(reattribute_command)
cli.add_command(attribution)
cli.add_command(config_group)
cli.add_command(caps)
cli.add_command(enforce)
cli.add_command(alerts)
cli.add_command(review)


def main() -> None:
    cli(prog_name="otel-cost")
