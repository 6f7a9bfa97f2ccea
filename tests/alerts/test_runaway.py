"""Runaway detection from telemetry alone, through the real receiver, with real HTTP sinks on loopback:
an agent loop caught within one detector interval of crossing its threshold (and contained), a retry
storm, a spend spike against its own baseline, and `otel-cost demo` tripping the loop detector."""

from __future__ import annotations

import os
import statistics
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from click.testing import CliRunner

from otel_cost.cli import cli

from ..helpers import (
    FakeClock,
    HookServer,
    RunningServer,
    detector_runs,
    export,
    make_request,
    make_span,
    wait_for,
)

SECRET = "alert-secret-0123456789"
OPUS = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-opus-4-1"}
DOCS = {"service.name": "doc-pipeline", "team": "data-platform"}


def ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def opus_call(trace_id: bytes, at: datetime, *, failed: bool = False, agent: str = "doc-triage", **extra: Any) -> Any:
    usage = {"gen_ai.usage.input_tokens": 0, "gen_ai.usage.output_tokens": 0}
    if not failed:  # 30,000 in and 1,000 out at 15 / 75 USD per million: 0.525 USD
        usage = {"gen_ai.usage.input_tokens": 30_000, "gen_ai.usage.output_tokens": 1_000}
    attributes = {**OPUS, **usage, "gen_ai.agent.name": agent, **extra}
    if failed:
        attributes["error.type"] = "overloaded_error"
    return make_span(
        attributes, trace_id=trace_id, start_ns=ns(at) - 2_000_000_000, duration_ns=2_000_000_000, error=failed
    )


def sinks(hook: HookServer) -> list[dict[str, Any]]:
    return [{"kind": "webhook", "url": hook.url, "secret": SECRET}]


