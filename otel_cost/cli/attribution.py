"""`otel-cost attribution`: why a stored call has the owner it has, and what feeds `unattributed`.

Both commands read the store like `otel-cost sql` (a running server's API, else the store itself) and
judge what they find against the *current* attribution rules: those of `--config` (or the built-in
ones), which may differ from the rules the rows were attributed under.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import click

from ..attribution import PRESETS, Attributor
from ..config import OWNER_DIMENSIONS, Config, load_config
from ..model import UNATTRIBUTED, Owner
from ..store.wire import SEPARATOR
from .options import FORMATS, friendly_errors
from .sql import query_options, run_query

__all__ = ["attribution", "consulted_keys", "gap_suggestion"]

_SPAN_ID = re.compile(r"^[0-9a-f]{16}$")
_DAY = click.DateTime(formats=["%Y-%m-%d"])
_MAX_SHOWN_VALUE = 72  # table cells only; JSON carries the stored value whole
_WIDTH = 100


@click.group()
def attribution() -> None:
    """Explain owners: which rule named a call's owner, and what feeds `unattributed`.

    \b
    Examples:
      otel-cost attribution explain 3c5e1f0a9b2d4c68
      otel-cost attribution explain 3c5e1f0a9b2d4c68 --config otel-cost.yaml --format json
      otel-cost attribution gaps --since 2026-11-01
    """


# --- the keys the current rules read -------------------------------------------------------------


class _KeyRecorder(Mapping[str, Any]):
    """An empty attribute map that remembers every key a rule asks it for."""

    def __init__(self, asked: list[str]) -> None:
        self.asked = asked

    def __getitem__(self, key: str) -> Any:
        self.asked.append(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class _ResourceProbe:
    """Stands in for a `ResourceOwner` so a resource-side rule says which keys it reads. Asking the rule
    beats parsing its label: labels carry preset prefixes and regexes that may hold any character."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.attrs = _KeyRecorder(self.asked)

    @property
    def service_name(self) -> str:
        self.asked.append("service.name")
        return ""

    @property
    def catalog_entry(self) -> dict[str, str]:
        self.asked.append("service.name")  # the service catalog is keyed by it
        return {}


def consulted_keys(attributor: Attributor) -> dict[str, dict[str, list[str]]]:
    """Per dimension (and `tag:NAME`), the span and the resource attribute keys its rules read, in rule
    order. `feature` also reads `service.name`: it is the feature when no rule names one."""
    found: dict[str, dict[str, list[str]]] = {}
    for name, chain in attributor.chains.items():
        span: list[str] = []
        resource: list[str] = []
        for rule in chain.rules:
            if rule.side == "span":
                span += [key for key in rule.keys if key not in span]
            else:
                probe = _ResourceProbe()
                rule.read(probe)
                resource += [key for key in probe.asked if key not in resource]
        if name == "feature" and "service.name" not in resource:
            resource.append("service.name")
        found[name] = {"span": span, "resource": resource}
    return found


def _read_for(consulted: Mapping[str, Mapping[str, list[str]]], side: str) -> dict[str, list[str]]:
    """key -> the dimensions whose rules read it on that side."""
    readers: dict[str, list[str]] = {}
    for name, sides in consulted.items():
        for key in sides[side]:
            readers.setdefault(key, []).append(name)
    return readers


def _rules_from(config_path: Path | None, config: Config) -> str:
    """What the current rules are, in a few words."""
    where = str(config_path) if config_path else "built-in defaults (no --config)"
    section = config.attribution
    parts = []
    if section.presets:
        parts.append("presets " + ", ".join(section.presets))
    if section.dimensions:
        parts.append("dimensions " + ", ".join(section.dimensions))
    if section.tags:
        parts.append("tags " + ", ".join(section.tags))
    if section.service_catalog:
        parts.append(f"catalog {section.service_catalog.name}")
    return where + (f" ({'; '.join(parts)})" if parts else "")


def _current_config(config_path: Path | None) -> Config:
    # The same loading the server does: file, then OTEL_COST_* variables.
    return load_config(config_path)


# --- explain -------------------------------------------------------------------------------------


def _split(keys: str, values: str) -> dict[str, str]:
    if not keys:
        return {}
    return dict(zip(keys.split(SEPARATOR), values.split(SEPARATOR), strict=True))


