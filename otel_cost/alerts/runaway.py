"""Runaway detectors, from telemetry alone: agent loops, retry storms, spend spikes.

Each runs one aggregate query over a recent window (the raw `requests` rows for traces and retries,
the minute rollup for spend rates) and, only for what crossed its threshold, one or two more for the
evidence an on-call engineer needs: the trace ids, agents, models, error types and sample span ids.
Windows end a few minutes after `now`, because spans stamped slightly in the future (clock skew, a
batching exporter) are spend too.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from ..config import AgentLoopConfig, ContainConfig, RetryStormConfig, SpendSpikeConfig, window_seconds
from ..enforcer.budgets import SCOPE_COLUMNS
from ..formats import decimal_text, iso_utc
from ..store import Store
from ..store.sql import quote, seconds_literal
from .model import Containment, Finding

__all__ = ["detect_agent_loops", "detect_retry_storms", "detect_spend_spikes"]

#: Spans stamped this far after `now` still count as recent.
SKEW = timedelta(minutes=5)
_MODEL = "if(request_model != '', request_model, response_model)"
_SAMPLES = 5


def _rows(store: Store, sql: str) -> list[dict[str, Any]]:
    return store.poll(sql, lane="alerts").dicts()


def _money(amount: Decimal) -> str:
    return decimal_text(amount.quantize(Decimal("0.000001"), ROUND_HALF_EVEN))


def _in_list(values: list[str]) -> str:
    return ", ".join(quote(value) for value in values)


def _window(now: datetime, window: str) -> str:
    start = now - timedelta(seconds=window_seconds(window))
    return f"timestamp >= {seconds_literal(start)} AND timestamp < {seconds_literal(now + SKEW)}"


def _containment(contain: ContainConfig | None, scope: dict[str, str]) -> Containment | None:
    if contain is None or not scope:
        return None
    return Containment(scope=scope, action=contain.action, minutes=contain.minutes, downgrade=dict(contain.downgrade))


def _owner_scope(agent: str, service: str) -> dict[str, str]:
    """What a gateway can match: the agent, else the service."""
    if agent:
        return {"agent": agent}
    return {"service": service} if service else {}


def _short(trace_id: str) -> str:
    return trace_id[:16] + "…" if len(trace_id) > 16 else trace_id


def _evidence_for_traces(store: Store, trace_ids: list[str], where_time: str) -> dict[str, dict[str, Any]]:
    """Per trace: calls and cost by model, error types, the latest span ids."""
    if not trace_ids:
        return {}
    ids = _in_list(trace_ids)
    out: dict[str, dict[str, Any]] = {
        trace: {"models": [], "error_types": [], "sample_span_ids": []} for trace in trace_ids
    }
    for row in _rows(
        store,
        f"SELECT trace_id, {_MODEL} AS model, count() AS calls, countIf(status = 'error') AS errors, "
        f"toString(sum(cost)) AS cost_text FROM requests WHERE billable = 1 AND trace_id IN ({ids}) AND {where_time} "
        "GROUP BY trace_id, model ORDER BY sum(cost) DESC, calls DESC",
    ):
        out[row["trace_id"]]["models"].append(
            {
                "model": row["model"],
                "calls": row["calls"],
                "errors": row["errors"],
                "cost_usd": _money(Decimal(row["cost_text"])),
            }
        )
    for row in _rows(
        store,
        f"SELECT trace_id, error_type, count() AS calls FROM requests WHERE billable = 1 AND status = 'error' "
        f"AND trace_id IN ({ids}) AND {where_time} GROUP BY trace_id, error_type ORDER BY calls DESC",
    ):
        out[row["trace_id"]]["error_types"].append({"error_type": row["error_type"], "calls": row["calls"]})
    for row in _rows(
        store,
        f"SELECT trace_id, span_id FROM requests WHERE billable = 1 AND trace_id IN ({ids}) AND {where_time} "
        f"ORDER BY timestamp DESC LIMIT {_SAMPLES} BY trace_id",
    ):
        out[row["trace_id"]]["sample_span_ids"].append(row["span_id"])
    return out


def _level(value: Decimal, threshold: Decimal) -> int:
    """0 at the threshold, 1 at twice it, 2 at four times...: a loop that keeps going alerts again."""
    if value < threshold or threshold <= 0:
        return -1
    return math.floor(math.log2(float(value / threshold)))


def detect_agent_loops(store: Store, config: AgentLoopConfig, now: datetime) -> list[Finding]:
    """One trace (or one conversation over several traces) with too many calls or too much cost."""
    where_time = _window(now, config.window)
    limit_cost = decimal_text(config.max_cost_usd)
    findings: list[Finding] = []
    for group, column, extra in (
        ("trace", "trace_id", ""),
        ("conversation", "conversation_id", " AND uniqExact(trace_id) > 1"),
    ):
        rows = _rows(
            store,
            f"SELECT {column} AS id, count() AS calls, countIf(status = 'error') AS errors, "
            "toString(sum(cost)) AS cost_text, anyIf(agent, agent != '') AS agent_name, any(service_name) AS service, "
            "any(team) AS team_name, any(feature) AS feature_name, any(environment) AS environment_name, "
            "uniqExact(trace_id) AS traces, groupUniqArray(10)(trace_id) AS trace_ids, "
            "toUnixTimestamp64Milli(min(timestamp)) AS first_ms, toUnixTimestamp64Milli(max(timestamp)) AS last_ms "
            f"FROM requests WHERE billable = 1 AND {column} != '' AND {where_time} GROUP BY id "
            f"HAVING (calls >= {int(config.max_calls)} OR sum(cost) >= toDecimal128({quote(limit_cost)}, 24)){extra} "
            "ORDER BY sum(cost) DESC, calls DESC LIMIT 20",
        )
        if not rows:
            continue
        samples = _evidence_for_traces(store, [row["id"] for row in rows] if group == "trace" else [], where_time)
        for row in rows:
            calls, cost = int(row["calls"]), Decimal(row["cost_text"])
            level = max(_level(Decimal(calls), Decimal(config.max_calls)), _level(cost, config.max_cost_usd))
            agent, service = row["agent_name"], row["service"]
            first = datetime.fromtimestamp(int(row["first_ms"]) / 1000, now.tzinfo)
            last = datetime.fromtimestamp(int(row["last_ms"]) / 1000, now.tzinfo)
            evidence: dict[str, Any] = {
                "calls": calls,
                "errors": int(row["errors"]),
                "cost_usd": _money(cost),
                "first_call": iso_utc(first),
                "last_call": iso_utc(last),
                "window": config.window,
                "max_calls": config.max_calls,
                "max_cost_usd": limit_cost,
                "traces": int(row["traces"]),
            }
            subject = {
                group + "_id": row["id"],
                "agent": agent,
                "service": service,
                "team": row["team_name"],
                "feature": row["feature_name"],
                "environment": row["environment_name"],
            }
            who = agent or service or "an unnamed caller"
            if group == "trace":
                evidence.update(samples.get(row["id"], {}))
                evidence["top_traces"] = [row["id"]]
                where = f"trace {row['id']}"
            else:
                evidence["top_traces"] = sorted(row["trace_ids"])
                where = f"conversation {row['id']} ({row['traces']} traces)"
            models = ", ".join(f"{entry['calls']} to {entry['model']}" for entry in evidence.get("models", [])[:3])
            findings.append(
                Finding(
                    kind="agent_loop",
                    key=f"agent_loop|{group}|{row['id']}|{level}",
                    severity="critical" if cost >= config.max_cost_usd else "warning",
                    title=f"Agent loop: {who} made {calls} calls ({_money(cost)} USD) in one {group}",
                    message=(
                        f"{where} (agent {agent or '-'}, service {service or '-'}, "
                        f"team {row['team_name'] or '-'}) made "
                        f"{calls} billable calls costing {_money(cost)} USD between {iso_utc(first)} and "
                        f"{iso_utc(last)}, {int(row['errors'])} of them failed"
                        + (f"; {models}" if models else "")
                        + f". Threshold: {config.max_calls} calls or {limit_cost} USD per {group} in {config.window}."
                    ),
                    subject={key: value for key, value in subject.items() if value},
                    evidence=evidence,
                    containment=_containment(config.contain, _owner_scope(agent, service)),
                )
            )
    return findings


def detect_retry_storms(store: Store, config: RetryStormConfig, now: datetime) -> list[Finding]:
    """Failing calls followed by retries (calls after a failure in the same trace and model), per service,
    agent and model."""
    where_time = _window(now, config.window)
    rows = _rows(
        store,
        "SELECT service_name, agent, model, sum(trace_calls) AS calls, sum(trace_errors) AS errors, "
        "sum(trace_retries) AS retries, toString(sum(trace_cost)) AS cost_text, "
        "toString(sumIf(trace_cost, trace_errors > 0)) AS storm_cost_text, countIf(trace_errors > 0) AS traces, "
        "arraySlice(arrayReverseSort(x -> x.1, groupArrayIf((trace_errors, trace_id), trace_errors > 0)), 1, 5) AS top "
        "FROM (SELECT trace_id, service_name, agent, "
        f"{_MODEL} AS model, count() AS trace_calls, countIf(status = 'error') AS trace_errors, "
        "sum(cost) AS trace_cost, minIf(timestamp, status = 'error') AS first_error, "
        "if(trace_errors > 0, arrayCount(t -> t > first_error, groupArray(timestamp)), 0) AS trace_retries "
        f"FROM requests WHERE billable = 1 AND {where_time} GROUP BY trace_id, service_name, agent, model) "
        "GROUP BY service_name, agent, model "
        f"HAVING errors >= {int(config.min_failures)} AND retries >= {int(config.min_retries)} "
        f"AND errors >= {decimal_text(config.min_failure_ratio)} * calls "
        "ORDER BY sum(trace_cost) DESC LIMIT 20",
    )
    findings = []
    for row in rows:
        service, agent, model = row["service_name"], row["agent"], row["model"]
        calls, errors, retries = int(row["calls"]), int(row["errors"]), int(row["retries"])
        cost, storm_cost = Decimal(row["cost_text"]), Decimal(row["storm_cost_text"])
        top_traces = [{"trace_id": trace, "errors": int(count)} for count, trace in row["top"]]
        detail = _rows(
            store,
            f"SELECT error_type, count() AS calls, groupArray({_SAMPLES})(span_id) AS spans FROM requests "
            f"WHERE billable = 1 AND status = 'error' AND service_name = {quote(service)} AND agent = {quote(agent)} "
            f"AND {_MODEL} = {quote(model)} AND {where_time} GROUP BY error_type ORDER BY calls DESC LIMIT 5",
        )
        samples = [span for entry in detail for span in entry["spans"]][:_SAMPLES]
        per_call = storm_cost / max(calls, 1)
        who = "/".join(part for part in (service, agent) if part) or "an unnamed caller"
        findings.append(
            Finding(
                kind="retry_storm",
                key=f"retry_storm|{service}|{agent}|{model}",
                severity="critical" if storm_cost >= config.critical_cost_usd else "warning",
                title=f"Retry storm: {who} -> {model}: {errors} failures, {retries} retries in {config.window}",
                message=(
                    f"{who} called {model} {calls} times in the last {config.window}: {errors} failed "
                    f"({errors * 100 // max(calls, 1)}%) and {retries} calls retried after a failure in the same "
                    f"trace, across {int(row['traces'])} trace(s). The retrying traces cost {_money(storm_cost)} USD "
                    f"({_money(per_call)} USD per call)."
                    + (f" Most common error: {detail[0]['error_type']}." if detail else "")
                ),
                subject={
                    key: value for key, value in (("service", service), ("agent", agent), ("model", model)) if value
                },
                evidence={
                    "calls": calls,
                    "errors": errors,
                    "retries": retries,
                    "failure_ratio": decimal_text(Decimal(errors) / Decimal(max(calls, 1))),
                    "cost_usd": _money(cost),
                    "storm_cost_usd": _money(storm_cost),
                    "window": config.window,
                    "top_traces": top_traces,
                    "error_types": [{"error_type": entry["error_type"], "calls": entry["calls"]} for entry in detail],
                    "sample_span_ids": samples,
                },
                cooldown_seconds=window_seconds(config.cooldown),
                containment=_containment(config.contain, _owner_scope(agent, service)),
            )
        )
    return findings


def detect_spend_spikes(store: Store, config: SpendSpikeConfig, now: datetime) -> list[Finding]:
    """An agent's (feature's, service's, team's) spend rate over the window against its own baseline."""
    window = timedelta(seconds=window_seconds(config.window))
    baseline = timedelta(seconds=window_seconds(config.baseline))
    min_history = timedelta(seconds=window_seconds(config.min_history))
    window_start = (now - window).replace(second=0, microsecond=0)
    baseline_start = window_start - baseline
    findings = []
    for dimension in config.dimensions:
        column = SCOPE_COLUMNS[dimension]
        rows = _rows(
            store,
            f"SELECT {column} AS value, toString(sumIf(cost, minute >= {seconds_literal(window_start)})) AS recent, "
            f"toString(sumIf(cost, minute < {seconds_literal(window_start)})) AS base, "
            "toUnixTimestamp(min(minute)) AS first_minute "
            f"FROM spend_minute WHERE billable = 1 AND {column} != '' AND minute >= {seconds_literal(baseline_start)} "
            f"AND minute < {seconds_literal(now + SKEW)} GROUP BY value "
            f"HAVING sumIf(cost, minute >= {seconds_literal(window_start)}) > 0",
        )
        for row in rows:
            first = datetime.fromtimestamp(int(row["first_minute"]), now.tzinfo)
            history = window_start - max(first, baseline_start)
            if history < min_history:
                continue  # too new to have a baseline (new owners have their own alert)
            recent, base = Decimal(row["recent"]), Decimal(row["base"])
            window_hours = Decimal(window.total_seconds()) / 3600
            recent_rate = recent / window_hours
            base_rate = base / (Decimal(history.total_seconds()) / 3600)
            if recent_rate < config.min_usd_per_hour or recent_rate < config.factor * base_rate:
                continue
            findings.append(_spike(store, config, dimension, column, row["value"], recent_rate, base_rate, now))
    return findings


def _spike(
    store: Store,
    config: SpendSpikeConfig,
    dimension: str,
    column: str,
    value: str,
    recent_rate: Decimal,
    base_rate: Decimal,
    now: datetime,
) -> Finding:
    where_time = _window(now, config.window)
    where = f"billable = 1 AND {column} = {quote(value)} AND {where_time}"
    traces = _rows(
        store,
        f"SELECT trace_id, count() AS calls, toString(sum(cost)) AS cost_text, anyIf(agent, agent != '') AS agent_name "
        f"FROM requests WHERE {where} GROUP BY trace_id ORDER BY sum(cost) DESC LIMIT 5",
    )
    models = _rows(
        store,
        f"SELECT {_MODEL} AS model, count() AS calls, toString(sum(cost)) AS cost_text FROM requests WHERE {where} "
        "GROUP BY model ORDER BY sum(cost) DESC LIMIT 5",
    )
    samples = [
        row["span_id"]
        for row in _rows(store, f"SELECT span_id FROM requests WHERE {where} ORDER BY cost DESC LIMIT {_SAMPLES}")
    ]
    ratio = "a rate it never had" if base_rate == 0 else f"{(recent_rate / base_rate).quantize(Decimal('0.1'))}x"
    agent = value if dimension == "agent" else ""
    service = value if dimension == "service" else ""
    scope = _owner_scope(agent, service) if dimension in ("agent", "service") else {dimension: value}
    return Finding(
        kind="spend_spike",
        key=f"spend_spike|{dimension}|{value}",
        severity="critical" if base_rate == 0 or recent_rate >= 4 * config.factor * base_rate else "warning",
        title=f"Spend spike: {dimension} {value} at {_money(recent_rate)} USD/h ({ratio} its baseline)",
        message=(
            f"{dimension} {value} spent at {_money(recent_rate)} USD per hour over the last {config.window}, "
            f"against {_money(base_rate)} USD per hour over the {config.baseline} before ({ratio}). "
            + (f"Top trace: {_short(traces[0]['trace_id'])} ({traces[0]['calls']} calls). " if traces else "")
            + (f"Top model: {models[0]['model']}." if models else "")
        ),
        subject={dimension: value},
        evidence={
            "recent_usd_per_hour": _money(recent_rate),
            "baseline_usd_per_hour": _money(base_rate),
            "window": config.window,
            "baseline": config.baseline,
            "factor": decimal_text(config.factor),
            "top_traces": [
                {
                    "trace_id": row["trace_id"],
                    "calls": row["calls"],
                    "cost_usd": _money(Decimal(row["cost_text"])),
                    "agent": row["agent_name"],
                }
                for row in traces
            ],
            "models": [
                {"model": row["model"], "calls": row["calls"], "cost_usd": _money(Decimal(row["cost_text"]))}
                for row in models
            ],
            "sample_span_ids": samples,
        },
        cooldown_seconds=window_seconds(config.cooldown),
        containment=_containment(config.contain, scope),
    )
