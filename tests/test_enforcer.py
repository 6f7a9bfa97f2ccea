"""The enforcer on the real engine: spend lands in the rollups through the real ingest path (wire lines,
views), budgets are evaluated from the rollups at chosen instants, the cap state document follows."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from otel_cost.config import BudgetConfig, Config, EnforcerConfig
from otel_cost.enforcer import CapState, Enforcer, evaluate_budget, period_bounds
from otel_cost.store import Store

from .store.test_store import batch, line

UNITS = 10**24  # cost_units per USD


def next_monday() -> datetime:
    """A Monday 00:00 UTC after now: a week whose rows the 14-day minute rollup keeps during the test."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=7 - today.weekday())


def spend(store: Store, at: datetime, usd: str, **values: Any) -> None:
    """One billable call costing `usd`, ending at `at`, through the real ingest view and rollups."""
    ns = int(at.timestamp() * 1_000_000_000)
    units = int(Decimal(usd) * UNITS)
    values = {"team": "payments", "service_name": "checkout", "environment": "prod", **values}
    store.insert_batch(batch([line(os.urandom(8).hex(), units, timestamp_ns=ns, **values)]), os.urandom(8).hex())


def budget(**values: Any) -> BudgetConfig:
    return BudgetConfig.model_validate({"name": "payments", "scope": {"team": "payments"}, "limit": "10", **values})


def evaluate(store: Store, config: BudgetConfig, now: datetime, zone: str = "UTC") -> list[Any]:
    return evaluate_budget(store, config, EnforcerConfig(timezone=zone), now)


LADDER = {
    "period": "week",
    "alert_at": ["0.5", "0.8"],
    "downgrade_at": "0.9",
    "downgrade": {"claude-opus-4-1": "claude-haiku-4-5"},
    "block_at": "1.0",
    "forecast_alert": False,
}


@pytest.mark.parametrize(
    ("spent", "action"),
    [("4.99", "allow"), ("5", "alert"), ("8.5", "alert"), ("9", "downgrade"), ("9.99", "downgrade"), ("10", "block")],
)
def test_the_ladder_soft_downgrade_hard(store: Store, spent: str, action: str) -> None:
    monday = next_monday()
    spend(store, monday + timedelta(hours=1), spent)
    spend(store, monday + timedelta(hours=1), "1", team="search")  # out of scope
    (cap,) = evaluate(store, budget(**LADDER), monday + timedelta(hours=2))
    assert (cap.spent, cap.action) == (Decimal(spent), action)
    assert cap.downgrade == ({"claude-opus-4-1": "claude-haiku-4-5"} if action == "downgrade" else {})
    document = cap.document()
    assert document["spent"] == spent and document["limit"] == "10" and document["currency"] == "USD"


def test_a_hard_point_may_downgrade_instead_of_block(store: Store) -> None:
    monday = next_monday()
    spend(store, monday + timedelta(hours=1), "12")
    (cap,) = evaluate(store, budget(**{**LADDER, "hard_action": "downgrade"}), monday + timedelta(hours=2))
    assert (cap.action, cap.downgrade) == ("downgrade", {"claude-opus-4-1": "claude-haiku-4-5"})


def test_a_day_budget_resets_exactly_at_local_midnight(store: Store) -> None:
    zone = "Asia/Kolkata"  # UTC+05:30: local midnight is not on an hour boundary in UTC
    midnight, _ = period_bounds(next_monday() + timedelta(days=1, hours=12), "day", zone)
    assert (midnight.hour, midnight.minute) == (18, 30)
    spend(store, midnight - timedelta(seconds=1), "7")  # 23:59:59 local, the day before
    spend(store, midnight - timedelta(hours=3), "2")
    day = budget(period="day", alert_at=["0.5"], forecast_alert=False)
    (before,) = evaluate(store, day, midnight - timedelta(milliseconds=1), zone)
    (after,) = evaluate(store, day, midnight, zone)
    assert (before.spent, before.action) == (Decimal(9), "alert")
    assert (after.spent, after.action, after.period_start) == (Decimal(0), "allow", midnight)
    spend(store, midnight + timedelta(seconds=1), "1")
    (next_day,) = evaluate(store, day, midnight + timedelta(minutes=5), zone)
    assert next_day.spent == Decimal(1)


def test_a_rolling_60_minute_window(store: Store) -> None:
    now = next_monday() + timedelta(days=2, hours=10)
    spend(store, now - timedelta(minutes=61), "6")
    spend(store, now - timedelta(minutes=59), "3")
    spend(store, now - timedelta(seconds=10), "2")
    window = budget(window="60m", block_at="1.0")
    (cap,) = evaluate(store, window, now)
    assert (cap.spent, cap.action) == (Decimal(5), "allow")
    (later,) = evaluate(store, window, now + timedelta(minutes=2))  # the 59-minute-old call has left too
    assert later.spent == Decimal(2)
    spend(store, now, "8")
    (blocked,) = evaluate(store, window, now + timedelta(seconds=30))
    assert (blocked.spent, blocked.action) == (Decimal(13), "block")


