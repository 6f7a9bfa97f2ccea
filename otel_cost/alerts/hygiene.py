"""Hygiene detectors: the gaps that make a ledger lie quietly.

- a model seen with no price (its calls are stored `priced = 0`: counted, never $0 in silence);
- the unattributed share of today's spend above a threshold;
- floating aliases (a request for `gpt-4o` or `*-latest` served by a dated snapshot);
- spend from an owner (team, feature, agent...) never seen before.

Each looks back `alerts.hygiene.lookback` from `now`, so a restart or a slow poll misses nothing that
recent; keys (model and month, day, alias and month, owner) make each fire once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from ..config import HygieneConfig, window_seconds
from ..enforcer.budgets import SCOPE_COLUMNS
from ..enforcer.periods import period_bounds
from ..formats import decimal_text, iso_utc, percent, plural
from ..model import UNATTRIBUTED
from ..store import Store
from ..store.sql import quote, seconds_literal
from .model import Finding

__all__ = ["FirstData", "detect_floating_aliases", "detect_new_owners", "detect_unattributed", "detect_unpriced"]

_SKEW = timedelta(minutes=5)
_SAMPLES = 5
_NOT_OWNERS = ("", UNATTRIBUTED, "other")


def _rows(store: Store, sql: str) -> list[dict[str, Any]]:
    return store.poll(sql, lane="alerts").dicts()


def _money(amount: Decimal) -> str:
    return decimal_text(amount.quantize(Decimal("0.000001"), ROUND_HALF_EVEN))


def _since(now: datetime, config: HygieneConfig) -> datetime:
    return (now - timedelta(seconds=window_seconds(config.lookback))).replace(second=0, microsecond=0)


def _raw_window(now: datetime, config: HygieneConfig) -> str:
    return f"timestamp >= {seconds_literal(_since(now, config))} AND timestamp < {seconds_literal(now + _SKEW)}"


def _minute_window(now: datetime, config: HygieneConfig) -> str:
    return f"minute >= {seconds_literal(_since(now, config))} AND minute < {seconds_literal(now + _SKEW)}"


def detect_unpriced(store: Store, config: HygieneConfig, now: datetime) -> list[Finding]:
    rows = _rows(
        store,
        "SELECT provider, model, sum(calls) AS call_count, sum(input_tokens) AS input, sum(output_tokens) AS output, "
        "groupUniqArray(5)(service_name) AS services FROM spend_minute "
        f"WHERE billable = 1 AND priced = 0 AND {_minute_window(now, config)} GROUP BY provider, model "
        "ORDER BY call_count DESC LIMIT 50",
    )
    month = now.strftime("%Y-%m")
    findings = []
    for row in rows:
        provider, model = row["provider"], row["model"]
        detail = _rows(
            store,
            "SELECT any(unpriced_reason) AS reason, groupArray(5)(span_id) AS spans FROM requests "
            f"WHERE billable = 1 AND priced = 0 AND provider = {quote(provider)} AND "
            f"if(response_model != '', response_model, request_model) = {quote(model)} AND {_raw_window(now, config)}",
        )
        reason = detail[0]["reason"] if detail else ""
        samples = list(detail[0]["spans"]) if detail else []
        findings.append(
            Finding(
                kind="unpriced_model",
                key=f"unpriced_model|{provider}|{model}|{month}",
                severity="warning",
                title=f"Unpriced model: {provider}/{model} ({plural(int(row['call_count']), 'call')} with no price)",
                message=(
                    f"{plural(int(row['call_count']), 'call')} to {model} (provider {provider or '-'}) "
                    f"in the last {config.lookback} "
                    f"have no price: {row['input']} input and {row['output']} output tokens are stored with "
                    f"priced = 0 ({reason or 'no price known'}), so budgets do not see them. Add a "
                    "`pricing.overrides` entry for it, then `otel-cost reprice --since <first day>`."
                ),
                subject={"provider": provider, "model": model},
                evidence={
                    "calls": row["call_count"],
                    "input_tokens": row["input"],
                    "output_tokens": row["output"],
                    "services": sorted(row["services"]),
                    "unpriced_reason": reason,
                    "sample_span_ids": samples,
                },
            )
        )
    return findings


def detect_unattributed(store: Store, config: HygieneConfig, now: datetime, timezone: str) -> list[Finding]:
    if config.unattributed_share is None:
        return []
    day_start, _ = period_bounds(now, "day", timezone)
    where = f"billable = 1 AND minute >= {seconds_literal(day_start)} AND minute < {seconds_literal(now + _SKEW)}"
    totals = _rows(
        store,
        f"SELECT toString(sum(cost)) AS total, toString(sumIf(cost, team = {quote(UNATTRIBUTED)})) AS unowned, "
        f"sumIf(calls, team = {quote(UNATTRIBUTED)}) AS unowned_calls, sum(calls) AS call_count FROM spend_minute "
        f"WHERE {where}",
    )
    if not totals:
        return []
    total, unowned = Decimal(totals[0]["total"] or "0"), Decimal(totals[0]["unowned"] or "0")
    if total <= 0 or total < config.unattributed_min_usd:
        return []
    share = unowned / total
    if share < config.unattributed_share:
        return []
    services = _rows(
        store,
        "SELECT service_name, sum(calls) AS call_count, toString(sum(cost)) AS cost_text FROM spend_minute "
        f"WHERE {where} AND team = {quote(UNATTRIBUTED)} GROUP BY service_name ORDER BY sum(cost) DESC LIMIT 5",
    )
    day = now.astimezone(ZoneInfo(timezone)).date().isoformat()
    top = ", ".join(f"{row['service_name'] or '(no service.name)'}" for row in services[:3])
    return [
        Finding(
            kind="unattributed_share",
            key=f"unattributed_share|{day}",
            severity="warning",
            title=f"Unattributed spend at {percent(share)} of today's {_money(total)} USD",
            message=(
                f"{_money(unowned)} USD of the {_money(total)} USD billable today ({day}, {timezone}) has no owner: "
                f"{percent(share)}, above the {percent(config.unattributed_share)} threshold. "
                + (f"Most of it comes from {top}. " if top else "")
                + "`otel-cost attribution gaps` shows which attributes those spans carry and a rule to try."
            ),
            subject={"team": UNATTRIBUTED, "day": day},
            evidence={
                "share": decimal_text(share.quantize(Decimal("0.0001"), ROUND_HALF_EVEN)),
                "unattributed_usd": _money(unowned),
                "total_usd": _money(total),
                "unattributed_calls": totals[0]["unowned_calls"],
                "calls": totals[0]["call_count"],
                "top_services": [
                    {
                        "service": row["service_name"],
                        "calls": row["call_count"],
                        "cost_usd": _money(Decimal(row["cost_text"])),
                    }
                    for row in services
                ],
            },
        )
    ]


def detect_floating_aliases(store: Store, config: HygieneConfig, now: datetime) -> list[Finding]:
    rows = _rows(
        store,
        "SELECT provider, request_model AS alias, groupUniqArray(5)(response_model) AS served, count() AS calls, "
        "toString(sum(cost)) AS cost_text, groupUniqArray(5)(service_name) AS services, "
        "groupArray(5)(span_id) AS spans FROM requests "
        f"WHERE billable = 1 AND has(flags, 'floating_alias') AND {_raw_window(now, config)} "
        "GROUP BY provider, alias ORDER BY calls DESC LIMIT 50",
    )
    month = now.strftime("%Y-%m")
    findings = []
    for row in rows:
        served = ", ".join(sorted(row["served"]))
        findings.append(
            Finding(
                kind="floating_alias",
                key=f"floating_alias|{row['provider']}|{row['alias']}|{month}",
                severity="info",
                title=f"Floating alias: {row['alias']} served by {served}",
                message=(
                    f"{plural(int(row['calls']), 'call')} in the last {config.lookback} asked for "
                    f"{row['alias']} (provider "
                    f"{row['provider'] or '-'}) and were served by {served}. A floating alias changes model, "
                    "behaviour and price without a deploy; pin the snapshot in "
                    + ", ".join(sorted(row["services"]))
                    + "."
                ),
                subject={"provider": row["provider"], "model": row["alias"]},
                evidence={
                    "calls": row["calls"],
                    "cost_usd": _money(Decimal(row["cost_text"])),
                    "served_by": sorted(row["served"]),
                    "services": sorted(row["services"]),
                    "sample_span_ids": list(row["spans"]),
                },
            )
        )
    return findings


class FirstData:
    """When the store's first spend arrived (the start of the new-owner warm-up), found once."""

    def __init__(self) -> None:
        self.at: datetime | None = None

    def get(self, store: Store) -> datetime | None:
        if self.at is None:
            rows = _rows(store, "SELECT toUnixTimestamp(min(hour)) AS first, count() AS rows FROM spend_hour")
            if rows and int(rows[0]["rows"]):
                self.at = datetime.fromtimestamp(int(rows[0]["first"]), UTC)
        return self.at