def caps(server: RunningServer) -> dict[str, Any]:
    import json

    with urllib.request.urlopen(f"{server.api_url}/v1/caps", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def of_kind(hook: HookServer, kind: str) -> list[dict[str, Any]]:
    return [body for body in hook.bodies() if body["kind"] == kind]


def test_a_looping_agent_is_caught_within_one_interval_of_crossing_and_contained(
    make_server: Callable[..., RunningServer], hooks: Callable[..., HookServer]
) -> None:
    hook = hooks()
    interval = 1.0
    server = make_server(
        {
            "alerts": {
                "interval_seconds": interval,
                "sinks": sinks(hook),
                "runaway": {
                    "agent_loop": {
                        "max_calls": 20,
                        "max_cost_usd": "100",
                        "contain": {"action": "block", "minutes": 15},
                    },
                    "retry_storm": {"enabled": False},
                },
            }
        }
    )
    trace = os.urandom(16)
    start = datetime.now(UTC) - timedelta(minutes=5)
    spans = [
        opus_call(trace, start + timedelta(seconds=10 * attempt), failed=attempt % 3 == 2) for attempt in range(20)
    ]
    sent = {span.span_id.hex() for span in spans}
    export(server, make_request(spans[:19], resource=DOCS))  # 19 calls: one under the threshold
    detector_runs(server)
    assert of_kind(hook, "agent_loop") == []

    export(server, make_request(spans[19:], resource=DOCS))  # the 20th: the threshold
    crossed, crossed_wall = time.monotonic(), time.time()
    wait_for(lambda: of_kind(hook, "agent_loop"), timeout=10, what="the agent-loop alert")
    arrived = next(item.at for item in hook.received if item.json()["kind"] == "agent_loop")
    fired_ms = server.scalar("SELECT toUnixTimestamp64Milli(fired_at) FROM alerts WHERE kind = 'agent_loop'")
    detected = int(fired_ms) / 1000 - crossed_wall  # the detector run that found it started then
    print(
        f"agent loop: detected {detected:.3f} s and received {arrived - crossed:.3f} s after the crossing export's "
        f"ack (interval {interval} s)"
    )
    assert detected <= interval + 0.1, f"detected {detected:.2f} s after the crossing"
    assert arrived - crossed <= interval + 1.0, f"received {arrived - crossed:.2f} s after the crossing"

    (alert,) = of_kind(hook, "agent_loop")
    assert alert["subject"]["trace_id"] == trace.hex()
    assert alert["subject"]["agent"] == "doc-triage" and alert["subject"]["service"] == "doc-pipeline"
    evidence = alert["evidence"]
    assert (evidence["calls"], evidence["errors"]) == (20, 6)
    assert evidence["cost_usd"] == "7.35"  # 14 successful calls at 0.525 USD
    assert evidence["models"] == [{"model": "claude-opus-4-1", "calls": 20, "errors": 6, "cost_usd": "7.35"}]
    assert evidence["error_types"] == [{"error_type": "overloaded_error", "calls": 6}]
    assert len(evidence["sample_span_ids"]) == 5 and set(evidence["sample_span_ids"]) <= sent
    assert trace.hex() in alert["message"]

    # Automatic containment: a temporary cap on the agent, labelled as such, in the published state.
    containment = alert["containment"]
    assert (containment["scope"], containment["action"], containment["automatic"]) == (
        {"agent": "doc-triage"},
        "block",
        True,
    )
    cap = wait_for(
        lambda: next((cap for cap in caps(server)["caps"] if cap.get("automatic")), None), what="the automatic cap"
    )
    assert (cap["budget"], cap["scope"], cap["action"], cap["alert_id"]) == (
        "auto:agent_loop",
        {"agent": "doc-triage"},
        "block",
        alert["id"],
    )
    assert cap["expires_at"] == containment["expires_at"]
    assert cap["reason"].startswith("automatic block for 15 minutes")

    # More calls in the same loop do not repeat the alert; doubling the threshold escalates it.
    more = [opus_call(trace, start + timedelta(seconds=200 + attempt)) for attempt in range(5)]
    export(server, make_request(more, resource=DOCS))
    detector_runs(server)
    assert len(of_kind(hook, "agent_loop")) == 1


def test_a_retry_storm_on_an_expensive_model_is_detected_with_its_traces(
    make_server: Callable[..., RunningServer], hooks: Callable[..., HookServer]
) -> None:
    hook = hooks()
    server = make_server(
        {
            "alerts": {
                "interval_seconds": 0.3,
                "sinks": sinks(hook),
                "runaway": {"retry_storm": {"min_failures": 5, "min_retries": 3, "critical_cost_usd": "1"}},
            }
        }
    )
    now = datetime.now(UTC) - timedelta(minutes=2)
    storm = []
    traces = [os.urandom(16) for _ in range(3)]
    for index, trace in enumerate(traces):  # each: three failures, then the retry that works
        at = now + timedelta(seconds=20 * index)
        storm += [
            opus_call(trace, at + timedelta(seconds=step), failed=step < 3, agent="summarizer") for step in range(4)
        ]
    # Control: failures without retries (each its own trace, never retried) are no storm.
    lone = [opus_call(os.urandom(16), now, failed=True, agent="classifier") for _ in range(6)]
    export(server, make_request(storm + lone, resource={"service.name": "ingest", "team": "data-platform"}))
    wait_for(lambda: of_kind(hook, "retry_storm"), what="the retry-storm alert")
    detector_runs(server)
    (alert,) = of_kind(hook, "retry_storm")
    assert alert["subject"] == {"service": "ingest", "agent": "summarizer", "model": "claude-opus-4-1"}
    assert alert["severity"] == "critical"  # 1.575 USD of retries on claude-opus-4-1
    evidence = alert["evidence"]
    assert (evidence["calls"], evidence["errors"], evidence["retries"]) == (12, 9, 9)
    assert evidence["storm_cost_usd"] == "1.575"
    assert sorted(entry["trace_id"] for entry in evidence["top_traces"]) == sorted(trace.hex() for trace in traces)
    assert evidence["error_types"] == [{"error_type": "overloaded_error", "calls": 9}]
    failed = {span.span_id.hex() for span in storm if span.status.code == 2}
    assert evidence["sample_span_ids"] and set(evidence["sample_span_ids"]) <= failed
    assert alert["title"] == "Retry storm: ingest/summarizer -> claude-opus-4-1: 9 failures, 9 retries in 10m"


def test_a_spend_spike_is_measured_against_the_agents_own_baseline(
    make_server: Callable[..., RunningServer], hooks: Callable[..., HookServer]
) -> None:
    hook = hooks()
    server = make_server(
        {
            "alerts": {
                "interval_seconds": 0.3,
                "sinks": sinks(hook),
                "runaway": {
                    "agent_loop": {"enabled": False},
                    "spend_spike": {"dimensions": ["agent"], "window": "15m", "baseline": "24h", "factor": 5},
                },
            }
        }
    )
    now = datetime.now(UTC)
    spans = []
    for hour in range(1, 24):  # a day of one call an hour (0.525 USD/h) for both agents
        for agent in ("summarizer", "steady"):
            spans.append(opus_call(os.urandom(16), now - timedelta(hours=hour), agent=agent))
    # then summarizer makes 12 calls in 10 minutes (25 USD/h, 48x its baseline); steady keeps its pace
    spans += [opus_call(os.urandom(16), now - timedelta(minutes=step), agent="summarizer") for step in range(12)]
    spans.append(opus_call(os.urandom(16), now - timedelta(minutes=3), agent="steady"))
    export(server, make_request(spans, resource={"service.name": "notes", "team": "research"}))
    wait_for(lambda: of_kind(hook, "spend_spike"), what="the spend-spike alert")
    detector_runs(server)
    (alert,) = of_kind(hook, "spend_spike")
    assert alert["subject"] == {"agent": "summarizer"}
    evidence = alert["evidence"]
    assert evidence["recent_usd_per_hour"] == "25.2"  # 12 x 0.525 USD in 15 minutes
    assert evidence["models"] == [{"model": "claude-opus-4-1", "calls": 12, "cost_usd": "6.3"}]
    assert len(evidence["top_traces"]) == 5 and len(evidence["sample_span_ids"]) == 5
    assert "summarizer" in alert["title"] and "USD/h" in alert["title"]


def test_demo_traffic_trips_the_runaway_alert_on_a_fresh_server(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"alerts": {"interval_seconds": 0.5}})  # the default detectors and thresholds
    runner = CliRunner()
    demo = runner.invoke(cli, ["demo", "--endpoint", f"http://{server.grpc_target}"])
    assert demo.exit_code == 0, demo.output

    def listed() -> Any:
        result = runner.invoke(cli, ["alerts", "--api", server.api_url, "--kind", "agent_loop", "--format", "json"])
        assert result.exit_code == 0, result.output
        import json

        return json.loads(result.stdout)

    (alert,) = wait_for(listed, what="the demo's runaway alert")
    assert alert["subject"]["agent"] == "doc-triage" and alert["severity"] == "critical"
    runaway_trace = server.scalar("SELECT any(trace_id) FROM requests WHERE agent = 'doc-triage' AND billable")
    assert alert["subject"]["trace_id"] == runaway_trace
    table = runner.invoke(cli, ["alerts", "--api", server.api_url])
    assert "Agent loop: doc-triage made 30 calls" in table.stdout
    assert "Unpriced model: vllm/acme-llm-7b-instruct" in table.stdout


