"""`otel-cost reattribute`: apply the current attribution rules to stored calls, through the running
server's API (its own rules) or straight on the store (the --config's rules)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from ..config import load_config
from ..reattribute import ReattributeResult, reattribute
from ..reprice import units_text
from ..store import open_store, parse_store_url
from .options import friendly_errors
from .reprice import Progress, api_url_for, run_options, run_via_api, store_url_for

__all__ = ["reattribute_command", "render_result"]


@click.command("reattribute")
@run_options("re-attribute", "attribution rules")
@friendly_errors
def reattribute_command(
    since: datetime,
    until: datetime | None,
    dry_run: bool,
    fmt: str,
    api_url: str | None,
    store_url: str | None,
    token: str | None,
    config_path: Path | None,
) -> None:
    """Apply the current attribution rules to stored calls.

    Every row of `requests` whose span ended in [--since, --until) is attributed again, from the span
    and resource attributes it stored (a kept inner call of a nested pair inheriting its outer span's,
    as on arrival); rows whose cost center, team, feature, agent, environment, owner rules or tags
    change are rewritten, and the per-minute and per-hour rollups corrected with them, so they still
    equal the raw rows to the last decimal. Costs never change. Each run is recorded in the table
    `reattribute_runs`. Running it twice changes nothing the second time.

    While `otel-cost serve` runs, the run goes through its API (POST /v1/reattribute) and uses the
    server's own rules; otherwise the store is opened directly and attributed with --config's rules.
    Which one ran is said on stderr.

    \b
    Examples:
      otel-cost reattribute --since 2026-11-01 --dry-run
      otel-cost reattribute --since 2026-11-01 --until 2026-12-01
      otel-cost reattribute --since 2026-11-01 --config otel-cost.yaml --format json
    """
    if since >= (until or datetime.now(UTC)):
        raise click.BadParameter("must be before --until (default: now)", param_hint="--since")
    config = load_config(config_path, overrides={"store": {"url": store_url}} if store_url else None)
    api_url = api_url or api_url_for(config)
    progress = Progress("re-attributing")
    document = run_via_api(api_url, "/v1/reattribute", since, until, dry_run, token, "re-attribute", progress)
    if document is not None:
        result = ReattributeResult.from_dict(document)
        click.echo(f"(re-attributed by the server at {api_url}, with its rules)", err=True)
    else:
        url = store_url_for(config)
        source = f"the attribution rules of {config_path}" if config_path else "the built-in attribution rules"
        click.echo(f"(no server at {api_url}; opened {parse_store_url(url).redacted()} directly, {source})", err=True)
        store = open_store(url)  # migrates: the run log comes with 007
        try:
            result = reattribute(store, config.attribution, since, until, dry_run=dry_run, progress=progress)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        finally:
            store.close()
    click.echo(json.dumps(result.to_dict(), indent=2) if fmt == "json" else render_result(result))


def render_result(result: ReattributeResult) -> str:
    """The summary: range, rows, billable spend and its unattributed part, and what moved where."""
    since = result.since.strftime("%Y-%m-%d %H:%M:%S")
    until = result.until.strftime("%Y-%m-%d %H:%M:%S")
    lines = [
        f"{'dry run (nothing written)' if result.dry_run else 'run ' + result.run_id}: [{since}, {until}) UTC",
        f"rows examined   {result.rows_examined}",
        f"rows changed    {result.rows_changed}",
        f"rows moved      {result.rows_moved} (another cost center, team, feature, agent or environment)",
        f"billable total  {units_text(result.billable_units)} USD (unchanged)",
        f"unattributed    {units_text(result.unattributed_before_units)} USD before, "
        f"{units_text(result.unattributed_after_units)} USD after",
        f"rules           {result.rules_digest}",
    ]
    if result.status != "ok" or result.message:
        lines.append(f"status          {result.status}{': ' + result.message if result.message else ''}")
    if result.recovered:
        lines.append(f"also settled    interrupted run(s) {', '.join(result.recovered)}")
    if result.changes:
        header = ("dimension", "from", "to", "rows", "cost")
        cells = [
            (change.dimension, change.old, change.new, str(change.rows), units_text(change.cost_units))
            for change in result.changes[:20]
        ]
        widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]

        def line(values: tuple[str, ...]) -> str:
            return "  ".join(
                value.rjust(width) if i >= 3 else value.ljust(width)
                for i, (value, width) in enumerate(zip(values, widths, strict=True))
            ).rstrip()

        lines += ["", "changes (billable cost):", line(header), line(tuple("-" * width for width in widths))]
        lines += [line(row) for row in cells]
        if len(result.changes) > 20:
            lines.append(f"... and {len(result.changes) - 20} more (--format json lists them all)")
    return "\n".join(lines)
