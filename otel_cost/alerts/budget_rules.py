"""Budget alerts from the enforcer's evaluations: each point of a budget's ladder, and the forecast.

Each point (every `alert_at`, the downgrade point, the hard point) fires once per budget, group and
calendar period, and re-arms with the next period: its key names the period's start. A rolling window
has no period, so a point re-arms one window length after it fired. The forecast alert fires once per
period when the recent pace would pass the limit by the period's end, saying by how much and on which
day the limit is reached; it waits until the recent pace was measured over a whole
`enforcer.recent_minutes` of the period, so the first call of a month is not a forecast.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from ..config import BudgetConfig, EnforcerConfig, window_seconds
from ..enforcer.budgets import BudgetState
from ..formats import decimal_text, iso_utc, percent
from .model import Finding

__all__ = ["budget_findings", "scope_text"]

_CENT = Decimal("0.01")


def scope_text(scope: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(scope.items())) or "all spend"


def _money(amount: Decimal) -> str:
    return decimal_text(amount.quantize(_CENT, ROUND_HALF_EVEN))


def _local(moment: datetime, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def _points(budget: BudgetConfig) -> list[tuple[Decimal, str]]:
    points = [(point, "alert") for point in budget.alert_at]
    if budget.downgrade_at is not None:
        points.append((budget.downgrade_at, "downgrade"))
    if budget.block_at is not None:
        points.append((budget.block_at, budget.hard_action))
    return points


def budget_findings(
    caps: list[BudgetState], budgets: Mapping[str, BudgetConfig], enforcer: EnforcerConfig, now: datetime
) -> list[Finding]:
    findings: list[Finding] = []
    for cap in caps:
        budget = budgets.get(cap.budget)
        if budget is None or cap.automatic:
            continue
        findings += _point_findings(cap, budget, enforcer, now)
        forecast = _forecast_finding(cap, budget, enforcer, now)
        if forecast is not None:
            findings.append(forecast)
    return findings


def _base(cap: BudgetState, budget: BudgetConfig) -> tuple[dict[str, str], dict[str, object], str, int | None]:
    subject = {"budget": cap.budget, **cap.scope}
    evidence: dict[str, object] = {
        "spent_usd": decimal_text(cap.spent),
        "limit_usd": decimal_text(cap.limit),
        "share": decimal_text((cap.spent / cap.limit).quantize(Decimal("0.0001"), ROUND_HALF_EVEN)),
        "forecast_usd": _money(cap.forecast),
        "period_start": iso_utc(cap.period_start),
        "period_end": iso_utc(cap.period_end),
        "limit_at": iso_utc(cap.limit_at) if cap.limit_at else None,
        "action": cap.action,
    }
    scope_key = json.dumps(sorted(cap.scope.items()), separators=(",", ":"))
    if budget.window is not None:
        return subject, evidence, f"{cap.budget}|{scope_key}", window_seconds(budget.window)
    return subject, evidence, f"{cap.budget}|{scope_key}|{iso_utc(cap.period_start)}", None


_PERIOD_WORDS = {"day": "daily", "week": "weekly", "month": "monthly", "quarter": "quarterly"}


def _what(budget: BudgetConfig) -> str:
    if budget.window is not None:
        return f"{budget.window} rolling-window budget"
    return f"{_PERIOD_WORDS[budget.period or 'month']} budget"


def _point_findings(cap: BudgetState, budget: BudgetConfig, enforcer: EnforcerConfig, now: datetime) -> list[Finding]:
    share = cap.spent / cap.limit
    subject, evidence, key, cooldown = _base(cap, budget)
    out = []
    for point, action in _points(budget):
        if share < point:
            continue
        if action == "alert":
            severity, consequence = "warning", ""
        elif action == "downgrade":
            severity = "critical"
            models = ", ".join(f"{old} -> {new}" for old, new in sorted(budget.downgrade.items()))
            consequence = f" Gateways now downgrade {models}."
        else:
            severity, consequence = "critical", " Gateways now block its calls."
        label = {"alert": "alert point", "downgrade": "downgrade point", "block": "hard point"}[action]
        title = f"{cap.budget}: {percent(share)} of {decimal_text(cap.limit)} USD spent ({label} {percent(point)})"
        message = (
            f"{scope_text(cap.scope)} has spent {_money(cap.spent)} USD of its {decimal_text(cap.limit)} USD "
            f"{_what(budget)} ({percent(share)}) as of {_local(now, enforcer.timezone)}; the {label} is "
            f"{percent(point)}.{consequence}"
        )
        if budget.window is None:
            message += f" Forecast for the period's end at the recent pace: {_money(cap.forecast)} USD."
        out.append(
            Finding(
                kind="budget_threshold",
                key=f"budget_threshold|{key}|{point}",
                severity=severity,
                title=title,
                message=message,
                subject=subject,
                evidence={**evidence, "point": decimal_text(point), "point_action": action},
                cooldown_seconds=cooldown,
            )
        )
    return out


def _forecast_finding(
    cap: BudgetState, budget: BudgetConfig, enforcer: EnforcerConfig, now: datetime
) -> Finding | None:
    if budget.window is not None or not budget.forecast_alert:
        return None
    if cap.forecast <= cap.limit or cap.spent >= cap.limit:
        return None  # within the limit, or over it already (the points speak then)
    if now - cap.period_start < timedelta(minutes=enforcer.recent_minutes):
        return None  # the pace is not measured over a whole recent window yet
    subject, evidence, key, _ = _base(cap, budget)
    forecast_share = cap.forecast / cap.limit
    over = cap.forecast - cap.limit
    zone = ZoneInfo(enforcer.timezone)
    when = ""
    if cap.limit_at is not None:
        day = (cap.limit_at.astimezone(zone).date() - cap.period_start.astimezone(zone).date()).days + 1
        days = (cap.period_end.astimezone(zone).date() - cap.period_start.astimezone(zone).date()).days
        evidence["limit_day"] = cap.limit_at.astimezone(zone).date().isoformat()
        evidence["limit_day_of_period"] = day
        when = (
            f" At this rate the limit is reached on {cap.limit_at.astimezone(zone).date().isoformat()} "
            f"(day {day} of {days})."
        )
    elapsed = Decimal(str(max((now - cap.period_start).total_seconds(), 1.0)))
    evidence["over_by_usd"] = _money(over)
    evidence["forecast_share"] = decimal_text(forecast_share.quantize(Decimal("0.0001"), ROUND_HALF_EVEN))
    evidence["average_usd_per_day"] = _money(cap.spent / elapsed * 86400)
    return Finding(
        kind="budget_forecast",
        key=f"budget_forecast|{key}",
        severity="warning",
        title=f"{cap.budget}: on pace for {percent(forecast_share)} of {decimal_text(cap.limit)} USD",
        message=(
            f"At the pace of the last {enforcer.recent_minutes} minutes, {scope_text(cap.scope)} will spend "
            f"{_money(cap.forecast)} USD by the end of the period ({_local(cap.period_end, enforcer.timezone)}): "
            f"{_money(over)} USD over its {decimal_text(cap.limit)} USD {_what(budget)} "
            f"({percent(forecast_share)}).{when} "
            f"Spent so far: {_money(cap.spent)} USD ({percent(cap.spent / cap.limit)})."
        ),
        subject=subject,
        evidence=evidence,
    )