def detect_new_owners(store: Store, config: HygieneConfig, now: datetime, first_data: FirstData) -> list[Finding]:
    if not config.new_owners:
        return []
    first = first_data.get(store)
    if first is None:
        return []
    warmed = first + timedelta(seconds=window_seconds(config.new_owner_warmup))
    if now < warmed:
        return []  # everyone is new on a new store: learn the owners first
    since_hour = _since(now, config).replace(minute=0)
    findings = []
    excluded = ", ".join(quote(value) for value in _NOT_OWNERS)
    for dimension in config.new_owners:
        column = SCOPE_COLUMNS[dimension]
        rows = _rows(
            store,
            f"SELECT {column} AS value, toUnixTimestamp(min(hour)) AS first_hour FROM spend_hour "
            f"WHERE billable = 1 AND {column} NOT IN ({excluded}) AND {column} IN (SELECT DISTINCT {column} "
            f"FROM spend_minute WHERE billable = 1 AND {_minute_window(now, config)}) GROUP BY value "
            f"HAVING min(hour) >= {seconds_literal(max(since_hour, warmed.replace(minute=0, second=0)))}",
        )
        for row in rows:
            value = row["value"]
            detail = _rows(
                store,
                f"SELECT sum(calls) AS call_count, toString(sum(cost)) AS cost_text, "
                "groupUniqArray(5)(service_name) AS services, groupUniqArray(5)(model) AS models, "
                "groupUniqArray(5)(team) AS teams FROM spend_minute "
                f"WHERE billable = 1 AND {column} = {quote(value)} AND {_minute_window(now, config)}",
            )[0]
            first_seen = datetime.fromtimestamp(int(row["first_hour"]), now.tzinfo)
            cost = Decimal(detail["cost_text"] or "0")
            findings.append(
                Finding(
                    kind="new_owner",
                    key=f"new_owner|{dimension}|{value}",
                    severity="info",
                    title=f"New spender: {dimension} {value} ({_money(cost)} USD so far)",
                    message=(
                        f"{dimension} {value} is spending for the first time (first seen in the hour from "
                        f"{iso_utc(first_seen)}): {plural(int(detail['call_count']), 'call')}, "
                        f"{_money(cost)} USD in the last "
                        f"{config.lookback}, from {', '.join(sorted(detail['services'])) or '-'} on "
                        f"{', '.join(sorted(detail['models'])) or '-'}. Does it have a budget?"
                    ),
                    subject={dimension: value},
                    evidence={
                        "first_seen_hour": iso_utc(first_seen),
                        "calls": detail["call_count"],
                        "cost_usd": _money(cost),
                        "services": sorted(detail["services"]),
                        "models": sorted(detail["models"]),
                        "teams": sorted(detail["teams"]),
                    },
                )
            )
    return findings
