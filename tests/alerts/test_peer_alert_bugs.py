"""Peers' alerts fire once, never, or only at one threshold (../shared/reference/peers.md, complaint 9:
LiteLLM #16185, #35800, #32597; Langfuse #714). Each shape of that bug as a test on the real engine:
budgets evaluated from real rollups at chosen instants, alerts through the engine and its ledger."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from otel_cost.alerts.engine import Alerter
from otel_cost.config import Config, load_config
from otel_cost.enforcer import Enforcer
from otel_cost.store import Store

from ..test_enforcer import next_monday, spend


def configure(**budget: Any) -> Config:
    ladder = {
        "name": "payments-weekly",
        "scope": {"team": "payments"},
        "period": "week",
        "limit": "10",
        "alert_at": ["0.5", "0.75"],
        "downgrade_at": "0.9",
        "downgrade": {"claude-opus-4-1": "claude-haiku-4-5"},
        "block_at": "1",
        "forecast_alert": False,
        **budget,
    }
    return load_config(overrides={"budgets": [ladder]}, environ={})


@pytest.fixture
def alerter(store: Store) -> Iterator[Any]:
    made: list[Alerter] = []

    def make(config: Config) -> tuple[Alerter, Enforcer]:
        engine = Alerter(store, config)
        engine.load()
        made.append(engine)
        return engine, Enforcer(store, config)

    yield make
    for engine in made:
        engine.stop(1)


def fire(engine: Alerter, enforcer: Enforcer, now: datetime) -> list[tuple[str, str]]:
    return [
        (alert.subject.get("team", ""), alert.evidence["point"])
        for alert in engine.process_caps(enforcer.evaluate(now), now)
    ]


def test_every_point_crossed_at_once_fires_not_only_the_highest(store: Store, alerter: Any) -> None:
    engine, enforcer = alerter(configure())
    monday = next_monday()
    spend(store, monday + timedelta(hours=1), "9.50")  # past 50%, 75% and the 90% downgrade point in one step
    assert fire(engine, enforcer, monday + timedelta(hours=2)) == [
        ("payments", "0.5"),
        ("payments", "0.75"),
        ("payments", "0.9"),
    ]
    spend(store, monday + timedelta(hours=3), "1")  # the hard point
    assert fire(engine, enforcer, monday + timedelta(hours=4)) == [("payments", "1")]


def test_a_hundred_evaluations_above_a_point_fire_it_once(store: Store, alerter: Any) -> None:
    engine, enforcer = alerter(configure())
    monday = next_monday()
    spend(store, monday + timedelta(hours=1), "6")
    fired = [fire(engine, enforcer, monday + timedelta(hours=2, seconds=second)) for second in range(100)]
    assert fired[0] == [("payments", "0.5")] and not any(fired[1:])
    # a new engine on the same store (a restart) does not fire it again either
    restarted, enforcer = alerter(configure())
    assert fire(restarted, enforcer, monday + timedelta(hours=3)) == []


def test_each_group_of_a_per_budget_has_its_own_points(store: Store, alerter: Any) -> None:
    engine, enforcer = alerter(configure(scope={}, per=["team"], limit="10"))
    monday = next_monday()
    spend(store, monday + timedelta(hours=1), "6", team="payments")
    spend(store, monday + timedelta(hours=1), "8", team="search")
    assert sorted(fire(engine, enforcer, monday + timedelta(hours=2))) == [
        ("payments", "0.5"),
        ("search", "0.5"),
        ("search", "0.75"),
    ]


def test_points_re_arm_every_period_without_a_restart_or_a_manual_reset(store: Store, alerter: Any) -> None:
    engine, enforcer = alerter(configure())
    monday = next_monday()
    for week in range(3):
        start = monday + timedelta(weeks=week)
        spend(store, start + timedelta(hours=1), "5")
        assert fire(engine, enforcer, start + timedelta(hours=2)) == [("payments", "0.5")], f"week {week}"
        assert fire(engine, enforcer, start + timedelta(days=6)) == []
