"""`otel-cost reprice`: re-price stored calls with the current price book, through the running server's
API (its own price book) or straight on the store (the --config's overrides)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from ..config import Config, load_config
from ..errors import OtelCostError, QueryError, StoreError
from ..pricing import PriceBook
from ..reprice import CHUNK_ROWS, RepriceResult, parse_when, reprice, units_text
from ..store import open_store, parse_store_url
from . import remote
from .options import friendly_errors
from .remote import api_error_message

__all__ = [
    "Progress",
    "api_url_for",
    "parse_date",
    "render_result",
    "reprice_command",
    "run_options",
    "run_via_api",
    "store_url_for",
]

F = TypeVar("F", bound=Callable[..., Any])

#: A whole run may take a while on a large range; the API answers when it is done.
_API_TIMEOUT_SECONDS = 6 * 3600


def parse_date(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """The --since and --until callback (shared with `otel-cost reattribute`)."""
    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


class Progress:
    """Progress on stderr, for runs longer than one chunk, at most every two seconds."""

    def __init__(self, what: str = "re-pricing") -> None:
        self._what = what
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if total <= CHUNK_ROWS or (now - self._last < 2 and done < total):
            return
        self._last = now
        click.echo(f"{self._what}: {done:,} of {total:,} rows examined ({done * 100 // max(total, 1)}%)", err=True)


def run_options(verb: str, book: str) -> Callable[[F], F]:
    """The options `reprice` and `reattribute` share: the range, --dry-run, --format and where the run
    goes (the running server's API, else the store with `book` from --config)."""

    def apply(func: F) -> F:
        options = [
            click.option(
                "--since",
                required=True,
                callback=parse_date,
                metavar="DATE",
                help=f"First day to {verb}, YYYY-MM-DD (UTC, inclusive; an ISO 8601 time also works).",
            ),
            click.option(
                "--until",
                callback=parse_date,
                metavar="DATE",
                help="Day to stop at, YYYY-MM-DD (UTC, exclusive). Default: now.",
            ),
            click.option("--dry-run", is_flag=True, help=f"{verb.capitalize()} and report, change nothing."),
            click.option(
                "--format",
                "fmt",
                type=click.Choice(["table", "json"]),
                default="table",
                show_default=True,
                help="Output format.",
            ),
            click.option(
                "--api",
                "api_url",
                metavar="URL",
                envvar="OTEL_COST_API_URL",
                help="A running server's API (default: from --config, else http://localhost:8318).",
            ),
            click.option(
                "--store",
                "store_url",
                metavar="URL",
                envvar="OTEL_COST_STORE_URL",
                help="The store to open when no server answers (default chdb:./otel-cost-data).",
            ),
            click.option(
                "--token",
                envvar="OTEL_COST_API_TOKEN",
                help="Bearer token for the API (an api.admin_tokens entry; with none configured, the server runs "
                "this for loopback clients only). For an https API with a private CA, set OTEL_COST_API_CA_FILE.",
            ),
            click.option(
                "--config",
                "config_path",
                type=click.Path(dir_okay=False, path_type=Path),
                envvar="OTEL_COST_CONFIG",
                help=f"Config file: the API address, the store URL, and the {book} used when no server answers.",
            ),
        ]
        for option in reversed(options):  # the first listed ends up outermost, as a decorator stack reads
            func = option(func)
        return func

    return apply


@click.command("reprice")
@run_options("re-price", "price overrides")
@friendly_errors
def reprice_command(
    since: datetime,
    until: datetime | None,
    dry_run: bool,
    fmt: str,
    api_url: str | None,
    store_url: str | None,
    token: str | None,
    config_path: Path | None,
) -> None:
    """Re-price stored calls with the current price book.

    Every row of `requests` whose span ended in [--since, --until) is priced again (at its request
    start, as on arrival) with the catalog and the price overrides; rows whose cost, price version or
    priced state change are updated, and the per-minute and per-hour rollups corrected with them, so
    they still equal the raw rows to the last decimal. Each run is recorded in the table
    `reprice_runs`. Running it twice changes nothing the second time.

    While `otel-cost serve` runs, the run goes through its API (POST /v1/reprice) and uses the server's
    own price overrides; otherwise the store is opened directly and priced with --config's overrides.
    Which one ran is said on stderr.

    \b
    Examples:
      otel-cost reprice --since 2026-11-01 --dry-run
      otel-cost reprice --since 2026-11-01 --until 2026-12-01
      otel-cost reprice --since 2026-11-01 --config otel-cost.yaml --format json
    """
    if since >= (until or datetime.now(UTC)):
        raise click.BadParameter("must be before --until (default: now)", param_hint="--since")
    config = load_config(config_path, overrides={"store": {"url": store_url}} if store_url else None)
    api_url = api_url or api_url_for(config)
    document = run_via_api(api_url, "/v1/reprice", since, until, dry_run, token, "re-price", Progress())
    if document is not None:
        result = RepriceResult.from_dict(document)
        click.echo(f"(re-priced by the server at {api_url}, with its price book)", err=True)
    else:
        url = store_url_for(config)
        overrides = config.pricing.overrides
        source = f"{len(overrides)} price override(s) from {config_path}" if config_path else "no price overrides"
        click.echo(f"(no server at {api_url}; opened {parse_store_url(url).redacted()} directly, {source})", err=True)
        store = open_store(url)  # migrates: the run log and signed rollup counts come with 005
        try:
            result = reprice(store, PriceBook(overrides), since, until, dry_run=dry_run, progress=Progress())
        finally:
            store.close()
    click.echo(json.dumps(result.to_dict(), indent=2) if fmt == "json" else render_result(result))


def api_url_for(config: Config) -> str:
    """The API of the server `config` describes, as reached from this machine."""
    return remote.api_url_for(config)


def store_url_for(config: Config) -> str:
    """The store to open directly; an embedded one must exist already (a run never creates one)."""
    url = config.store.url
    parsed = parse_store_url(url)
    if parsed.kind == "chdb" and parsed.path is not None and not parsed.path.exists():
        raise StoreError(f"there is no store at {parsed.path}: start `otel-cost serve` first, or pass --store")
    return url


def run_via_api(
    api_url: str,
    path: str,
    since: datetime,
    until: datetime | None,
    dry_run: bool,
    token: str | None,
    verb: str,
    progress: Progress,
) -> dict[str, Any] | None:
    """A run on the server at `api_url` (`path`: /v1/reprice or /v1/reattribute), its progress shown
    by `progress`: its result document, or None when no server listens there. `verb` names the run in
    errors ("re-price")."""
    body: dict[str, Any] = {"since": since.isoformat(), "dry_run": dry_run, "progress": True}
    if until is not None:
        body["until"] = until.isoformat()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}{path}", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with remote.open_api(request, _API_TIMEOUT_SECONDS) as response:
            # NDJSON: progress lines while the server reads, then the result (or the error).
            for line in response:
                if not line.strip():
                    continue
                event = json.loads(line)
                if "progress" in event:
                    progress(event["progress"]["rows_examined"], event["progress"]["rows_total"])
                elif "result" in event:
                    result: dict[str, Any] = event["result"]
                    return result
                elif "error" in event:
                    raise QueryError(f"the server could not {verb}: {event['error']['message']}")
    except urllib.error.HTTPError as exc:
        raise QueryError(f"the server at {api_url} refused: {api_error_message(exc)}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    except OtelCostError:
        raise
    raise QueryError(f"the server at {api_url} ended the answer before the result")


def render_result(result: RepriceResult) -> str:
    """The summary: range, rows, billable totals before and after, and what changed by model."""
    since = result.since.strftime("%Y-%m-%d %H:%M:%S")
    until = result.until.strftime("%Y-%m-%d %H:%M:%S")
    difference = result.new_total_units - result.old_total_units
    lines = [
        f"{'dry run (nothing written)' if result.dry_run else 'run ' + result.run_id}: [{since}, {until}) UTC",
        f"rows examined   {result.rows_examined}",
        f"rows changed    {result.rows_changed}",
        f"old total       {units_text(result.old_total_units)} USD (billable)",
        f"new total       {units_text(result.new_total_units)} USD",
        f"difference      {'+' if difference > 0 else ''}{units_text(difference)} USD",
        f"price versions  {', '.join(result.price_versions) or '-'}",
    ]
    if result.status != "ok" or result.message:
        lines.append(f"status          {result.status}{': ' + result.message if result.message else ''}")
    if result.recovered:
        lines.append(f"also settled    interrupted run(s) {', '.join(result.recovered)}")
    if result.groups:
        header = ("provider", "model", "old version", "new version", "rows", "old cost", "new cost")
        cells = [
            (
                group.provider,
                group.model,
                group.old_version,
                group.new_version,
                str(group.rows),
                units_text(group.old_units),
                units_text(group.new_units),
            )
            for group in result.groups[:20]
        ]
        widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]

        def line(values: tuple[str, ...]) -> str:
            return "  ".join(
                value.rjust(width) if i >= 4 else value.ljust(width)
                for i, (value, width) in enumerate(zip(values, widths, strict=True))
            ).rstrip()

        lines += ["", "changes (billable cost):", line(header), line(tuple("-" * width for width in widths))]
        lines += [line(row) for row in cells]
        if len(result.groups) > 20:
            lines.append(f"... and {len(result.groups) - 20} more groups (--format json lists them all)")
    return "\n".join(lines)
