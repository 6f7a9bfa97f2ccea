"""Budget alerts through the real receiver, the real enforcer and real HTTP sinks on loopback.

Peers' alerts fire once, never, or at one threshold (LiteLLM #16185, #35800, #32597; Langfuse #714):
here every point fires once per budget and period, re-arms with the next period, and neither repeats
nor goes missing across a restart. The server's clock is set by the test; spans carry timestamps of
the same month, a future one, so the rollups' retention never touches them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from otel_cost.signing import sign

from ..helpers import FakeClock, HookServer, RunningServer, chat_attributes, export, make_request, make_span, wait_for

SECRET = "alert-secret-0123456789"
MARCH = datetime(2027, 3, 1, tzinfo=UTC)
APRIL = datetime(2027, 4, 1, tzinfo=UTC)
#: gpt-4o-mini at 0.15 USD per million input tokens: one call of 1,000,000 tokens costs 0.15.
CALL_TOKENS = 1_000_000


def calls(at: datetime, count: int, *, team: str = "payments", tokens: int = CALL_TOKENS, spacing_s: int = 1) -> Any:
    """`count` gpt-4o-mini calls ending at `at`, `at + spacing`, ... as one export."""
    spans = [
        make_span(
            chat_attributes(
                **{
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.response.model": "gpt-4o-mini",
                    "gen_ai.usage.input_tokens": tokens,
                    "gen_ai.usage.output_tokens": 0,
                }
            ),
            start_ns=int((at + timedelta(seconds=index * spacing_s)).timestamp() * 1e9) - 1_000_000_000,
        )
        for index in range(count)
    ]
    return make_request(spans, resource={"service.name": "checkout", "team": team})


def spent(server: RunningServer, budget: str) -> str:
    assert server.server.enforcer is not None
    return next(cap["spent"] for cap in server.server.enforcer.state.document()["caps"] if cap["budget"] == budget)


def settle(server: RunningServer, budget: str, amount: str) -> None:
    """Wait until the enforcer saw `amount` spent, then for a few more evaluations (time to repeat itself)."""
    wait_for(lambda: spent(server, budget) == amount, what=f"{budget} at {amount}")
    enforcer = server.server.enforcer
    assert enforcer is not None
    seen = enforcer.evaluations
    wait_for(lambda: enforcer.evaluations >= seen + 5, what="five more evaluations")


def verify(headers: dict[str, str], body: bytes) -> bool:
    """The README's verification, for the alert webhooks too."""
    timestamp = headers["X-Otel-Cost-Timestamp"]
    return headers["X-Otel-Cost-Signature"] == sign(SECRET, int(timestamp), body)


LADDER = {
    "name": "payments-monthly",
    "scope": {"team": "payments"},
    "period": "month",
    "limit": "1.00",
    "alert_at": [0.5, 0.8],
    "forecast_alert": False,
}


def overrides(hook: HookServer, slack: HookServer, budgets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "budgets": budgets,
        "enforcer": {"interval_seconds": 0.05},
        "alerts": {
            "interval_seconds": 0.2,
            "sinks": [
                {"kind": "webhook", "url": hook.url, "secret": SECRET},
                {"kind": "slack", "url": slack.url},
            ],
        },
    }


def test_each_point_fires_once_re_arms_next_period_and_survives_a_restart(
    make_server: Callable[..., RunningServer], hooks: Callable[..., HookServer]
) -> None:
    hook, slack = hooks(), hooks()
    clock = FakeClock(MARCH + timedelta(days=9, hours=12))
    config = overrides(hook, slack, [LADDER])
    server = make_server(config, clock=clock)

    export(server, calls(clock.now - timedelta(hours=1), 3))  # 0.45: under the first point
    settle(server, "payments-monthly", "0.45")
    assert hook.received == []

    export(server, calls(clock.now - timedelta(minutes=30), 1))  # 0.60: past 50%
    first = wait_for(hook.bodies, what="the 50% alert")
    settle(server, "payments-monthly", "0.6")
    export(server, calls(clock.now - timedelta(minutes=20), 1))  # 0.75: still between the points
    settle(server, "payments-monthly", "0.75")
    assert len(hook.received) == 1, "the 50% point fired again"
    (alert,) = first
    assert (alert["kind"], alert["severity"], alert["subject"]) == (
        "budget_threshold",
        "warning",
        {"budget": "payments-monthly", "team": "payments"},
    )
    assert alert["title"] == "payments-monthly: 60% of 1 USD spent (alert point 50%)"
    assert alert["evidence"]["point"] == "0.5" and alert["evidence"]["period_start"] == "2027-03-01T00:00:00Z"
    assert verify(hook.received[0].headers, hook.received[0].body)
    assert hook.received[0].headers["X-Otel-Cost-Alert-Id"] == alert["id"]

    export(server, calls(clock.now - timedelta(minutes=10), 1))  # 0.90: past 80%
    wait_for(lambda: len(hook.received) == 2, what="the 80% alert")
    settle(server, "payments-monthly", "0.9")
    assert [body["evidence"]["point"] for body in hook.bodies()] == ["0.5", "0.8"]
    wait_for(lambda: len(slack.received) == 2, what="both alerts in Slack")
    assert "80% of 1 USD" not in slack.bodies()[0]["text"] and "90% of 1 USD" in slack.bodies()[1]["text"]

    # A restart: the ledger remembers what fired and what each sink acknowledged.
    server.close()
    server = make_server(config, clock=clock)
    settle(server, "payments-monthly", "0.9")
    assert len(hook.received) == 2 and len(slack.received) == 2, "an alert was repeated after the restart"

    # The next period re-arms every point.
    clock.now = APRIL + timedelta(days=1, hours=12)
    settle(server, "payments-monthly", "0")
    export(server, calls(clock.now - timedelta(hours=2), 4))  # 0.60 of April
    wait_for(lambda: len(hook.received) == 3, what="April's 50% alert")
    settle(server, "payments-monthly", "0.6")
    april = hook.bodies()[2]
    assert (april["evidence"]["point"], april["evidence"]["period_start"]) == ("0.5", "2027-04-01T00:00:00Z")
    assert len({body["id"] for body in hook.bodies()}) == 3
    ledger = server.query(
        "SELECT key, count() FROM (SELECT alert_id, any(key) AS key FROM alerts GROUP BY alert_id) GROUP BY key"
    ).rows
    assert sorted(count for _, count in ledger) == [1, 1, 1]
    delivered = server.scalar("SELECT count() FROM (SELECT DISTINCT alert_id, sink FROM alert_deliveries)")
    assert delivered == 6  # three alerts, two sinks each