def test_a_dead_sink_slows_neither_ingestion_nor_enforcement(
    make_server: Callable[..., RunningServer], hooks: Callable[..., HookServer], store_url: str
) -> None:
    dead = hooks(hang=True)  # accepts, never answers
    live = hooks()
    budget = {"name": "docs", "scope": {"team": "data-platform"}, "window": "60m", "limit": "5", "block_at": 1}
    # The same traffic to a server with no alerts at all, on a store of its own, in the same run.
    baseline = make_server({"alerts": {"enabled": False}}, url=store_url.replace("database=", "database=quiet_"))
    loops: list[str] = []

    def ack_times(server: RunningServer) -> list[float]:
        times = []
        for _ in range(12):  # each export is a new loop of 25 calls: an alert per export
            trace = os.urandom(16)
            loops.append(trace.hex())
            at = datetime.now(UTC) - timedelta(minutes=1)
            spans = [opus_call(trace, at + timedelta(seconds=step)) for step in range(25)]
            started = time.monotonic()
            export(server, make_request(spans, resource=DOCS))
            times.append(time.monotonic() - started)
        return times

    quiet = ack_times(baseline)
    baseline.close()
    del loops[:]
    server = make_server(
        {
            "budgets": [budget],
            "enforcer": {"interval_seconds": 0.1},
            "alerts": {
                "interval_seconds": 0.2,
                "sinks": [
                    {"kind": "webhook", "name": "hanging", "url": dead.url, "secret": SECRET, "timeout_seconds": 5},
                    {"kind": "slack", "name": "refused", "url": "http://127.0.0.1:9/nothing-listens"},
                    {"kind": "webhook", "name": "live", "url": live.url, "secret": SECRET},
                ],
            },
        }
    )
    loaded = ack_times(server)
    print(
        f"ack latency, median: {statistics.median(quiet) * 1000:.1f} ms with no sinks, "
        f"{statistics.median(loaded) * 1000:.1f} ms with a hanging and a refusing sink "
        f"(max {max(loaded) * 1000:.1f} ms)"
    )
    assert max(loaded) < 2.0, f"an export took {max(loaded):.2f} s to be acknowledged"
    assert statistics.median(loaded) <= 3 * statistics.median(quiet) + 0.05, (quiet, loaded)
    # Enforcement went on: the budget (5 USD an hour; 12 loops of 13.125 USD) is blocking.
    wait_for(lambda: any(cap["action"] == "block" for cap in caps(server)["caps"]), what="the block")
    wait_for(
        lambda: {body["subject"]["trace_id"] for body in of_kind(live, "agent_loop")} == set(loops),
        what="every loop alerted to the live sink",
    )
    assert server.server.alerter is not None
    queued = server.server.alerter.dispatcher.queued()
    assert queued["hanging"] >= 10  # waiting behind the request that never ends


