"""`otel-cost demo` through the real OTel SDK and OTLP exporter: every story it promises is in the data."""

from __future__ import annotations

from decimal import Decimal

import pytest

from otel_cost.demo import run_demo
from otel_cost.errors import OtelCostError

from .helpers import RunningServer


def test_demo_traffic_tells_every_story(server: RunningServer) -> None:
    summary = run_demo(f"http://{server.grpc_target}", calls=80, seed=3)
    assert summary.failed_spans == 0
    assert summary.calls >= 80
    stored = server.scalar("SELECT count() FROM requests")
    assert 0 < stored <= summary.spans

    teams = {row[0] for row in server.query("SELECT DISTINCT team FROM requests WHERE billable").rows}
    assert {"payments", "search", "support", "data-platform", "research", "unattributed"} <= teams
    assert server.query("SELECT DISTINCT cost_center FROM requests WHERE team = 'payments'").rows == [["CC-1042"]]

    # the runaway agent: one trace, many calls to the most expensive model, failures included
    runaway = server.query(
        "SELECT count(), countIf(status = 'error'), any(priced_model), uniqExact(trace_id) FROM requests "
        "WHERE agent = 'doc-triage' AND billable"
    ).rows[0]
    assert runaway[0] >= 12 and runaway[1] >= 4 and runaway[2] == "claude-opus-4-1" and runaway[3] == 1

    # a self-hosted model nobody prices: stored with its tokens, flagged, never $0 in silence
    unpriced = server.query(
        "SELECT count(), sum(input_tokens) > 0, any(unpriced_reason) FROM requests WHERE NOT priced AND billable"
    ).rows[0]
    assert unpriced[0] >= 1 and unpriced[1] == 1
    assert unpriced[2] == "provider 'vllm' is not in the price catalog"

    # the agent's summed usage and the nested SDK span are stored but never billed again
    support = server.query(
        "SELECT countIf(billable), countIf(operation = 'invoke_agent' AND NOT billable), "
        "countIf(has(flags, 'nested_duplicate')) FROM requests WHERE service_name = 'support-bot'"
    ).rows[0]
    assert support[0] >= 1 and support[1] == support[0] and support[2] == support[0]

    # the Vercel AI SDK wrapper span repeats its step's usage: billed once
    labs = server.query(
        "SELECT countIf(billable), countIf(NOT billable) FROM requests WHERE service_name = 'labs-prototype'"
    ).rows[0]
    assert labs[0] == labs[1] >= 1

    # prompt caching shows up as cache reads, priced below fresh input
    assert server.scalar("SELECT sum(cache_read_tokens) FROM requests WHERE team IN ('payments', 'support')") > 0

    # no prompt text is ever stored
    assert server.scalar("SELECT countIf(mapContains(attributes, 'gen_ai.prompt.0.content')) FROM requests") == 0

    billed = Decimal(server.scalar("SELECT sum(cost) FROM requests WHERE billable"))
    assert billed > 0
    assert Decimal(server.scalar("SELECT sum(cost) FROM spend_hour WHERE billable")) == billed


def test_demo_without_a_server_says_so() -> None:
    with pytest.raises(OtelCostError) as caught:
        run_demo("http://127.0.0.1:9", calls=10)
    assert "nothing answers at 127.0.0.1:9" in caught.value.message
    assert "start `otel-cost serve` first" in caught.value.message
