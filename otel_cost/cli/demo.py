"""`otel-cost demo`."""

from __future__ import annotations

import sys

import click

from .options import friendly_errors

__all__ = ["demo"]


@click.command()
@click.option(
    "--endpoint",
    default="http://localhost:4317",
    show_default=True,
    metavar="URL",
    help="The OTLP/gRPC endpoint of a running `otel-cost serve`.",
)
@click.option(
    "--calls",
    default=200,
    show_default=True,
    type=click.IntRange(10, 1_000_000),
    help="About how many model calls to send (agent and wrapper spans come on top).",
)
@click.option("--seed", default=7, show_default=True, type=int, help="Random seed: the same seed sends the same mix.")
@click.option("--token", envvar="OTEL_COST_INGEST_TOKEN", help="Bearer token, if the receiver requires one.")
@friendly_errors
def demo(endpoint: str, calls: int, seed: int, token: str | None) -> None:
    """Send realistic GenAI traffic to a running otel-cost.

    Six services instrumented the way real libraries do it (OpenLLMetry, openai-v2, the Anthropic
    SDK's own spans, OpenInference, the Vercel AI SDK): several teams and models, prompt caching, an
    agent whose usage must not be billed twice, an agent stuck in a retry loop on the most expensive
    model, a self-hosted model no catalog prices, and a service nobody tagged with a team.

    \b
    Examples:
      otel-cost demo
      otel-cost demo --calls 2000 --endpoint http://otel-cost.internal:4317
    """
    from ..demo import run_demo

    headers = {"authorization": f"Bearer {token}"} if token else None
    with click.progressbar(length=calls, label="sending model calls", file=sys.stderr) as bar:
        summary = run_demo(endpoint, calls, seed, headers=headers, progress=bar.update)
    if summary.failed_spans:
        raise click.ClickException(
            f"{summary.failed_spans} of {summary.spans + summary.failed_spans} spans were not accepted by {endpoint}"
        )
    services = ", ".join(f"{name} {count}" for name, count in sorted(summary.by_service.items()))
    click.echo(f"sent {summary.calls} model calls in {summary.spans} spans to {endpoint} ({services})")
    click.echo('next: otel-cost sql "SELECT team, sum(cost) FROM requests WHERE billable GROUP BY team"')
    click.echo("      otel-cost alerts    (the runaway agent is caught within one detector interval, 5 s by default)")