def _owner_view(owner: Owner) -> tuple[dict[str, str], dict[str, str]]:
    """An Owner as (dimension or `tag:NAME` -> value, the same -> rule)."""
    values = {dimension: getattr(owner, dimension) for dimension in OWNER_DIMENSIONS}
    values |= {f"tag:{tag}": value for tag, value in _split(owner.tag_keys, owner.tag_values).items()}
    return values, _split(owner.rule_keys, owner.rule_values)


def _stored_view(row: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    values = {dimension: str(row[dimension]) for dimension in OWNER_DIMENSIONS}
    values |= {f"tag:{tag}": value for tag, value in row["tags"].items()}
    rules = dict(row["owner_rules"])
    if "team" not in rules and row["owner_source"]:
        rules["team"] = row["owner_source"]  # rows stored before owner_rules existed
    return values, rules


def _explain_row(
    row: Mapping[str, Any],
    outer: Mapping[str, Any] | None,
    attributor: Attributor,
    consulted: Mapping[str, Mapping[str, list[str]]],
) -> dict[str, Any]:
    span_attrs: dict[str, Any] = dict(row["attributes"])
    resource_attrs: dict[str, Any] = dict(row["resource_attributes"])
    resource = attributor.resource(resource_attrs)
    stored_values, stored_rules = _stored_view(row)
    candidates = [attributor.combine(span_attrs, resource)]
    if outer is not None:
        # One call seen by two instrumentation layers in one export: the pipeline lets the outer span's
        # attributes speak where the inner one is silent. Across exports it does not, so both count.
        candidates.insert(0, attributor.combine({**outer["attributes"], **span_attrs}, resource))
    views = [_owner_view(candidate) for candidate in candidates]
    current_values, current_rules = next((view for view in views if view == (stored_values, stored_rules)), views[0])
    inherited = outer is not None and (current_values, current_rules) == views[0] and views[0] != views[-1]

    names = list(OWNER_DIMENSIONS) + [f"tag:{tag}" for tag in attributor.tags]
    names += sorted(name for name in set(stored_values) | set(current_values) if name not in names)
    owner: dict[str, dict[str, Any]] = {}
    for name in names:
        stored_value, stored_rule = stored_values.get(name, ""), stored_rules.get(name, "")
        now_value, now_rule = current_values.get(name, ""), current_rules.get(name, "")
        owner[name] = {
            "value": stored_value,
            "rule": stored_rule,
            "current_value": now_value,
            "current_rule": now_rule,
            "matches": (stored_value, stored_rule) == (now_value, now_rule),
            "capped": stored_rule.endswith("(capped)"),
        }
    span_readers = _read_for(consulted, "span")
    resource_readers = _read_for(consulted, "resource")

    def attributes(attrs: Mapping[str, Any], readers: Mapping[str, list[str]]) -> list[dict[str, Any]]:
        return [
            {"key": key, "value": attrs[key], "read_for": readers.get(key, [])}
            for key in sorted(attrs, key=lambda key: (key not in readers, key))
        ]

    return {
        "span_id": row["span_id"],
        "trace_id": row["trace_id"],
        "timestamp": row["timestamp"],
        "service_name": row["service_name"],
        "emitter": row["emitter"],
        "billable": bool(row["billable"]),
        "cost": _exact(row["cost"]),
        "owner": owner,
        "matches_current_rules": all(item["matches"] for item in owner.values()),
        "owner_from_outer_span": _span_of(outer) if inherited and outer is not None else None,
        "span_attributes": attributes(span_attrs, span_readers),
        "resource_attributes": attributes(resource_attrs, resource_readers),
        "outer_span_attributes": attributes(dict(outer["attributes"]), span_readers) if outer is not None else [],
        "outer_span_id": _span_of(outer) if outer is not None else None,
        "team_rules_read": consulted["team"],
    }


def _span_of(row: Mapping[str, Any]) -> str:
    return str(row["span_id"])


def _exact(value: Any) -> str:
    """A Decimal's text without trailing zeros or an exponent."""
    text = format(Decimal(str(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _shown(value: str) -> str:
    value = value.replace("\n", " ")
    return value if len(value) <= _MAX_SHOWN_VALUE else value[: _MAX_SHOWN_VALUE - 1] + "…"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] = ()) -> list[str]:
    right = list(right) or [False] * len(header)
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, name in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if align else value.ljust(width)
            for value, width, align in zip(values, widths, right, strict=True)
        ).rstrip()

    return [line(header), line(["-" * width for width in widths]), *(line(row) for row in rows)]


def _attribute_lines(title: str, items: Sequence[Mapping[str, Any]]) -> list[str]:
    if not items:
        return [f"{title}: none stored"]
    rows = [
        [("* " if item["read_for"] else "  ") + item["key"], _shown(str(item["value"])), ", ".join(item["read_for"])]
        for item in items
    ]
    table = _table(["  key", "value", "read for"], rows)
    return [f"{title} (* = read by the current rules)", *("  " + line for line in table)]


def _wrapped(text: str, indent: str = "") -> list[str]:
    """Prose wrapped for a terminal; names and keys are never broken."""
    return textwrap.wrap(
        text, _WIDTH, initial_indent=indent, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def _rule_text(rule: str) -> str:
    return "no rule" if rule in ("", UNATTRIBUTED) else rule


def _render_explanation(found: Mapping[str, Any], rules_from: str) -> str:
    state = "billable" if found["billable"] else "not billable: counted elsewhere"
    lines = [
        f"span {found['span_id']} (trace {found['trace_id']})",
        f"  time     {found['timestamp']}",
        f"  service  {found['service_name'] or '(none)'}",
        f"  emitter  {found['emitter'] or '(unknown)'}",
        f"  cost     {found['cost']} USD ({state})",
        f"  rules    {rules_from}",
        "",
    ]
    rows = []
    for name, item in found["owner"].items():
        now = "same" if item["matches"] else f"{item['current_value'] or '-'} ({_rule_text(item['current_rule'])})"
        rows.append([name, item["value"] or "-", item["rule"] or "-", now])
    lines += _table(["dimension", "owner", "rule", "current rules"], rows)
    lines.append("")
    lines += _attribute_lines("span attributes", found["span_attributes"])
    if found["outer_span_id"]:
        lines.append("")
        lines += _attribute_lines(
            f"outer span {found['outer_span_id']} (the same call seen by another instrumentation layer)",
            found["outer_span_attributes"],
        )
    lines.append("")
    lines += _attribute_lines("resource attributes", found["resource_attributes"])
    lines.append("")
    owner = found["owner"]
    notes = []
    if owner["team"]["value"] == UNATTRIBUTED and owner["team"]["current_value"] == UNATTRIBUTED:
        span_keys = ", ".join(found["team_rules_read"]["span"]) or "(nothing)"
        resource_keys = ", ".join(found["team_rules_read"]["resource"]) or "(nothing)"
        notes.append(
            f"No rule names a team for this call. The current rules look on the span for {span_keys}; "
            f"on the resource for {resource_keys}. `otel-cost attribution gaps` suggests a rule."
        )
    if found["owner_from_outer_span"]:
        notes.append(f"Part of the owner comes from the outer span {found['owner_from_outer_span']}'s attributes.")
    capped = [name for name, item in owner.items() if item["capped"]]
    if capped:
        notes.append(
            f"{', '.join(capped)} stored as 'other': the dimension had reached attribution.max_values distinct values."
        )
    if found["matches_current_rules"]:
        notes.append("The current rules give this call the same owner.")
    else:
        changed = [
            f"{name} {item['value'] or '-'} -> {item['current_value'] or '-'}"
            + f" ({_rule_text(item['current_rule'])})"
            for name, item in owner.items()
            if not item["matches"]
        ]
        notes.append(
            "The current rules give a different owner: " + "; ".join(changed) + ". The call was attributed "
            "under other rules; `otel-cost reattribute` applies the current ones to stored calls."
        )
    for note in notes:
        lines += _wrapped(note)
    return "\n".join(lines)


@attribution.command()
@click.argument("span_id")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="Output format."
)
@query_options
@friendly_errors
def explain(
    span_id: str,
    fmt: str,
    api_url: str | None,
    store_url: str | None,
    token: str | None,
    config_path: Path | None,
) -> None:
    """Explain the owner of the stored call with SPAN_ID (16 hex digits).

    Per dimension (cost_center, team, feature, agent, environment and each tag): the owner stored and
    the rule that produced it. Then the call's span and resource attributes, marking the keys the
    current rules (--config's, else the built-in ones) read and for which dimension. When the current
    rules would give another owner, says so: `otel-cost reattribute` applies them to stored calls.
    Like `otel-cost sql`, it asks a running server, else opens the store.

    \b
    Examples:
      otel-cost attribution explain 3c5e1f0a9b2d4c68
      otel-cost attribution explain 3c5e1f0a9b2d4c68 --config otel-cost.yaml
      otel-cost attribution explain 3c5e1f0a9b2d4c68 --format json
    """
    wanted = span_id.strip().lower()
    if not _SPAN_ID.match(wanted):
        raise click.ClickException(f"{span_id!r} is not a span id: 16 hex digits, e.g. 3c5e1f0a9b2d4c68")
    config = _current_config(config_path)
    attributor = Attributor(config.attribution)
    consulted = consulted_keys(attributor)
    # `wanted` is 16 hex digits (checked above), so it is safe in the literal. Rows that duplicate it
    # (an outer instrumentation layer's span of the same call) come too: their attributes may own it.
    query = f"""
SELECT trace_id, span_id, duplicate_of, toString(timestamp) AS timestamp, service_name, emitter, billable,
    toString(cost) AS cost, cost_center, team, feature, agent, environment, owner_source, owner_rules, tags,
    attributes, resource_attributes
FROM requests
WHERE span_id = '{wanted}' OR duplicate_of = '{wanted}'
ORDER BY timestamp, trace_id
""".strip()
    answer = run_query(query, "json", api_url=api_url, store_url=store_url, token=token, config_path=config_path)
    found = json.loads(answer)
    rows = [row for row in found if row["span_id"] == wanted]
    if not rows:
        raise click.ClickException(
            f"no stored call has span id {wanted} (only model calls are stored; other spans are ignored)"
        )
    outers = {row["trace_id"]: row for row in found if row["duplicate_of"] == wanted}
    explanations = [_explain_row(row, outers.get(row["trace_id"]), attributor, consulted) for row in rows]
    if fmt == "json":
        click.echo(json.dumps(explanations, indent=2, ensure_ascii=False))
        return
    rules_from = _rules_from(config_path, config)
    click.echo("\n\n".join(_render_explanation(found, rules_from) for found in explanations))


# --- gaps ----------------------------------------------------------------------------------------

#: Words in an attribute key that say it names an owner.
_OWNER_WORDS = (
    "team",
    "owner",
    "squad",
    "group",
    "department",
    "dept",
    "division",
    "org",
    "organization",
    "organisation",
    "costcenter",
    "costcentre",
    "business_unit",
    "businessunit",
    "project",
    "tenant",
    "customer",
    "account",
)
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def _words(key: str) -> list[str]:
    """`metadata.user_api_key_team_alias` -> [..., 'team', 'alias']; `costCenter` -> ['cost', 'center']."""
    words = [word.lower() for word in _WORD.findall(key)]
    # Pairs make the two-word names: cost center, business unit.
    return words + [first + second for first, second in itertools.pairwise(words)]


def _owner_rank(key: str) -> int | None:
    """How strongly a key's name says it names an owner (lower is stronger), None when it does not."""
    words = _words(key)
    ranks = [_OWNER_WORDS.index(word) for word in words if word in _OWNER_WORDS]
    return min(ranks) if ranks else None


def _preset_keys() -> dict[tuple[str, str], tuple[str, str]]:
    """(side, key) -> (preset, dimension), the team dimension's sources first."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for preferred in (True, False):
        for preset, dimensions in PRESETS.items():
            for dimension, sources in dimensions.items():
                if (dimension == "team") != preferred:
                    continue
                for source in sources:
                    text = source.get("from", "") if isinstance(source, dict) else source
                    side, _, key = str(text).partition(":")
                    if side in ("span", "resource") and key:
                        found.setdefault((side, key), (preset, dimension))
    return found


def gap_suggestion(
    service: str,
    span_keys: Sequence[str],
    resource_keys: Sequence[str],
    team_reads: Mapping[str, Sequence[str]],
) -> tuple[str, list[str]]:
    """The rule to try for spend nobody owns, and the keys that look like ownership.

    A key the team's current rules already read is left out (it was there and said nothing). A preset's
    key suggests the preset; another key whose name says owner (team, group, org, cost center, ...)
    suggests reading it; without either, the service catalog is the way.
    """
    presets = _preset_keys()
    candidates: list[tuple[tuple[int, int, int], str, str]] = []
    for side, keys in (("span", span_keys), ("resource", resource_keys)):
        for key in keys:
            if key in team_reads.get(side, ()):
                continue
            preset = presets.get((side, key))
            rank = _owner_rank(key)
            if preset is not None and (preset[1] == "team" or rank is not None):
                # A preset's team key first; its other keys only where they name an owner themselves.
                order = (0 if preset[1] == "team" else 1, rank if rank is not None else 0, 0 if side == "span" else 1)
                candidates.append((order, f"{side}:{key}", f"preset:{preset[0]}"))
            elif rank is not None:
                candidates.append(((1, rank, 0 if side == "span" else 1), f"{side}:{key}", f"{side}:{key}"))
    candidates.sort(key=lambda item: (item[0], item[1]))
    ownership = [source for _, source, _ in candidates]
    if candidates:
        return candidates[0][2], ownership
    if not service or service.startswith("unknown_service"):
        return "set service.name (OTEL_SERVICE_NAME), then a services: entry in the service catalog", ownership
    return f"services: {{{service}: {{team: ...}}}}", ownership


def _percent(part: Decimal, whole: Decimal) -> str:
    if not whole:
        return "0"
    return str((part * 100 / whole).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _since_clause(since: datetime | None) -> str:
    # `since` comes from click.DateTime, so the literal below holds nothing but a formatted date.
    return f" AND timestamp >= toDateTime64('{since:%Y-%m-%d} 00:00:00', 9, 'UTC')" if since else ""


def _gaps_query(since: datetime | None, limit: int) -> str:
    """One query (so one answer from one place): the billable total, the unattributed total and the
    groups, told apart by `kind`."""
    where = f"billable{_since_clause(since)}"
    unowned = f"{where} AND team = '{UNATTRIBUTED}'"
    no_keys = "CAST([], 'Array(String)')"
    return f"""
SELECT 'billable' AS kind, '' AS service_name, '' AS emitter, count() AS calls, toString(sum(cost)) AS spend,
    {no_keys} AS span_keys, {no_keys} AS resource_keys, toUInt64(0) AS groups
FROM requests WHERE {where}
UNION ALL
SELECT 'unattributed', '', '', count(), toString(sum(cost)), {no_keys}, {no_keys}, uniqExact(service_name, emitter)
FROM requests WHERE {unowned}
UNION ALL
SELECT 'gap', service_name, emitter, calls, toString(spend), span_keys, resource_keys, toUInt64(0)
FROM
(
    SELECT toString(service_name) AS service_name, toString(emitter) AS emitter, count() AS calls,
        sum(cost) AS spend,
        arraySort(groupUniqArrayArray(CAST(mapKeys(attributes), 'Array(String)'))) AS span_keys,
        arraySort(groupUniqArrayArray(CAST(mapKeys(resource_attributes), 'Array(String)'))) AS resource_keys
    FROM requests WHERE {unowned}
    GROUP BY service_name, emitter
    ORDER BY spend DESC, service_name, emitter
    LIMIT {limit}
)
""".strip()


@attribution.command()
@click.option("--since", type=_DAY, metavar="YYYY-MM-DD", help="Only calls from this day on (UTC); default: all.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Groups to list, largest spend first."
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True, help="Output format.")
@query_options
@friendly_errors
def gaps(
    since: datetime | None,
    limit: int,
    fmt: str,
    api_url: str | None,
    store_url: str | None,
    token: str | None,
    config_path: Path | None,
) -> None:
    """Show what feeds `unattributed`, largest spend first, with a rule to try for each.

    Billable calls that no rule gave a team, per service and emitter: spend (exact USD), calls, their
    share of all billable spend, and the span and resource attribute keys they carry. The suggested
    rule reads a key that looks like ownership (a preset's key suggests the preset); without one, a
    service catalog entry. Keys the current rules (--config's) already read are not suggested again.
    Like `otel-cost sql`, it asks a running server, else opens the store.

    \b
    Examples:
      otel-cost attribution gaps
      otel-cost attribution gaps --since 2026-11-01 --limit 5
      otel-cost attribution gaps --config otel-cost.yaml --format json
    """
    config = _current_config(config_path)
    team_reads = consulted_keys(Attributor(config.attribution))["team"]
    answer = run_query(
        _gaps_query(since, limit), "json", api_url=api_url, store_url=store_url, token=token, config_path=config_path
    )
    rows = json.loads(answer)
    totals = {row["kind"]: row for row in rows if row["kind"] != "gap"}
    billable_spend = Decimal(totals["billable"]["spend"])
    unattributed_spend = Decimal(totals["unattributed"]["spend"])
    groups = []
    for row in rows:
        if row["kind"] != "gap":
            continue
        spend = Decimal(row["spend"])
        suggestion, ownership = gap_suggestion(row["service_name"], row["span_keys"], row["resource_keys"], team_reads)
        groups.append(
            {
                "service_name": row["service_name"],
                "emitter": row["emitter"],
                "calls": int(row["calls"]),
                "spend": _exact(spend),
                "share_percent": _percent(spend, billable_spend),
                "span_keys": row["span_keys"],
                "resource_keys": row["resource_keys"],
                "ownership_keys": ownership,
                "suggested_rule": suggestion,
            }
        )
    # UNION ALL keeps no order between its parts.
    groups.sort(key=lambda group: (-Decimal(group["spend"]), group["service_name"], group["emitter"]))
    document = {
        "since": f"{since:%Y-%m-%d}" if since else None,
        "billable_spend": _exact(billable_spend),
        "billable_calls": int(totals["billable"]["calls"]),
        "unattributed_spend": _exact(unattributed_spend),
        "unattributed_calls": int(totals["unattributed"]["calls"]),
        "unattributed_share_percent": _percent(unattributed_spend, billable_spend),
        "groups_total": int(totals["unattributed"]["groups"]),
        "groups": groups,
    }
    if fmt == "json":
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    elif fmt == "csv":
        click.echo(_gaps_csv(groups), nl=False)
    else:
        click.echo(_render_gaps(document))


def _gaps_csv(groups: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    columns = ["service_name", "emitter", "calls", "spend", "share_percent", "span_keys", "resource_keys"]
    writer.writerow([*columns, "suggested_rule"])
    for group in groups:
        writer.writerow(
            [
                *(" ".join(group[name]) if isinstance(group[name], list) else group[name] for name in columns),
                group["suggested_rule"],
            ]
        )
    return out.getvalue()


def _render_gaps(document: Mapping[str, Any]) -> str:
    since = f" since {document['since']}" if document["since"] else ""
    lines = [
        f"unattributed{since}: {document['unattributed_spend']} USD of {document['billable_spend']} USD billable "
        f"spend ({document['unattributed_share_percent']}%), {document['unattributed_calls']} of "
        f"{document['billable_calls']} calls",
    ]
    groups = document["groups"]
    if not groups:
        lines.append("Every billable call has a team.")
        return "\n".join(lines)
    lines.append("")
    rows = [
        [
            group["service_name"] or "(none)",
            group["emitter"] or "(unknown)",
            str(group["calls"]),
            group["spend"],
            f"{group['share_percent']}%",
            group["suggested_rule"],
        ]
        for group in groups
    ]
    header = ["service_name", "emitter", "calls", "spend", "share", "suggested rule"]
    lines += _table(header, rows, [False, False, True, True, True, False])
    more = document["groups_total"] - len(groups)
    if more > 0:
        lines.append(f"({more} more; raise --limit)")
    lines += ["", "keys on those calls (ownership-looking ones marked *):"]
    for group in groups:
        marked = set(group["ownership_keys"])
        lines.append(f"  {group['service_name'] or '(none)'} / {group['emitter'] or '(unknown)'}")
        for side in ("span", "resource"):
            keys = [f"*{key}" if f"{side}:{key}" in marked else key for key in group[f"{side}_keys"]]
            wrapped = _wrapped(", ".join(keys) or "(none)", " " * 14)
            lines += [f"    {side:<8}  {wrapped[0].lstrip()}", *wrapped[1:]]
    lines.append("")
    lines += _wrapped(
        "A span:KEY or resource:KEY source goes first in attribution.dimensions.team (configuring a dimension "
        "replaces its built-in keys: keep them listed); a preset:NAME goes in attribution.presets; a services: "
        "entry goes in the service catalog (attribution.service_catalog)."
    )
    return "\n".join(lines)
