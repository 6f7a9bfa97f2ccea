"""Outcomes from telemetry, budget snapshots and model rates: the review's inputs, through the real
receiver and a real store."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from otel_cost.config import Config, load_config
from otel_cost.pricing import PriceBook, probe_call
from otel_cost.review import publish_rates
from otel_cost.store import Store

from ..helpers import FakeClock, RunningServer, chat_attributes, export, key_values, make_request, make_span
from ..store.test_store import batch, line


def _judged(label: str | None = None, score: float | None = None, name: str = "helpfulness", **span: Any) -> Any:
    judged = make_span({}, name="judge", **span)
    event = judged.events.add()
    event.name = "gen_ai.evaluation.result"
    event.time_unix_nano = judged.end_time_unix_nano
    attributes: dict[str, Any] = {"gen_ai.evaluation.name": name, "gen_ai.response.id": "resp-1"}
    if label is not None:
        attributes["gen_ai.evaluation.score.label"] = label
    if score is not None:
        attributes["gen_ai.evaluation.score.value"] = score
    event.attributes.extend(key_values(attributes))
    return judged


def _outcomes(server: RunningServer) -> list[dict[str, Any]]:
    return server.query(
        "SELECT outcome, source, name, label, score, response_id, trace_id, team FROM outcomes ORDER BY name, label"
    ).dicts()


def _metric(server: RunningServer, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"{server.api_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_an_export_of_outcomes_alone_is_stored_and_counted(server: RunningServer) -> None:
    trace = os.urandom(16)
    traceless = make_span({"otel_cost.outcome": "accepted"}, name="no-trace")
    traceless.trace_id = b""  # nothing to join an outcome to
    spans = [
        make_span({"otel_cost.outcome": "REJECTED", "app.team": "search"}, trace_id=trace, name="feedback"),
        _judged("Relevant", trace_id=trace),
        _judged(None, 0.2, trace_id=trace),  # a score, no label, no threshold configured: not guessed
        make_span({"otel_cost.outcome": "maybe"}, trace_id=trace, name="x"),
        traceless,
    ]
    response = export(server, make_request(spans))
    assert not response.partial_success.rejected_spans, response.partial_success.error_message
    rows = _outcomes(server)
    assert [(row["outcome"], row["source"], row["name"], row["label"]) for row in rows] == [
        ("accepted", "event", "helpfulness", "Relevant"),
        ("rejected", "attribute", "otel_cost.outcome", "REJECTED"),
    ]
    assert rows[0]["response_id"] == "resp-1" and rows[0]["trace_id"] == trace.hex()
    assert rows[1]["team"] == "search"
    assert server.scalar("SELECT count() FROM requests") == 0  # no model call in this export
    assert _metric(server, "otel_cost_outcomes_total", outcome="accepted") == 1
    assert _metric(server, "otel_cost_outcomes_total", outcome="rejected") == 1
    assert _metric(server, "otel_cost_outcomes_total", outcome="unrecognized") == 3


def test_configured_names_labels_and_score_threshold(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(
        {
            "outcomes": {
                "attribute": "app.result",
                "evaluation_names": ["task_success"],
                "accepted": ["ship-it"],
                "rejected": ["Nope"],
                "accept_score_at": "0.7",
            }
        }
    )
    trace = os.urandom(16)
    spans = [
        make_span({"app.result": "ship-it", "otel_cost.outcome": "accepted"}, trace_id=trace),
        _judged("Nope", name="task_success", trace_id=trace),
        _judged(None, 0.7, name="task_success", trace_id=trace),
        _judged(None, 0.69, name="task_success", trace_id=trace),
        _judged("ship-it", name="toxicity", trace_id=trace),  # not an evaluation that counts
    ]
    export(server, make_request(spans))
    rows = _outcomes(server)
    assert sorted((row["outcome"], row["name"], row["label"], row["score"]) for row in rows) == [
        ("accepted", "app.result", "ship-it", ""),
        ("accepted", "task_success", "", "0.7"),
        ("rejected", "task_success", "", "0.69"),
        ("rejected", "task_success", "Nope", ""),
    ]


def test_a_value_meaning_both_is_a_config_error() -> None:
    with pytest.raises(Exception, match="both accepted and rejected: ok"):
        load_config(overrides={"outcomes": {"accepted": ["OK"], "rejected": ["ok"]}}, environ={})


def test_snapshots_follow_the_interval_and_every_change(make_server: Callable[..., RunningServer]) -> None:
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    budgets = [{"name": "tiny", "scope": {"team": "payments"}, "period": "day", "limit": "0.001", "block_at": 1}]
    server = make_server({"budgets": budgets, "alerts": {"enabled": False}}, clock=clock)
    enforcer = server.server.enforcer
    assert enforcer is not None

    def snapshots() -> list[dict[str, Any]]:
        return server.query(
            "SELECT evaluated_at, action, toString(spent) AS spent_text FROM budget_snapshots ORDER BY evaluated_at, "
            "action"
        ).dicts()

    first = len(snapshots())
    assert first >= 1  # at start-up
    enforcer.poll_once()  # nothing changed, within the minute: nothing new
    assert len(snapshots()) == first
    export(server, make_request([make_span(chat_attributes(), start_ns=clock.ns)]))
    enforcer.poll_once()  # allow -> block: recorded at once
    assert snapshots()[-1]["action"] == "block"
    count = len(snapshots())
    clock.now += timedelta(seconds=61)
    enforcer.poll_once()  # a minute on: recorded again, unchanged
    assert len(snapshots()) >= count + 1  # (the enforcer's own thread may be the one that wrote it)
    assert snapshots()[-1]["evaluated_at"] == clock.now.strftime("%Y-%m-%d %H:%M:%S")
    assert Decimal(snapshots()[-1]["spent_text"]) == Decimal(server.scalar("SELECT toString(sum(cost)) FROM requests"))


def test_no_snapshots_when_switched_off(make_server: Callable[..., RunningServer]) -> None:
    budgets = [{"name": "b", "scope": {"team": "payments"}, "period": "day", "limit": "1"}]
    server = make_server({"budgets": budgets, "enforcer": {"snapshot_seconds": 0}, "alerts": {"enabled": False}})
    assert server.server.enforcer is not None
    server.server.enforcer.poll_once()
    assert server.scalar("SELECT count() FROM budget_snapshots") == 0


def test_every_default_alternative_is_priced_for_the_what_if() -> None:
    book = PriceBook()
    day = datetime.now(UTC).date()
    for model, alternative in Config().review.model_mix.alternatives.items():
        for name in (model, alternative):
            card = book.card(probe_call(name, "", day))
            assert card is not None and card.rates(), f"{name} has no flat rate in the catalog"


def test_rates_are_written_once_and_rewritten_when_they_change(store: Store) -> None:
    config = Config()
    assert publish_rates(store, config) == 0  # nothing priced seen yet
    store.insert_rows(
        "model_alternatives",
        [{"model": "gpt-4o", "alternative": "stale", "light_operations": [], "short_output_tokens": 1}],
        "x",
    )
    priced = line("00000000000000a1", 1, provider="openai", priced_model="gpt-4o-mini", request_model="gpt-4o-mini")
    store.insert_batch(batch([priced]), token="a")
    seen = store.query("SELECT provider, model FROM spend_hour WHERE priced = 1").rows
    assert seen == [["openai", "gpt-4o-mini"]]
    written = publish_rates(store, config)
    assert written >= 1
    assert publish_rates(store, config) == 0  # unchanged: nothing rewritten
    alternatives = dict(store.query("SELECT model, alternative FROM model_alternatives FINAL").rows)
    assert alternatives == config.review.model_mix.alternatives  # the stale row is gone
    provider, model = seen[0]
    rate = store.query(
        f"SELECT toString(input) FROM model_rates FINAL WHERE provider = '{provider}' AND model = '{model}'"
    ).scalar()
    card = PriceBook().card(probe_call(model, provider, datetime.now(UTC).date()))
    assert card is not None and Decimal(rate) == card.rates()[0][1]["input"]
