"""`otel-cost sql`: read-only SQL, through the running server's API or straight from the store."""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click

from ..config import load_config
from ..errors import QueryError, StoreError
from ..store import QueryResult, Store, open_store, parse_store_url
from .options import format_option, friendly_errors
from .remote import api_error_message, api_url_for, open_api

__all__ = ["QuerySource", "query_options", "render", "run_query", "sql"]

F = TypeVar("F", bound=Callable[..., Any])


def query_options(func: F) -> F:
    """`--api`, `--store`, `--token`, `--config`: where a read-only query goes (see `run_query`)."""
    # Applied innermost first: click lists options in the order a decorator stack would read.
    func = click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="OTEL_COST_CONFIG",
        help="Config file to take the API address and store URL from.",
    )(func)
    func = click.option(
        "--token",
        envvar="OTEL_COST_API_TOKEN",
        help="Bearer token for the API (an api.read_tokens or api.admin_tokens entry), if it requires one. "
        "For an https API with a private CA, set OTEL_COST_API_CA_FILE to its PEM file.",
    )(func)
    func = click.option(
        "--store",
        "store_url",
        metavar="URL",
        envvar="OTEL_COST_STORE_URL",
        help="The store to open when no server answers (default chdb:./otel-cost-data).",
    )(func)
    return click.option(
        "--api",
        "api_url",
        metavar="URL",
        envvar="OTEL_COST_API_URL",
        help="A running server's API (default: from --config, else http://localhost:8318).",
    )(func)


@click.command()
@click.argument("query")
@format_option
@query_options
@friendly_errors
def sql(
    query: str,
    fmt: str,
    api_url: str | None,
    store_url: str | None,
    token: str | None,
    config_path: Path | None,
) -> None:
    """Run a read-only SQL query against the store.

    While `otel-cost serve` runs it owns the embedded store, so the query goes through its API;
    otherwise the store is opened directly. Which one answered is said on stderr. Costs are exact
    (USD, Decimal). One read statement (SELECT, WITH, SHOW, DESCRIBE, EXISTS, EXPLAIN) runs read-only,
    bounded in time, memory and result size; writes, DDL, SET and SETTINGS, INTO OUTFILE and table
    functions that read files, URLs or other servers are refused.

    \b
    Examples:
      otel-cost sql "SELECT team, sum(cost) FROM requests WHERE billable GROUP BY team"
      otel-cost sql "SELECT priced_model, count() FROM requests GROUP BY 1" --format csv
      otel-cost sql "SELECT * FROM spend_hour ORDER BY hour DESC LIMIT 5" --format json
    """
    answer = run_query(query, fmt, api_url=api_url, store_url=store_url, token=token, config_path=config_path)
    click.echo(answer, nl=not answer.endswith("\n"))


def run_query(
    query: str,
    fmt: str,
    *,
    api_url: str | None = None,
    store_url: str | None = None,
    token: str | None = None,
    config_path: Path | None = None,
) -> str:
    """A read-only query's result rendered in `fmt` (table, json or csv).

    While `otel-cost serve` runs it owns the embedded store (chDB allows one process), so the query
    goes through its API; when no server answers, the store is opened directly. Which one answered is
    said on stderr, so the caller's stdout stays the result alone.
    """
    with QuerySource(api_url=api_url, store_url=store_url, token=token, config_path=config_path) as source:
        if fmt == "csv":
            return source.query_csv(query)
        return render(source.query(query), fmt)


