"""One budget's state from the rollups: spent, forecast, time to the limit, and the action it calls for.

Spend is read from the burn-rate rollups only (never the raw table): whole hours of a period from
`spend_hour`, the partial hours at its edges and every rolling window from `spend_minute`. Money stays
exact: sums come back as decimal text and are Decimals here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from ..config import BudgetConfig, EnforcerConfig, window_seconds
from ..formats import decimal_text, iso_utc, percent
from ..store import Store
from ..store.sql import quote, seconds_literal
from .periods import period_bounds, window_bounds

__all__ = ["ACTIONS", "SCOPE_COLUMNS", "BudgetState", "evaluate_budget", "scope_sql", "severity"]

#: Actions by severity: a gateway applies the most severe among the caps that match a request.
ACTIONS = ("allow", "alert", "downgrade", "block")
SCOPE_COLUMNS = {
    "cost_center": "cost_center",
    "team": "team",
    "feature": "feature",
    "agent": "agent",
    "service": "service_name",
    "environment": "environment",
    "provider": "provider",
    "model": "model",
}
_CENT = Decimal("0.01")


def severity(action: str) -> int:
    return ACTIONS.index(action)


@dataclass
class BudgetState:
    """One cap: a budget, or one group of a `per` budget."""

    budget: str
    scope: dict[str, str]
    action: str
    spent: Decimal
    limit: Decimal
    period_start: datetime
    period_end: datetime
    forecast: Decimal
    reason: str
    downgrade: dict[str, str] = field(default_factory=dict)
    limit_at: datetime | None = None  # when the recent pace reaches the limit (None: not on this pace)
    automatic: bool = False  # a runaway alert's temporary containment, not a configured budget
    alert_id: str = ""  # the alert that asked for it (automatic caps)

    def document(self) -> dict[str, object]:
        """The cap as the cap state document carries it (DESIGN "Cap state document")."""
        out: dict[str, object] = {
            "budget": self.budget,
            "scope": self.scope,
            "action": self.action,
            "spent": decimal_text(self.spent),
            "limit": decimal_text(self.limit),
            "currency": "USD",
            "share": decimal_text((self.spent / self.limit).quantize(Decimal("0.0001"), ROUND_HALF_EVEN)),
            "period_start": iso_utc(self.period_start),
            "period_end": iso_utc(self.period_end),
            "forecast": decimal_text(self.forecast.quantize(_CENT, ROUND_HALF_EVEN)),
            "limit_at": iso_utc(self.limit_at) if self.limit_at else None,
            "reason": self.reason,
        }
        if self.action == "downgrade":
            out["downgrade"] = self.downgrade
        if self.automatic:
            out["automatic"] = True
            out["alert_id"] = self.alert_id
            out["expires_at"] = iso_utc(self.period_end)
        return out


def scope_sql(scope: Mapping[str, str]) -> str:
    conditions = ["billable = 1"]
    for dimension, pattern in sorted(scope.items()):
        column = SCOPE_COLUMNS[dimension]
        if "*" in pattern:
            regex = "^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$"
            conditions.append(f"match({column}, {quote(regex)})")
        else:
            conditions.append(f"{column} = {quote(pattern)}")
    return " AND ".join(conditions)


def _spend_sql(budget: BudgetConfig, start: datetime, end: datetime, recent_start: datetime) -> str:
    """Per `per` group: spend in [start, end) and in [recent_start, end), from the rollups."""
    groups = [SCOPE_COLUMNS[dimension] for dimension in budget.per]
    where = scope_sql(budget.scope)
    select = ", ".join([*groups, "cost", "bucket"])
    first_hour = start.replace(minute=0, second=0, microsecond=0)
    if first_hour < start:
        first_hour += timedelta(hours=1)
    this_hour = end.replace(minute=0, second=0, microsecond=0)
    parts = []
    if budget.window is None and first_hour < this_hour:
        parts.append(
            f"SELECT {select} FROM (SELECT *, hour AS bucket FROM spend_hour) WHERE {where} "
            f"AND hour >= {seconds_literal(first_hour)} AND hour < {seconds_literal(this_hour)}"
        )
        minutes = (
            f"((minute >= {seconds_literal(start)} AND minute < {seconds_literal(first_hour)}) "
            f"OR (minute >= {seconds_literal(this_hour)} AND minute < {seconds_literal(end)}))"
        )
    else:
        minutes = f"minute >= {seconds_literal(start)} AND minute < {seconds_literal(end)}"
    parts.append(f"SELECT {select} FROM (SELECT *, minute AS bucket FROM spend_minute) WHERE {where} AND {minutes}")
    group_by = f" GROUP BY {', '.join(groups)}" if groups else ""
    keys = "".join(f"{column}, " for column in groups)
    return (
        f"SELECT {keys}toString(sum(cost)) AS spent, "
        f"toString(sumIf(cost, bucket >= {seconds_literal(recent_start)})) AS recent "
        f"FROM ({' UNION ALL '.join(parts)}){group_by}"
    )


def _action(budget: BudgetConfig, share: Decimal, forecast_share: Decimal | None) -> tuple[str, str]:
    """(action, why) for a share of the limit spent."""
    if budget.block_at is not None and share >= budget.block_at:
        return budget.hard_action, f"hard point {percent(budget.block_at)} reached"
    if budget.downgrade_at is not None and share >= budget.downgrade_at:
        return "downgrade", f"downgrade point {percent(budget.downgrade_at)} reached"
    passed = [point for point in budget.alert_at if share >= point]
    if passed:
        return "alert", f"alert point {percent(passed[-1])} reached"
    if forecast_share is not None and budget.forecast_alert and forecast_share > 1:
        return "alert", f"on pace for {percent(forecast_share)} of the limit by the period end"
    return "allow", ""


def evaluate_budget(store: Store, budget: BudgetConfig, enforcer: EnforcerConfig, now: datetime) -> list[BudgetState]:
    """Every cap of one budget at `now`: one, or one per group of a `per` budget that has spend."""
    if budget.window is not None:
        seconds = window_seconds(budget.window)
        start, end = window_bounds(now, seconds)
        # Minute buckets: the window's first bucket is the minute it starts in.
        start = start.replace(second=0, microsecond=0)
        period_end = end
    else:
        assert budget.period is not None
        start, period_end = period_bounds(now, budget.period, enforcer.timezone)
        end = now
    recent_start = max(start, now - timedelta(minutes=enforcer.recent_minutes))
    sql_end = end.replace(second=0, microsecond=0) + timedelta(minutes=1)  # the current minute, in full
    result = store.poll(_spend_sql(budget, start, sql_end, recent_start.replace(second=0, microsecond=0)))
    rows = result.dicts()
    if not budget.per and not rows:
        rows = [{"spent": "0", "recent": "0"}]
    states = []
    for row in rows:
        spent = Decimal(row["spent"] or "0")
        recent = Decimal(row["recent"] or "0")
        elapsed = max((now - recent_start).total_seconds(), 60.0)
        rate = recent / Decimal(str(elapsed))  # USD per second at the recent pace
        if budget.window is not None:
            forecast = spent  # a rolling window has no period end: what it holds now is its pace
            forecast_share = None
        else:
            remaining = Decimal(str(max((period_end - now).total_seconds(), 0.0)))
            forecast = spent + rate * remaining
            forecast_share = forecast / budget.limit
        share = spent / budget.limit
        action, why = _action(budget, share, forecast_share)
        limit_at = None
        if rate > 0 and spent < budget.limit:
            seconds_left = (budget.limit - spent) / rate
            if seconds_left < Decimal(10**9):
                limit_at = now + timedelta(seconds=float(seconds_left))
        scope: dict[str, str] = {str(key): value for key, value in budget.scope.items()}
        for dimension in budget.per:
            scope[dimension] = str(row[SCOPE_COLUMNS[dimension]])
        reason = (
            f"{percent(share)} of {budget.limit} USD spent"
            + (f" ({why})" if why else "")
            + (f"; forecast {percent(forecast_share)}" if forecast_share is not None else "")
        )
        states.append(
            BudgetState(
                budget=budget.name,
                scope=scope,
                action=action,
                spent=spent,
                limit=budget.limit,
                period_start=start,
                period_end=period_end,
                forecast=forecast,
                reason=reason,
                downgrade=dict(budget.downgrade) if action == "downgrade" else {},
                limit_at=limit_at,
            )
        )
    return states
