"""The weekly review as one document: every section is a `clickhouse/queries/*.sql` file's rows, exact.

Money stays the decimal text ClickHouse returned (USD, up to 24 places); the renderers round only
what they display. The headline totals are sums of the daily spend query's rows, so every figure
reconciles with `sum(cost)` over the week's billable rows in `requests`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..formats import decimal_text, iso_utc
from ..store import QueryResult
from ..store.sql import seconds_literal
from .queries import QUERIES, Week, run_review_query

__all__ = ["SECTIONS", "Column", "Review", "Section", "build_review"]


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    kind: str = "text"  # text | money | count | percent | time | list


@dataclass(frozen=True)
class Section:
    name: str  # the query file's name
    title: str
    explains: str
    columns: tuple[Column, ...]
    empty: str  # what an empty section means


_OWNER = Column("dimension", "by")
SECTIONS: tuple[Section, ...] = (
    Section(
        "top_movers",
        "Top movers",
        "Billable spend against the week before, largest changes first, per team, feature, agent and model.",
        (
            _OWNER,
            Column("value", "who"),
            Column("this_week_usd", "this week", "money"),
            Column("last_week_usd", "last week", "money"),
            Column("change_usd", "change", "money"),
            Column("change_percent", "change %", "percent"),
        ),
        "No spend changed against the week before.",
    ),
    Section(
        "new_spenders",
        "New spenders",
        "Teams, features, agents and models whose first billable call is in this week.",
        (
            _OWNER,
            Column("value", "who"),
            Column("first_seen", "first seen", "time"),
            Column("this_week_usd", "this week", "money"),
            Column("this_week_calls", "calls", "count"),
        ),
        "Nobody new spent this week.",
    ),
    Section(
        "trending_toward_cap",
        "Trending toward cap",
        "Each cap's last state in the week as the enforcer computed it; forecast is for the period end.",
        (
            Column("budget", "budget"),
            Column("scope", "scope"),
            Column("action", "action"),
            Column("spent_usd", "spent", "money"),
            Column("limit_usd", "limit", "money"),
            Column("spent_percent", "spent %", "percent"),
            Column("forecast_usd", "forecast", "money"),
            Column("forecast_percent", "forecast %", "percent"),
            Column("limit_at", "limit reached", "time"),
        ),
        "No budget was evaluated this week (configure `budgets:`).",
    ),
    Section(
        "cost_per_result",
        "Cost per accepted result",
        "A feature's billable spend divided by its traces whose result was accepted; highest first.",
        (
            Column("feature", "feature"),
            Column("spend_usd", "spend", "money"),
            Column("calls", "calls", "count"),
            Column("accepted", "accepted", "count"),
            Column("rejected", "rejected", "count"),
            Column("accepted_percent", "accepted %", "percent"),
            Column("cost_per_accepted_usd", "per accepted", "money"),
        ),
        "No spend and no outcomes this week.",
    ),
    Section(
        "unattributed_unpriced",
        "Unattributed and unpriced",
        "Spend with no owner, and billable calls no price covers (their cost is unknown, not zero).",
        (
            Column("spend_usd", "spend", "money"),
            Column("call_count", "calls", "count"),
            Column("unattributed_usd", "unattributed", "money"),
            Column("unattributed_percent", "unattributed %", "percent"),
            Column("unpriced_calls", "unpriced calls", "count"),
            Column("unpriced_percent", "unpriced %", "percent"),
            Column("unpriced_tokens", "unpriced tokens", "count"),
        ),
        "",
    ),
    Section(
        "unpriced_models",
        "Unpriced models",
        "Add a price (pricing.overrides) and re-price with `otel-cost reprice`.",
        (
            Column("provider", "provider"),
            Column("model", "model"),
            Column("call_count", "calls", "count"),
            Column("input_tokens_total", "input tokens", "count"),
            Column("output_tokens_total", "output tokens", "count"),
            Column("teams", "teams", "list"),
        ),
        "Every billable call this week was priced.",
    ),
    Section(
        "floating_aliases",
        "Floating aliases",
        "Calls that asked for a moving name and were served a dated snapshot: pin the snapshot.",
        (
            Column("provider", "provider"),
            Column("requested", "requested"),
            Column("served", "served", "list"),
            Column("call_count", "calls", "count"),
            Column("spend_usd", "spend", "money"),
            Column("teams", "teams", "list"),
        ),
        "No floating aliases this week.",
    ),
    Section(
        "cache_savings",
        "Prompt caching",
        "Share of input read from the cache, and what it saved at list prices net of cache-write premiums.",
        (
            Column("provider", "provider"),
            Column("model", "model"),
            Column("cache_read_percent", "cached %", "percent"),
            Column("cached_input", "cached tokens", "count"),
            Column("spend_usd", "spend", "money"),
            Column("read_savings_usd", "read savings", "money"),
            Column("write_premium_usd", "write premium", "money"),
            Column("saved_usd", "saved", "money"),
        ),
        "No cache reads or writes this week.",
    ),
    Section(
        "model_mix",
        "Model mix",
        "Expensive models doing light work (embeddings, short outputs), and the same tokens on the named "
        "cheaper model.",
        (
            Column("feature", "feature"),
            Column("operation", "operation"),
            Column("model", "model"),
            Column("alternative", "instead"),
            Column("calls", "calls", "count"),
            Column("avg_output_tokens", "avg output", "count"),
            Column("spend_usd", "spend", "money"),
            Column("what_if_usd", "what if", "money"),
            Column("saving_usd", "saving", "money"),
        ),
        "No light work on expensive models this week.",
    ),
)
assert tuple(section.name for section in SECTIONS) == QUERIES

_DAILY_SQL = """
SELECT toDate(hour) AS day, team, toString(sum(cost)) AS spend_usd, sum(calls) AS call_count
FROM spend_hour
WHERE billable = 1 AND hour >= {start} AND hour < {end}
GROUP BY day, team
ORDER BY day, team
"""


@dataclass
class Review:
    week: Week
    generated_at: datetime
    source: str
    sections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    daily: list[dict[str, Any]] = field(default_factory=list)  # per day of this week and the week before
    summary: dict[str, Any] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        """The JSON document (`--format json`): money as exact decimal strings."""
        return {
            "week": self.week.label,
            "start": iso_utc(self.week.start),
            "end": iso_utc(self.week.end),
            "generated_at": iso_utc(self.generated_at),
            "source": self.source,
            "currency": "USD",
            "summary": self.summary,
            "daily": self.daily,
            "sections": dict(self.sections),
        }


def _rows(result: QueryResult) -> list[dict[str, Any]]:
    """Rows as plain values: money is already decimal text (the queries say toString); shares and
    averages (Float64) as numbers."""
    floats = {name for name, kind in result.columns if "Float" in kind}
    return [
        {key: float(value) if key in floats and value is not None else value for key, value in row.items()}
        for row in result.dicts()
    ]


def _money(text: Any) -> Decimal:
    return Decimal(str(text)) if text not in (None, "") else Decimal(0)


def build_review(
    run: Callable[[str], QueryResult], week: Week, *, source: str = "", now: datetime | None = None, top: int = 10
) -> Review:
    """Run every review query for `week` through `run` (a read-only query function)."""
    review = Review(week=week, generated_at=now or datetime.now(UTC), source=source)
    full = {section.name: _rows(run_review_query(run, section.name, week)) for section in SECTIONS}
    for name, rows in full.items():
        # top_movers is already `top` per dimension; new spenders have four dimensions too.
        keep = (
            len(rows) if name in ("top_movers", "unattributed_unpriced") else top * 4 if name == "new_spenders" else top
        )
        review.sections[name] = rows[:keep]
        if len(rows) > keep:
            review.summary.setdefault("truncated", {})[name] = len(rows)
    previous = week.previous
    daily = run(_DAILY_SQL.format(start=seconds_literal(previous.start), end=seconds_literal(week.end))).dicts()
    days: dict[str, dict[str, Any]] = {}
    for row in daily:
        day = str(row["day"])
        entry = days.setdefault(day, {"day": day, "spend_usd": Decimal(0), "calls": 0, "teams": {}})
        amount = _money(row["spend_usd"])
        entry["spend_usd"] += amount
        entry["calls"] += int(row["call_count"])
        entry["teams"][row["team"]] = decimal_text(amount)
    this_start = week.start.date().isoformat()
    spend = sum((entry["spend_usd"] for day, entry in days.items() if day >= this_start), Decimal(0))
    before = sum((entry["spend_usd"] for day, entry in days.items() if day < this_start), Decimal(0))
    calls = sum(entry["calls"] for day, entry in days.items() if day >= this_start)
    review.daily = [
        {**entry, "spend_usd": decimal_text(entry["spend_usd"]), "week": "this" if day >= this_start else "previous"}
        for day, entry in sorted(days.items())
    ]
    results, savings, mix = full["cost_per_result"], full["cache_savings"], full["model_mix"]
    hygiene = (full["unattributed_unpriced"] or [{}])[0]
    review.summary |= {
        "spend_usd": decimal_text(spend),
        "previous_spend_usd": decimal_text(before),
        "change_usd": decimal_text(spend - before),
        "change_percent": None if not before else decimal_text(round((spend - before) / before * 100, 1)),
        "calls": calls,
        "accepted_results": sum(int(row["accepted"]) for row in results),
        "unattributed_usd": decimal_text(_money(hygiene.get("unattributed_usd"))),
        "unpriced_calls": int(hygiene.get("unpriced_calls") or 0),
        "cache_saved_usd": decimal_text(sum((_money(row["saved_usd"]) for row in savings), Decimal(0))),
        "model_mix_saving_usd": decimal_text(sum((_money(row["saving_usd"]) for row in mix), Decimal(0))),
        "caps_over_forecast": sum(
            1 for row in full["trending_toward_cap"] if _money(row["forecast_usd"]) > _money(row["limit_usd"])
        ),
    }
    return review
