"""`GET /metrics` read back by prometheus_client's own parser, after real traffic through the receiver:
every family the README lists, with the values that traffic implies; the label caps; and the alerting
rules under grafana/ name only metrics that exist."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from otel_cost.metrics import MAX_SPEND_SERIES, Metrics

from .helpers import HookServer, RunningServer, chat_attributes, export, make_request, make_span, wait_for

RULES = Path(__file__).resolve().parents[1] / "grafana" / "alerts" / "otel-cost.rules.yaml"
MINI = chat_attributes(
    **{
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 1_000_000,
        "gen_ai.usage.output_tokens": 0,
    }
)  # 0.15 USD


def recent(attributes: dict[str, Any]) -> Any:
    return make_span(attributes, start_ns=time.time_ns() - 2_000_000_000)


def scrape(server: RunningServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"{server.api_url}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        assert re.fullmatch(r"otel_cost_[a-z_]+", family.name), family.name
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_metrics_carry_what_the_traffic_did(
    make_server: Callable[..., RunningServer], hooks: Callable[..., HookServer]
) -> None:
    hook = hooks()
    budget = {
        "name": "payments-hourly",
        "scope": {"team": "payments"},
        "window": "60m",
        "limit": "1",
        "alert_at": [0.4],
    }
    server = make_server(
        {
            "budgets": [budget],
            "enforcer": {"interval_seconds": 0.05},
            "alerts": {
                "interval_seconds": 0.2,
                "sinks": [{"kind": "webhook", "url": hook.url, "secret": "alert-secret-0123456789"}],
            },
        }
    )
    spans = [recent(MINI) for _ in range(3)]
    spans.append(recent({**MINI, "gen_ai.usage.input_tokens": -5}))  # invalid: partial_success
    spans.append(recent({**MINI, "gen_ai.request.model": "acme-7b", "gen_ai.response.model": "acme-7b"}))  # unpriced
    response: Any = export(server, make_request(spans))
    assert response.partial_success.rejected_spans == 1
    export(server, make_request([recent(MINI)], resource={"service.name": "labs"}))  # unattributed
    assert server.server.enforcer is not None
    document = server.server.enforcer.state.document
    wait_for(lambda: document()["caps"][0]["spent"] == "0.45", what="the budget at 0.45")
    wait_for(lambda: any(body["kind"] == "budget_threshold" for body in hook.bodies()), what="the 40% alert")

    def counted() -> Any:
        found = scrape(server)
        fired = found.get(
            ("otel_cost_alerts_fired_total", frozenset({("kind", "budget_threshold"), ("severity", "warning")}))
        )
        delivered = found.get(
            ("otel_cost_alert_deliveries_total", frozenset({("sink", "webhook"), ("outcome", "delivered")}))
        )
        detected = found.get(("otel_cost_alert_detectors_seconds_count", frozenset()))
        return found if fired == 1 and delivered and delivered >= 1 and detected else None

    samples = wait_for(counted, what="the alert and its delivery counted")
    assert value(samples, "otel_cost_spans_received_total") == 6
    assert value(samples, "otel_cost_spans_accepted_total") == 5
    assert value(samples, "otel_cost_spans_rejected_total", reason="invalid") == 1
    assert value(samples, "otel_cost_calls_stored_total", billable="true") == 5
    assert value(samples, "otel_cost_unpriced_calls_total") == 1
    assert value(samples, "otel_cost_unattributed_calls_total") == 1
    assert value(samples, "otel_cost_store_flush_seconds_count") >= 2
    assert ("otel_cost_store_pending_rows", frozenset()) in samples
    assert value(samples, "otel_cost_spend_usd_total", team="payments", model="gpt-4o-mini") == pytest.approx(0.45)
    assert value(samples, "otel_cost_spend_usd_total", team="unattributed", model="gpt-4o-mini") == pytest.approx(0.15)
    assert value(samples, "otel_cost_enforcer_poll_seconds_count") >= 1
    assert value(samples, "otel_cost_enforcer_evaluations_total", outcome="ok") >= 1
    assert value(samples, "otel_cost_cap_state_version") == document()["version"]
    cap = {"budget": "payments-hourly", "group": "team=payments", "action": "alert"}
    assert value(samples, "otel_cost_budget_utilization_ratio", **cap) == pytest.approx(0.45)
    assert value(samples, "otel_cost_budget_spent_usd", **cap) == pytest.approx(0.45)
    assert value(samples, "otel_cost_budget_limit_usd", **cap) == 1
    assert value(samples, "otel_cost_caps", action="alert") == 1
    assert value(samples, "otel_cost_caps", action="block") == 0
    assert value(samples, "otel_cost_alerts_fired_total", kind="budget_threshold", severity="warning") == 1
    assert value(samples, "otel_cost_alert_queue_alerts", sink="webhook") >= 0
    assert value(samples, "otel_cost_alert_detectors_seconds_count") >= 1
    assert value(samples, "otel_cost_automatic_caps") == 0


def test_spend_labels_are_capped_and_nothing_is_lost_to_the_cap() -> None:
    metrics = Metrics()
    units = 10**24 // 100  # 0.01 USD
    metrics.add_spend({(f"team-{index}", "gpt-4o"): units for index in range(MAX_SPEND_SERIES + 100)})
    metrics.add_spend({("team-0", "gpt-4o"): units, ("late-team", "gpt-4o"): units})
    spend = [
        sample
        for family in text_string_to_metric_families(metrics.render().decode())
        if family.name == "otel_cost_spend_usd"
        for sample in family.samples
        if sample.name == "otel_cost_spend_usd_total"
    ]
    assert len(spend) == MAX_SPEND_SERIES + 1
    other = next(sample for sample in spend if sample.labels == {"team": "other", "model": "other"})
    assert other.value == pytest.approx(1.01)  # 100 teams over the cap, then one more
    assert sum(Decimal(str(sample.value)) for sample in spend) == pytest.approx(Decimal("6.02"))


def test_the_alerting_rules_name_only_metrics_otel_cost_exposes(server: RunningServer) -> None:
    with urllib.request.urlopen(f"{server.api_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exposed = {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in suffixes.get(family.type, ("",))
    }
    rules = yaml.safe_load(RULES.read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(expressions) >= 10
    for rule in (rule for group in rules["groups"] for rule in group["rules"]):
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"} and rule["labels"]["severity"]
    named = {name for expr in expressions for name in re.findall(r"\botel_cost_[a-z_]+", expr)}
    assert named and named <= exposed, sorted(named - exposed)
