"""Hygiene alerts through the real receiver: a model with no price, the unattributed share of today's
spend, floating aliases, and spend from an owner never seen before (after the warm-up)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ..helpers import (
    HookServer,
    RunningServer,
    chat_attributes,
    detector_runs,
    export,
    make_request,
    make_span,
    wait_for,
)

SECRET = "alert-secret-0123456789"
QUIET_RUNAWAY = {"agent_loop": {"enabled": False}, "retry_storm": {"enabled": False}, "spend_spike": {"enabled": False}}


def at(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000) - 1_000_000_000


def server_with(make_server: Callable[..., RunningServer], hook: HookServer, **hygiene: Any) -> RunningServer:
    return make_server(
        {
            "alerts": {
                "interval_seconds": 0.2,
                "sinks": [{"kind": "webhook", "url": hook.url, "secret": SECRET}],
                "runaway": QUIET_RUNAWAY,
                "hygiene": hygiene,
            }
        }
    )


def of_kind(hook: HookServer, kind: str) -> list[dict[str, Any]]:
    return [body for body in hook.bodies() if body["kind"] == kind]


def test_an_unpriced_model_and_unattributed_spend_are_alerted_once(
    make_server: Callable[..., RunningServer], hooks: Callable[..., HookServer]
) -> None:
    hook = hooks()
    server = server_with(make_server, hook, floating_aliases=False, new_owners=[])
    now = datetime.now(UTC)
    self_hosted = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "vllm",
        "gen_ai.request.model": "acme-llm-7b-instruct",
        "gen_ai.usage.input_tokens": 2_000,
        "gen_ai.usage.output_tokens": 500,
    }
    unpriced = [make_span(self_hosted, start_ns=at(now - timedelta(minutes=step))) for step in range(3)]
    export(server, make_request(unpriced, resource={"service.name": "notebook", "team": "research"}))
    # 1 USD owned by payments (gpt-4o: 2.50 per million input tokens), 2.50 USD owned by nobody: 71%
    gpt4o = chat_attributes(**{"gen_ai.response.model": "gpt-4o", "gen_ai.usage.output_tokens": 0})
    owned = make_span({**gpt4o, "gen_ai.usage.input_tokens": 400_000}, start_ns=at(now))
    orphan = make_span({**gpt4o, "gen_ai.usage.input_tokens": 1_000_000}, start_ns=at(now))
    export(server, make_request([owned], resource={"service.name": "checkout", "team": "payments"}))
    export(server, make_request([orphan], resource={"service.name": "labs-prototype"}))

    wait_for(lambda: of_kind(hook, "unpriced_model") and of_kind(hook, "unattributed_share"), what="both alerts")
    (alert,) = of_kind(hook, "unpriced_model")
    assert alert["subject"] == {"provider": "vllm", "model": "acme-llm-7b-instruct"}
    assert alert["title"] == "Unpriced model: vllm/acme-llm-7b-instruct (3 calls with no price)"
    assert (alert["evidence"]["calls"], alert["evidence"]["input_tokens"]) == (3, 6000)
    assert alert["evidence"]["unpriced_reason"] == "provider 'vllm' is not in the price catalog"
    assert set(alert["evidence"]["sample_span_ids"]) == {span.span_id.hex() for span in unpriced}
    assert "otel-cost reprice" in alert["message"]

    (share,) = of_kind(hook, "unattributed_share")
    assert share["title"] == "Unattributed spend at 71% of today's 3.5 USD"
    assert (share["evidence"]["unattributed_usd"], share["evidence"]["total_usd"]) == ("2.5", "3.5")
    assert share["evidence"]["top_services"] == [{"service": "labs-prototype", "calls": 1, "cost_usd": "2.5"}]

    export(server, make_request([make_span(self_hosted, start_ns=at(now))], resource={"service.name": "notebook"}))
    detector_runs(server, 3)
    assert len(of_kind(hook, "unpriced_model")) == 1 and len(of_kind(hook, "unattributed_share")) == 1


def test_a_floating_alias_is_reported_with_what_served_it(
    make_server: Callable[..., RunningServer], hooks: Callable[..., HookServer]
) -> None:
    hook = hooks()
    server = server_with(make_server, hook, unpriced_models=False, unattributed_share=None, new_owners=[])
    now = datetime.now(UTC)
    alias = chat_attributes(**{"gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06"})
    pinned = chat_attributes(
        **{"gen_ai.request.model": "gpt-4o-mini-2024-07-18", "gen_ai.response.model": "gpt-4o-mini-2024-07-18"}
    )
    spans = [
        make_span(alias, start_ns=at(now)),
        make_span(alias, start_ns=at(now)),
        make_span(pinned, start_ns=at(now)),
    ]
    export(server, make_request(spans, resource={"service.name": "checkout", "team": "payments"}))
    (alert,) = wait_for(lambda: of_kind(hook, "floating_alias"), what="the floating-alias alert")
    assert alert["subject"] == {"provider": "openai", "model": "gpt-4o"}
    assert alert["evidence"]["served_by"] == ["gpt-4o-2024-08-06"] and alert["evidence"]["calls"] == 2
    assert alert["severity"] == "info" and "checkout" in alert["message"]
    detector_runs(server, 3)
    assert len(of_kind(hook, "floating_alias")) == 1


def test_spend_from_a_new_owner_is_alerted_after_the_warm_up_and_known_owners_are_not(
    make_server: Callable[..., RunningServer], hooks: Callable[..., HookServer]
) -> None:
    hook = hooks()
    server = server_with(
        make_server, hook, unpriced_models=False, unattributed_share=None, floating_aliases=False, new_owners=["team"]
    )
    now = datetime.now(UTC)
    call = chat_attributes()
    # payments first spent three days ago, inside the store's first day (the warm-up): not new today.
    export(server, make_request([make_span(call, start_ns=at(now - timedelta(days=3)))]))
    export(server, make_request([make_span(call, start_ns=at(now))]))
    detector_runs(server, 3)
    assert of_kind(hook, "new_owner") == []

    export(
        server,
        make_request(
            [make_span(call, start_ns=at(now)), make_span(call, trace_id=os.urandom(16), start_ns=at(now))],
            resource={"service.name": "growth-bot", "team": "growth"},
        ),
    )
    (alert,) = wait_for(lambda: of_kind(hook, "new_owner"), what="the new-owner alert")
    assert alert["subject"] == {"team": "growth"}
    assert alert["evidence"]["calls"] == 2 and alert["evidence"]["services"] == ["growth-bot"]
    assert alert["title"].startswith("New spender: team growth (")
    detector_runs(server, 3)
    assert len(of_kind(hook, "new_owner")) == 1


def test_on_a_new_store_every_owner_is_new_so_none_is_alerted_during_the_warm_up(
    make_server: Callable[..., RunningServer], hooks: Callable[..., HookServer]
) -> None:
    hook = hooks()
    server = server_with(
        make_server, hook, unpriced_models=False, unattributed_share=None, floating_aliases=False, new_owners=["team"]
    )
    now = datetime.now(UTC)
    for team in ("payments", "search", "growth"):
        export(server, make_request([make_span(chat_attributes(), start_ns=at(now))], resource={"team": team}))
    detector_runs(server, 3)
    assert hook.received == []
