"""`otel-cost review`: the weekly review, from the running server's API or straight from the store."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from ..review import FORMATS, QUERIES, Week, build_review, publish_rates, render_review
from .options import friendly_errors
from .sql import QuerySource, query_options

__all__ = ["review"]


def _week(value: str | None) -> Week:
    now = datetime.now(UTC)
    if value is None or value == "last":
        return Week.containing(now - timedelta(days=7))  # the last complete week
    if value == "this":
        return Week.containing(now)
    try:
        return Week(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--week") from None


@click.command()
@click.option(
    "--week",
    "week_label",
    metavar="YYYY-Www",
    help="ISO week (UTC), or `this` (so far) or `last`; default: last, the last complete week.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True, help="Output format.")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the review to FILE instead of stdout.",
)
@click.option(
    "--section",
    type=click.Choice(QUERIES),
    help="With --format csv: only this section, one column per field (default: every section, long).",
)
@query_options
@friendly_errors
def review(
    week_label: str | None,
    fmt: str,
    out_path: Path | None,
    section: str | None,
    api_url: str | None,
    store_url: str | None,
    token: str | None,
    config_path: Path | None,
) -> None:
    """The weekly spend review: top movers, new spenders, trending toward cap, cost per accepted
    result, unattributed and unpriced spend, floating aliases, prompt caching, model mix.

    Every section is a query in clickhouse/queries/ run for the week; amounts are exact USD (the
    Markdown and HTML round for display, JSON and CSV carry every digit). Markdown suits chat and
    tickets; HTML is one file with its charts inline (no network); JSON and CSV feed pipelines.
    Through a running server's API, or the store opened directly (which one is said on stderr).

    \b
    Examples:
      otel-cost review
      otel-cost review --week this
      otel-cost review --week 2026-W48 --format html --out review-2026-W48.html
      otel-cost review --week 2026-W48 --format json | jq .summary
      otel-cost review --format csv --section top_movers > movers.csv
    """
    week = _week(week_label)
    if section is not None and fmt != "csv":
        raise click.BadParameter("--section goes with --format csv", param_hint="--section")
    started = time.monotonic()
    with QuerySource(api_url=api_url, store_url=store_url, token=token, config_path=config_path) as source:
        if source.store is not None:
            # Nobody else owns this store: bring its schema and list prices up to date first.
            source.store.migrate()
            publish_rates(source.store, source.config)
        document = build_review(source.query, week, source=source.description, top=source.config.review.top)
    text = render_review(document, fmt, section)
    elapsed = time.monotonic() - started
    if out_path is not None:
        out_path.write_text(text)
        click.echo(f"wrote the {week.label} review ({fmt}) to {out_path} in {elapsed:.1f} s", err=True)
    else:
        click.echo(text, nl=not text.endswith("\n"))