def test_an_automatic_cap_reaches_gateways_survives_a_restart_and_lapses(
    make_server: Callable[..., RunningServer],
) -> None:
    from otel_cost.gateway import CapsClient

    clock = FakeClock(datetime.now(UTC))
    config = {
        "enforcer": {"interval_seconds": 0.05},
        "alerts": {
            "interval_seconds": 0.2,
            "runaway": {"agent_loop": {"max_calls": 5, "contain": {"action": "block", "minutes": 10}}},
        },
    }
    server = make_server(config, clock=clock)
    trace = os.urandom(16)
    loop = [opus_call(trace, clock.now - timedelta(seconds=30 - step)) for step in range(6)]
    export(server, make_request(loop, resource=DOCS))

    def automatic(server: RunningServer) -> list[dict[str, Any]]:
        return [cap for cap in caps(server)["caps"] if cap.get("automatic")]

    wait_for(lambda: automatic(server), what="the automatic cap")
    with CapsClient(server.api_url, wait_seconds=1).start() as client:
        client.wait_ready(5)
        decision = client.decide({"agent": "doc-triage", "team": "data-platform"}, "claude-opus-4-1")
        assert decision.action == "block" and decision.budgets == ("auto:agent_loop",)
        assert client.decide({"agent": "summarizer"}, "claude-opus-4-1").action == "allow"

    server.close()
    server = make_server(config, clock=clock)
    (cap,) = wait_for(lambda: automatic(server), what="the automatic cap after the restart")
    assert cap["expires_at"] == (clock.now + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert server.scalar("SELECT count() FROM (SELECT alert_id FROM alerts GROUP BY alert_id)") == 1

    clock.now += timedelta(minutes=11)
    wait_for(lambda: not automatic(server), what="the automatic cap to lapse")
