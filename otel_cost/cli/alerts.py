"""`otel-cost alerts`: the alerts fired recently, from the running server or the store's ledger."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..alerts.ledger import AlertLedger
from ..api.alerts import MAX_ALERTS, parse_since
from ..config import ALERT_KINDS, load_config
from ..store import QueryResult, open_store
from .options import format_option, friendly_errors
from .remote import get_json
from .reprice import api_url_for, store_url_for
from .sql import query_options, render

__all__ = ["alerts"]

_COLUMNS = ("fired_at", "severity", "kind", "title", "subject", "delivered_to", "id")
_SUBJECT_CHARS = 60  # the table's subject column; csv and json have it whole


def _clip(text: str, limit: int | None) -> str:
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def _fetch(api_url: str, token: str | None, params: list[tuple[str, str]]) -> list[dict[str, Any]] | None:
    document = get_json(api_url, f"/v1/alerts?{urllib.parse.urlencode(params)}", token)
    return None if document is None else list(document["alerts"])


def _rows(found: list[dict[str, Any]], subject_chars: int | None) -> QueryResult:
    columns = [(name, "String") for name in _COLUMNS]
    rows = [
        [
            alert["fired_at"],
            alert["severity"],
            alert["kind"],
            alert["title"],
            _clip(", ".join(f"{key}={value}" for key, value in alert["subject"].items()), subject_chars),
            ", ".join(alert.get("delivered_to", [])),
            alert["id"][:12],
        ]
        for alert in found
    ]
    return QueryResult(columns, rows)


@click.command()
@click.option("--since", default="24h", show_default=True, help="A duration (90m, 24h, 7d), a date or an ISO time.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(ALERT_KINDS),
    help="Only alerts of this kind (repeat for several).",
)
@click.option("--limit", type=click.IntRange(1, MAX_ALERTS), default=100, show_default=True, help="At most this many.")
@format_option
@query_options
@friendly_errors
def alerts(
    since: str,
    kinds: tuple[str, ...],
    limit: int,
    fmt: str,
    api_url: str | None,
    store_url: str | None,
    token: str | None,
    config_path: Path | None,
) -> None:
    """List the alerts fired recently, newest first: budget points and forecasts, agent loops, retry
    storms, spend spikes, unpriced models, unattributed spend, floating aliases, new spenders.

    Asks the running server (GET /v1/alerts); when none answers, reads the store's alert ledger
    directly. Which one answered is said on stderr. `--format json` prints every alert's evidence
    (trace ids, sample span ids, figures) and the sinks that acknowledged it.

    \b
    Examples:
      otel-cost alerts
      otel-cost alerts --since 7d --kind agent_loop --kind retry_storm
      otel-cost alerts --format json --api http://otel-cost.internal:8318
    """
    try:
        moment = parse_since(since, datetime.now(UTC))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    config = load_config(config_path, overrides={"store": {"url": store_url}} if store_url else None)
    url = api_url or api_url_for(config)
    params = [("since", since), ("limit", str(limit)), *(("kind", kind) for kind in kinds)]
    found = _fetch(url, token, params)
    if found is not None:
        click.echo(f"(answered by the server at {url})", err=True)
    else:
        direct = store_url_for(config)
        click.echo(f"(no server at {url}; read the alert ledger of the store directly)", err=True)
        store = open_store(direct, migrate=False)
        try:
            found = AlertLedger(store).recent(moment, kinds=kinds, limit=limit)
        finally:
            store.close()
    if fmt == "json":
        click.echo(json.dumps(found, indent=2, ensure_ascii=False))
    else:
        click.echo(render(_rows(found, _SUBJECT_CHARS if fmt == "table" else None), fmt), nl=fmt != "csv")