class QuerySource:
    """Where read-only queries go: a running server's API, else the store opened directly (see
    `run_query`). `store` is the opened store, or None when a server answers."""

    def __init__(
        self,
        *,
        api_url: str | None = None,
        store_url: str | None = None,
        token: str | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.config = load_config(config_path, overrides={"store": {"url": store_url}} if store_url else None)
        self.api_url = api_url or api_url_for(self.config)
        self.token = token
        self.store: Store | None = None
        self.description = ""
        self._said = False

    def __enter__(self) -> QuerySource:
        if _api_json(self.api_url, "SELECT 1", self.token) is not None:
            self.description = f"the server at {self.api_url}"
            return self
        url = self.config.store.url
        parsed = parse_store_url(url)
        click.echo(f"(no server at {self.api_url}; opened {parsed.redacted()} directly)", err=True)
        if parsed.kind == "chdb" and parsed.path is not None and not parsed.path.exists():
            raise StoreError(f"there is no store at {parsed.path} yet: start `otel-cost serve` first, or pass --store")
        self.store = open_store(url, migrate=False)
        self.description = f"the store {parsed.redacted()}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def query(self, sql: str) -> QueryResult:
        if self.store is not None:
            return self.store.user_query(sql)
        answer = _api_json(self.api_url, sql, self.token)
        if answer is None:
            raise StoreError(f"the server at {self.api_url} stopped answering")
        self._answered()
        return answer

    def query_csv(self, sql: str) -> str:
        if self.store is not None:
            return self.store.user_query_text(sql, "CSVWithNames").decode()
        answer = _via_api(self.api_url, sql, "csv", self.token)
        if answer is None:
            raise StoreError(f"the server at {self.api_url} stopped answering")
        self._answered()
        return answer

    def _answered(self) -> None:
        # Said once the server has answered a query: a refused query's error comes first and alone.
        if not self._said:
            self._said = True
            click.echo(f"(answered by {self.description})", err=True)


def _post_sql(api_url: str, query: str, fmt: str, token: str | None) -> bytes | None:
    body = json.dumps({"query": query, "format": "csv" if fmt == "csv" else "json"}).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{api_url.rstrip('/')}/v1/sql", data=body, headers=headers, method="POST")
    try:
        with open_api(request, 120) as response:
            payload: bytes = response.read()
            return payload
    except urllib.error.HTTPError as exc:
        raise QueryError(api_error_message(exc)) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _api_json(api_url: str, query: str, token: str | None) -> QueryResult | None:
    payload = _post_sql(api_url, query, "json", token)
    if payload is None:
        return None
    document = json.loads(payload, parse_float=Decimal)
    return QueryResult([(c["name"], c["type"]) for c in document["columns"]], document["rows"])


def _via_api(api_url: str, query: str, fmt: str, token: str | None) -> str | None:
    if fmt == "csv":
        payload = _post_sql(api_url, query, fmt, token)
        return None if payload is None else payload.decode()
    result = _api_json(api_url, query, token)
    return None if result is None else render(result, fmt)


def _display(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str) and value.count(".") == 1 and value.replace(".", "").lstrip("-").isdigit():
        whole, fraction = value.split(".")
        fraction = fraction.rstrip("0")
        return f"{whole}.{fraction}" if fraction else whole  # exact digits, trailing zeros dropped
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def render(result: QueryResult, fmt: str) -> str:
    """A query result as an aligned table, JSON (a list of objects) or CSV."""
    names = [name for name, _ in result.columns]
    if fmt == "json":
        return json.dumps(result.dicts(), indent=2, ensure_ascii=False, default=str)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(names)
        writer.writerows(result.rows)
        return out.getvalue()
    cells = [[_display(value) for value in row] for row in result.rows]
    widths = [max([len(name)] + [len(row[i]) for row in cells]) for i, name in enumerate(names)]
    numeric = [any(t in kind for t in ("Int", "Float", "Decimal")) for _, kind in result.columns]

    def line(values: list[str]) -> str:
        return "  ".join(
            value.rjust(width) if is_number else value.ljust(width)
            for value, width, is_number in zip(values, widths, numeric, strict=True)
        ).rstrip()

    rows = [line(names), line(["-" * width for width in widths]), *(line(row) for row in cells)]
    rows.append(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")
    return "\n".join(rows)
