"""`otel-cost prices`: what a model costs on a day, which models go unpriced, where an emitter's own
cost claim disagrees with ours, and whether a config's price overrides are sound."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from pydantic import ValidationError

from ..config import Config, PriceOverride, load_config
from ..errors import ConfigError
from ..pricing import PriceBook, RateCard, probe_call
from ..pricing.overrides import Rule, canonical_provider, check_overrides
from ..pricing.ratecard import CLASSES
from .options import format_option, friendly_errors
from .sql import query_options, run_query

__all__ = ["hidden_override_problems", "prices", "problem_line"]

F = TypeVar("F", bound=Callable[..., Any])

# Rates are exact Decimals with up to 24 places; scaling them to per-million must never round.
_EXACT = Context(prec=80)
_DAY = click.DateTime(formats=["%Y-%m-%d"])
_OVERRIDE_REF = re.compile(r"\(override #(\d+)\)")
_LOCATED = re.compile(r".*?:(\d+): ")

#: How each class is quoted: per million tokens, except the per-request fee (per thousand requests),
#: the units of the catalog and of the config's price keys.
_QUOTED_PER = {name: (6, "1M tokens") for name in CLASSES} | {"per_request": (3, "1K requests")}


def _config_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="OTEL_COST_CONFIG",
        help=help_text,
    )


def _since_clause(since: datetime | None) -> str:
    # `since` comes from click.DateTime, so the literal below holds nothing but a formatted date.
    return f" AND timestamp >= toDateTime64('{since:%Y-%m-%d} 00:00:00', 9, 'UTC')" if since else ""


@click.group()
def prices() -> None:
    """Inspect prices: what a model costs, what goes unpriced, where emitters disagree.

    \b
    Examples:
      otel-cost prices show gpt-4o
      otel-cost prices show gemini-2.5-pro --provider gcp.gemini --at 2026-11-30
      otel-cost prices unpriced --since 2026-11-01
      otel-cost prices drift --min-difference 0.000001
      otel-cost prices check otel-cost.yaml
    """


# --- show ----------------------------------------------------------------------------------------


def _quoted(rate: Decimal, name: str) -> str:
    """USD per token -> the exact price per million tokens (per thousand requests), no trailing zeros."""
    places, _ = _QUOTED_PER[name]
    return format(rate.scaleb(places, _EXACT).normalize(_EXACT), "f")


def _segment_label(index: int, starts: Sequence[int]) -> str:
    if len(starts) == 1:
        return "any"
    if index == 0:
        return f"<= {starts[1]:,}"
    if index == len(starts) - 1:
        return f"> {starts[index]:,}"
    return f"> {starts[index]:,}, <= {starts[index + 1]:,}"


def _card_document(card: RateCard, model: str, provider: str, day: date, tier: str, processing: str) -> dict[str, Any]:
    segments = card.rates()
    starts = [start for start, _ in segments]
    return {
        "model": model,
        "provider": provider,
        "priced_model": card.model_id,
        "at": f"{day.isoformat()}T12:00:00Z",
        "service_tier": tier,
        "processing": processing,
        "price_version": card.price_version,
        "tiers": [
            {
                "prompt_tokens": _segment_label(index, starts),
                "above_prompt_tokens": start,
                "prices": [
                    {
                        "class": name,
                        "usd": _quoted(rates[name], name),
                        "per": _QUOTED_PER[name][1],
                        "source": source,
                    }
                    for name, source in zip(CLASSES, card.sources, strict=True)
                ],
            }
            for index, (start, rates) in enumerate(segments)
        ],
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, name in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if align else value.ljust(width)
            for value, width, align in zip(values, widths, right, strict=True)
        ).rstrip()

    return [line(header), line(["-" * width for width in widths]), *(line(row) for row in rows)]


def _render_card(document: dict[str, Any]) -> str:
    variant = ", ".join(
        part
        for part in (
            f"service_tier={document['service_tier']}" if document["service_tier"] else "",
            "batch" if document["processing"] else "",
        )
        if part
    )
    lines = [
        f"model          {document['model']}"
        + (f" (priced as {document['priced_model']})" if document["priced_model"] != document["model"] else ""),
        f"provider       {document['provider'] or '(from the model name)'}",
        f"at             {document['at']}",
        f"variant        {variant or 'default'}",
        f"price_version  {document['price_version']}",
        "",
    ]
    tiers = document["tiers"]
    if not tiers:
        lines.append("(this model's prices are too fine-grained for a rate card: genai-prices prices every call)")
        return "\n".join(lines)
    rows = [
        [tier["prompt_tokens"], price["class"], price["usd"], price["per"], price["source"]]
        for tier in tiers
        for price in tier["prices"]
    ]
    lines += _table(["prompt tokens", "class", "USD", "per", "source"], rows, [False, False, True, False, False])
    if len(tiers) > 1:
        limits = ", ".join(f"{tier['above_prompt_tokens']:,}" for tier in tiers[1:])
        lines += [
            "",
            f"Long context: past {limits} prompt tokens (uncached input plus cache reads and writes),",
            "every token of the request is charged at that tier's rates.",
        ]
    return "\n".join(lines)


@prices.command()
@click.argument("model")
@click.option(
    "--provider",
    default="",
    metavar="PROVIDER",
    help="gen_ai.provider.name (openai, anthropic, aws.bedrock, gcp.gemini, ... or an alias); "
    "default: the model name decides.",
)
@click.option("--at", "at", type=_DAY, metavar="YYYY-MM-DD", help="The day (UTC, priced at noon); default: today.")
@click.option("--service-tier", default="", metavar="TIER", help="The service tier that served the call (e.g. flex).")
@click.option("--batch", is_flag=True, help="Priced as a batch API call.")
@_config_option("Config file whose pricing.overrides apply (default: the catalog alone).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="Output format."
)
@friendly_errors
def show(
    model: str,
    provider: str,
    at: datetime | None,
    service_tier: str,
    batch: bool,
    config_path: Path | None,
    fmt: str,
) -> None:
    """Show MODEL's prices on a day, and where each number comes from.

    Prices are per million tokens (per thousand requests for the per-request fee), exact. A model
    with long-context tiers has a set of rows per tier; an override shows its multiplier or price and
    its identity (as recorded in every row's price_version).

    \b
    Examples:
      otel-cost prices show gpt-4o
      otel-cost prices show gemini-2.5-pro --provider gcp.gemini
      otel-cost prices show claude-sonnet-4-5 --provider anthropic --at 2026-12-01 --config otel-cost.yaml
      otel-cost prices show gpt-4o-mini --service-tier flex --format json
    """
    config = load_config(config_path) if config_path else Config()
    book = PriceBook(config.pricing.overrides)
    day = (at or datetime.now(UTC)).date()
    tier = service_tier.strip().lower()
    # As the span reader does: a "batch" tier is batch processing, not a tier.
    if tier == "batch":
        batch, tier = True, ""
    call = probe_call(
        model,
        canonical_provider(provider) if provider else "",
        day,
        service_tier=tier,
        processing="batch" if batch else "",
    )
    card = book.card(call)
    if card is None:
        where = f" for provider {call.provider}" if call.provider else ""
        raise click.ClickException(f"{model}{where} is not priced on {day}: {book.price(call).reason}")
    document = _card_document(card, model, call.provider, day, call.service_tier, call.processing)
    click.echo(json.dumps(document, indent=2) if fmt == "json" else _render_card(document))


# --- unpriced and drift --------------------------------------------------------------------------


@prices.command()
@click.option("--since", type=_DAY, metavar="YYYY-MM-DD", help="Only calls from this day on (UTC); default: all.")
@format_option
@query_options
@friendly_errors
def unpriced(
    since: datetime | None,
    fmt: str,
    api_url: str | None,
    store_url: str | None,
    token: str | None,
    config_path: Path | None,
) -> None:
    """List the models seen in billable calls that no price covers.

    One line per provider, model and reason: calls, tokens (input is uncached input; cache reads and
    writes are counted apart), when it was first and last seen, which teams and services call it.
    Add the model to pricing.overrides with prices of its own to price it from then on. Like
    `otel-cost sql`, it asks a running server, else opens the store.

    \b
    Examples:
      otel-cost prices unpriced
      otel-cost prices unpriced --since 2026-11-01 --format csv
    """
    query = f"""
SELECT
    provider,
    if(response_model != '', response_model, request_model) AS model,
    count() AS calls,
    sum(input_tokens) AS input_tokens,
    sum(cache_read_tokens + cache_write_tokens) AS cache_tokens,
    sum(output_tokens) AS output_tokens,
    toDateTime(min(timestamp)) AS first_seen,
    toDateTime(max(timestamp)) AS last_seen,
    arraySort(groupUniqArray(team)) AS teams,
    arraySort(groupUniqArray(service_name)) AS services,
    unpriced_reason
FROM requests
WHERE billable AND NOT priced{_since_clause(since)}
GROUP BY provider, model, unpriced_reason
ORDER BY calls DESC, provider, model, unpriced_reason
""".strip()
    answer = run_query(query, fmt, api_url=api_url, store_url=store_url, token=token, config_path=config_path)
    click.echo(answer, nl=not answer.endswith("\n"))


class _USD(click.ParamType):
    name = "USD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Decimal:
        if isinstance(value, Decimal):
            return value
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            self.fail(f"{value!r} is not an amount in USD (e.g. 0.000001)", param, ctx)
        if not amount.is_finite() or amount < 0:
            self.fail(f"must be a non-negative amount in USD (got {value!r})", param, ctx)
        return amount


@prices.command()
@click.option("--since", type=_DAY, metavar="YYYY-MM-DD", help="Only calls from this day on (UTC); default: all.")
@click.option(
    "--min-difference",
    type=_USD(),
    default="0",
    show_default=True,
    help="A call disagrees when the two costs differ by more than this (USD): room for an emitter's rounding.",
)
@format_option
@query_options
@friendly_errors
def drift(
    since: datetime | None,
    min_difference: Decimal,
    fmt: str,
    api_url: str | None,
    store_url: str | None,
    token: str | None,
    config_path: Path | None,
) -> None:
    """Find where an emitter's own cost claim disagrees with our price.

    Emitters such as OpenLIT (gen_ai.usage.cost), LiteLLM and OpenInference put their own cost on
    the span; it is stored as they sent it (emitter_cost). Per emitter, provider and priced model,
    over the calls whose span carried a numeric cost claim: how many disagree, our total, theirs,
    and the difference (theirs minus ours), all exact. Only groups with a disagreeing call are
    listed. A claim of 0 usually means the emitter's own price lookup failed. Like `otel-cost sql`,
    it asks a running server, else opens the store.

    \b
    Examples:
      otel-cost prices drift
      otel-cost prices drift --since 2026-11-01 --min-difference 0.000001 --format json
    """
    threshold = format(min_difference, "f")
    # Every model call, billed or counted elsewhere: an instrumentation library's span that wraps the
    # provider SDK's own span is stored `billable = 0` (`duplicate_of` set), and its claim is exactly
    # what is being checked. Aggregates (agent runs) are left out: their cost is not one call's price.
    # Claims are parsed as Decimal(38, 24) in SQL; one that is not a number is left out.
    query = f"""
SELECT
    emitter,
    provider,
    model,
    count() AS calls_with_claim,
    countIf(abs(cost - claim) > toDecimal128('{threshold}', 24)) AS disagreeing,
    sum(cost) AS our_cost,
    sum(claim) AS their_cost,
    their_cost - our_cost AS difference
FROM
(
    SELECT emitter, provider, priced_model AS model, cost, assumeNotNull(toDecimal128OrNull(emitter_cost, 24)) AS claim
    FROM requests
    WHERE priced AND (billable OR duplicate_of != '') AND emitter_cost != ''
        AND toDecimal128OrNull(emitter_cost, 24) IS NOT NULL{_since_clause(since)}
)
GROUP BY emitter, provider, model
HAVING disagreeing > 0
ORDER BY abs(difference) DESC, emitter, provider, model
""".strip()
    answer = run_query(query, fmt, api_url=api_url, store_url=store_url, token=token, config_path=config_path)
    click.echo(answer, nl=not answer.endswith("\n"))


# --- check ---------------------------------------------------------------------------------------


def _summary(override: PriceOverride) -> str:
    rule = Rule(override)
    if override.deployment:
        target = f"deployment {override.deployment}"
        if override.model:
            target += f" -> {override.provider + '/' if override.provider else ''}{override.model}"
    elif override.model:
        target = f"model {override.provider + '/' if override.provider else ''}{override.model}"
    else:
        target = f"provider {override.provider}"
    variant = "".join(
        part
        for part in (
            f" service_tier={override.service_tier}" if override.service_tier else "",
            " batch" if override.processing else "",
        )
    )
    if override.multiplier is not None:
        change = f" x {override.multiplier}"
    elif override.prices:
        change = " at " + ", ".join(f"{key} {amount}" for key, amount in override.prices.items())
    else:
        change = ""
    since = f"from {override.effective_from}" if override.effective_from else ""
    until = f"until {override.effective_until}" if override.effective_until else ""
    when = " ".join(part for part in (since, until) if part) or "always"
    return f"{rule.identity}: {target}{variant}{change}, {when}"


def hidden_override_problems(path: Path) -> list[str]:
    """Overlaps and overrides that match nothing, among the overrides that are valid on their own.

    `load_config` checks those only once the whole file validates, so a file with an unknown key
    would hide them until the next run; `check` should name every problem at once. An override that
    uses ${env:...} is skipped here: it cannot be judged without its substitution.
    """
    try:
        text = path.read_text()
        document = yaml.safe_load(text)
        root = yaml.compose(text)
    except (OSError, yaml.YAMLError):
        return []  # load_config has said so already
    raw = document.get("pricing") if isinstance(document, dict) else None
    raw_overrides = raw.get("overrides") if isinstance(raw, dict) else None
    if not isinstance(raw_overrides, list):
        return []
    valid: list[tuple[int, PriceOverride]] = []
    for index, item in enumerate(raw_overrides):
        if "${env:" in json.dumps(item, default=str):
            continue
        try:
            valid.append((index, PriceOverride.model_validate(item)))
        except ValidationError:  # already reported by load_config
            continue
    lines = []
    for position, key, found in check_overrides([override for _, override in valid]):
        index = valid[position][0]
        # The checker numbers overrides among the valid ones; the file numbers them all.
        message = _OVERRIDE_REF.sub(lambda match: f"(override #{valid[int(match.group(1))][0]})", found)
        line = _override_line(root, index, key)
        where = f"{path}:{line}: " if line else f"{path}: "
        # Worded as load_config words it, so a problem both passes find is printed once.
        lines.append(f"{where}pricing.overrides.{index}{'.' + key if key else ''}: {message}")
    return lines


def _override_line(root: yaml.Node | None, index: int, key: str) -> int | None:
    """The line of `pricing.overrides[index].key` (or of the list item) in the composed YAML."""
    node = root
    for part in ("pricing", "overrides"):
        if not isinstance(node, yaml.MappingNode):
            return None
        node = next((value for name, value in node.value if name.value == part), None)
    if not isinstance(node, yaml.SequenceNode) or index >= len(node.value):
        return None
    item = node.value[index]
    if isinstance(item, yaml.MappingNode):
        for name, _ in item.value:
            if name.value == key:
                return int(name.start_mark.line) + 1
    return int(item.start_mark.line) + 1


def problem_line(problem: str) -> int:
    """`file:12: key: message` -> 12, so problems read top to bottom; 0 for one without a line."""
    match = _LOCATED.match(problem)
    return int(match.group(1)) if match else 0


@prices.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@friendly_errors
def check(file: Path) -> None:
    """Check the price overrides in a config file, line by line.

    Unknown keys, bad values, overrides whose dates overlap another's for the same target, and
    overrides that can match nothing (a model or provider the catalog does not know, with no prices
    of their own) are errors; the server refuses to start on any of them. On success, one line per
    override: its identity (as rows record it in price_version), what it matches and what it does.

    \b
    Examples:
      otel-cost prices check otel-cost.yaml
    """
    try:
        config = load_config(file)
    except ConfigError as exc:
        problems = exc.message.splitlines()
        problems += [line for line in hidden_override_problems(file) if line not in problems]
        for line in sorted(problems, key=problem_line):
            click.echo(line)
        count = len(problems)
        raise click.ClickException(f"{file}: {count} problem{'s' if count != 1 else ''}") from None
    overrides = config.pricing.overrides
    click.echo(f"ok: {len(overrides)} override{'s' if len(overrides) != 1 else ''}")
    for override in overrides:
        click.echo(f"  {_summary(override)}")