def test_the_forecast_flags_three_times_the_pace_early_in_the_period(store: Store) -> None:
    monday = next_monday()
    weekly = budget(period="week", limit="700", alert_at=["0.8"])  # 100 a day is on pace
    for hour in range(24):  # day one at 300 a day: 12.5 an hour
        spend(store, monday + timedelta(hours=hour, minutes=30), "12.5")
    (cap,) = evaluate(store, weekly, monday + timedelta(days=1))
    assert cap.spent == Decimal(300)
    assert cap.action == "alert"  # 43% spent, below every alert point: the forecast says so
    assert cap.forecast == Decimal(300) + Decimal("12.5") * 24 * 6  # the recent hour's pace to the week's end
    assert "on pace for 300%" in cap.reason
    assert cap.limit_at is not None and cap.limit_at < monday + timedelta(days=3)
    steady = budget(name="steady", period="week", limit="2100", alert_at=["0.8"])
    (calm,) = evaluate(store, steady, monday + timedelta(days=1))
    assert calm.action == "allow"


def test_per_budgets_give_each_value_its_own_cap(store: Store) -> None:
    now = next_monday() + timedelta(days=3)
    spend(store, now - timedelta(minutes=5), "40", agent="doc-triage")
    spend(store, now - timedelta(minutes=5), "60", agent="refund-agent")
    guard = BudgetConfig.model_validate(
        {
            "name": "agents",
            "scope": {"environment": "prod"},
            "per": ["agent"],
            "window": "60m",
            "limit": "50",
            "block_at": 1,
        }
    )
    caps = {cap.scope["agent"]: cap for cap in evaluate(store, guard, now)}
    assert caps["doc-triage"].action == "allow"
    assert caps["refund-agent"].action == "block"
    assert caps["refund-agent"].scope == {"environment": "prod", "agent": "refund-agent"}


def test_wildcard_scopes(store: Store) -> None:
    now = next_monday() + timedelta(days=4)
    spend(store, now - timedelta(minutes=5), "3", service_name="search-api")
    spend(store, now - timedelta(minutes=5), "4", service_name="search-ranker")
    spend(store, now - timedelta(minutes=5), "5", service_name="checkout")
    wild = BudgetConfig.model_validate(
        {"name": "search", "scope": {"service": "search-*"}, "window": "60m", "limit": "100"}
    )
    (cap,) = evaluate(store, wild, now)
    assert cap.spent == Decimal(7)


def test_the_version_moves_only_when_a_decision_does(store: Store) -> None:
    now = next_monday() + timedelta(days=5)
    config = Config.model_validate({"budgets": [budget(window="60m", alert_at=["0.5"]).model_dump()]})
    enforcer = Enforcer(store, config, CapState(30))
    assert enforcer.poll_once(now) is True  # the first state
    version = enforcer.state.version
    spend(store, now, "1")
    assert enforcer.poll_once(now + timedelta(seconds=1)) is False  # more spend, same action
    assert enforcer.state.version == version
    assert enforcer.state.document()["caps"][0]["spent"] == "1"  # the figures still refresh
    spend(store, now, "5")
    assert enforcer.poll_once(now + timedelta(seconds=2)) is True
    document = enforcer.state.document()
    assert document["version"] not in (0, version)
    replica = Enforcer(store, config, CapState(30))  # another enforcer on the same data: the same version
    replica.poll_once(now + timedelta(seconds=3))
    assert replica.state.version == document["version"]
    assert [cap["action"] for cap in document["caps"]] == ["alert"]
    assert set(document) == {"version", "generated_at", "stale_after_seconds", "default_action", "caps"}


def test_several_budgets_most_severe_first(store: Store) -> None:
    now = next_monday() + timedelta(days=6)
    spend(store, now - timedelta(minutes=1), "6")
    config = Config.model_validate(
        {
            "budgets": [
                {"name": "soft", "scope": {"team": "payments"}, "window": "60m", "limit": "10", "alert_at": [0.5]},
                {"name": "hard", "scope": {"team": "pay*"}, "window": "60m", "limit": "5", "block_at": 1},
                {"name": "other", "scope": {"team": "search"}, "window": "60m", "limit": "5", "block_at": 1},
            ]
        }
    )
    enforcer = Enforcer(store, config)
    enforcer.poll_once(now)
    caps = enforcer.state.document()["caps"]
    assert [(cap["budget"], cap["action"]) for cap in caps] == [
        ("hard", "block"),
        ("soft", "alert"),
        ("other", "allow"),
    ]


def test_a_stale_evaluation_never_lands_after_a_newer_one(store: Store) -> None:
    """The loop's thread and a nudge or API call may poll at once. Without serialising, an evaluation
    read before new spend landed was applied after one read since: block flipped back to allow."""
    now = next_monday() + timedelta(days=5)
    config = Config.model_validate({"budgets": [budget(window="60m", limit="1", block_at=1).model_dump()]})
    enforcer = Enforcer(store, config, CapState(30))
    evaluated, release = threading.Event(), threading.Event()

    def hold_the_first(caps: list[Any], moment: datetime) -> None:
        if not evaluated.is_set():
            evaluated.set()
            release.wait(10)

    enforcer.on_evaluated = hold_the_first
    stale = threading.Thread(target=enforcer.poll_once, args=(now,))
    stale.start()
    assert evaluated.wait(10)  # the first poll has read "allow" and is about to apply it
    spend(store, now, "2")
    fresh = threading.Thread(target=enforcer.poll_once, args=(now + timedelta(seconds=1),))
    fresh.start()
    fresh.join(0.5)
    release.set()
    stale.join(10)
    fresh.join(10)
    assert [cap["action"] for cap in enforcer.state.document()["caps"]] == ["block"]