def test_an_alert_no_sink_acknowledged_is_sent_after_a_restart_and_not_fired_again(
    make_server: Callable[..., RunningServer], hooks: Callable[..., HookServer]
) -> None:
    down = hooks(status=503)  # a sink answering 503 until the restart
    clock = FakeClock(MARCH + timedelta(days=9, hours=12))
    config = {
        "budgets": [LADDER],
        "enforcer": {"interval_seconds": 0.05},
        "alerts": {"interval_seconds": 0.2, "sinks": [{"kind": "webhook", "url": down.url, "secret": SECRET}]},
    }
    server = make_server(config, clock=clock)
    export(server, calls(clock.now - timedelta(hours=1), 4))
    wait_for(lambda: down.received, what="a first delivery attempt")
    server.close()

    down.status = 200
    attempts = len(down.received)
    server = make_server(config, clock=clock)
    settle(server, "payments-monthly", "0.6")
    wait_for(lambda: len(down.received) > attempts, what="the re-sent alert")
    settle(server, "payments-monthly", "0.6")
    ids = {item.json()["id"] for item in down.received}
    assert len(ids) == 1, "the alert fired again instead of being re-sent"
    assert server.scalar("SELECT count() FROM (SELECT alert_id FROM alerts GROUP BY alert_id)") == 1
    wait_for(lambda: server.scalar("SELECT count() FROM alert_deliveries") == 1, what="the delivery recorded")


def test_the_forecast_alert_fires_on_day_3_of_a_month_spent_at_three_times_its_pace(
    make_server: Callable[..., RunningServer], hooks: Callable[..., HookServer]
) -> None:
    # 37.20 USD for March's 31 days is 1.20 USD a day. payments spends 3.60 a day: a call of 0.015 USD every
    # 6 minutes (at :03, :09, ...), from March 1st 00:03; search spends at half its own budget's pace.
    hook, slack = hooks(), hooks()
    now = MARCH + timedelta(days=2, hours=12)  # day 3, 12:00: 60 hours into the month
    clock = FakeClock(now)
    budgets = [
        {
            "name": "payments-monthly",
            "scope": {"team": "payments"},
            "period": "month",
            "limit": "37.2",
            "alert_at": [0.5],
        },
        {"name": "search-monthly", "scope": {"team": "search"}, "period": "month", "limit": "223.2", "alert_at": [0.5]},
    ]
    server = make_server(overrides(hook, slack, budgets), clock=clock)
    first = MARCH + timedelta(minutes=3)
    for team in ("payments", "search"):
        for batch in range(6):  # 600 calls, 100 per export
            export(server, calls(first + timedelta(hours=10 * batch), 100, team=team, tokens=100_000, spacing_s=360))
    wait_for(hook.bodies, what="the forecast alert")
    settle(server, "payments-monthly", "9")
    (alert,) = hook.bodies()
    assert (alert["kind"], alert["subject"]) == ("budget_forecast", {"budget": "payments-monthly", "team": "payments"})
    assert alert["title"] == "payments-monthly: on pace for 300% of 37.2 USD"
    evidence = alert["evidence"]
    assert (evidence["spent_usd"], evidence["forecast_usd"], evidence["over_by_usd"]) == ("9", "111.6", "74.4")
    assert (evidence["limit_day"], evidence["limit_day_of_period"]) == ("2027-03-11", 11)
    assert evidence["limit_at"] == "2027-03-11T08:00:00Z"  # (37.20 - 9.00) / 0.15 an hour = 188 hours from now
    assert "74.4 USD over its 37.2 USD monthly budget (300%)" in alert["message"]
    assert "the limit is reached on 2027-03-11 (day 11 of 31)" in alert["message"]
    assert spent(server, "search-monthly") == "9"  # 4% of its limit, on pace for 50%: no alert
    text = slack.bodies()[0]
    assert text["text"].startswith("[warning]") and "on pace for 300%" in text["text"]
