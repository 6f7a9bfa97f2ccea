"""otel_cost.gateway against the real server: spans go through the real OTLP receiver, the enforcer turns
their spend into caps, and the sync and async clients read them over `GET /v1/caps` (long poll, ETag)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from otel_cost.gateway import STALE_REASON, AsyncCapsClient, CapsClient, CapsError, Decision

from .helpers import RunningServer, chat_attributes, send_with_sdk_span

# One chat_attributes() call (gpt-4o, 1,200 input and 300 output tokens) costs 0.006 USD: a limit of
# 0.01 puts one call at 60% of a budget and two at 120%.
LIMIT = "0.01"


@pytest.fixture
def budget_server(make_server: Callable[..., RunningServer]) -> Callable[..., RunningServer]:
    """`make_server` with budgets, a fast enforcer and the given stale_after_seconds and read tokens."""

    def make(
        budgets: Sequence[dict[str, Any]], *, stale_after_seconds: int = 30, read_tokens: Sequence[str] = ()
    ) -> RunningServer:
        enforcer = {"interval_seconds": 0.2, "stale_after_seconds": stale_after_seconds}
        return make_server({"budgets": list(budgets), "enforcer": enforcer, "api": {"read_tokens": list(read_tokens)}})

    return make


def spend(server: RunningServer, team: str, service: str, *, calls: int = 1, **resource: str) -> None:
    """`calls` model calls (0.006 USD each) through the real OTel SDK exporter and receiver."""
    owner = {"service.name": service, "team": team, "deployment.environment.name": "staging", **resource}
    for _ in range(calls):
        send_with_sdk_span(server, chat_attributes(), resource=owner)


def spend_as_agent(server: RunningServer, agent: str, *, calls: int) -> None:
    owner = {"service.name": "triage-worker", "team": "support", "deployment.environment.name": "prod"}
    for _ in range(calls):
        send_with_sdk_span(server, chat_attributes(**{"gen_ai.agent.name": agent}), resource=owner)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> float:
    """Seconds until `check()` held; fails after `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.005)
    return time.monotonic() - started


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def client() -> Iterator[Callable[..., CapsClient]]:
    started: list[CapsClient] = []

    def make(url: str, **options: Any) -> CapsClient:
        caps = CapsClient(url, **options).start()
        started.append(caps)
        return caps

    yield make
    for caps in started:
        caps.close()


def budget(name: str, scope: dict[str, str], **ladder: Any) -> dict[str, Any]:
    """A budget over the last 60 minutes with a limit of 0.01 USD."""
    return {"name": name, "scope": scope, "window": "60m", "limit": LIMIT, **ladder}


LADDER_BUDGETS = [
    budget("payments-alert", {"team": "payments"}, alert_at=["0.5"]),
    budget("checkout-downgrade", {"service": "checkout-*"}, downgrade_at="0.5", downgrade={"gpt-4o": "gpt-4o-mini"}),
    budget("search-block", {"team": "sea*"}, block_at="0.5"),
    budget("agent-guard", {"environment": "prod"}, per=["agent"], alert_at=["0.5"], block_at="1.0"),
    budget("ads-hourly", {"team": "ads"}, block_at="1.0"),
]


def test_decide_applies_the_most_severe_matching_cap_of_real_budgets(
    budget_server: Callable[..., RunningServer], client: Callable[..., CapsClient]
) -> None:
    server = budget_server(LADDER_BUDGETS)
    spend(server, "payments", "checkout-assistant")  # 60%: payments-alert alerts, checkout-downgrade downgrades
    spend(server, "search", "search-api")  # 60% of search-block: block
    spend_as_agent(server, "doc-triage", calls=2)  # 120% of doc-triage's own agent-guard cap: block
    spend_as_agent(server, "summarizer", calls=1)  # 60%: alert
    caps = client(server.api_url, wait_seconds=1)  # short held polls: the server stops sooner
    caps.wait_ready(10)
    eventually(lambda: caps.decide({"team": "search"}, "gpt-4o").action == "block")
    eventually(lambda: caps.decide({"environment": "prod", "agent": "summarizer"}, "gpt-4o").action == "alert")

    checkout = {"team": "payments", "service": "checkout-assistant", "environment": "staging"}
    decision = caps.decide(checkout, "gpt-4o")
    assert (decision.action, decision.model) == ("downgrade", "gpt-4o-mini")
    assert decision.budgets == ("checkout-downgrade", "payments-alert")  # the server's order: most severe first
    assert decision.reasons[0].startswith("checkout-downgrade: downgrade gpt-4o -> gpt-4o-mini: 60% of 0.01 USD")
    assert decision.reasons[1].startswith("payments-alert: alert: 60% of 0.01 USD spent (alert point 50% reached)")

    # The downgrade map has no entry for this model: that cap counts as an alert, and says so.
    decision = caps.decide(checkout, "claude-sonnet-4-5")
    assert (decision.action, decision.model) == ("alert", "claude-sonnet-4-5")
    assert decision.reasons[0].startswith(
        "checkout-downgrade: downgrade, but its map has no other model for 'claude-sonnet-4-5' (treated as alert)"
    )

    # A dimension the request does not carry never matches: without a service only the team's cap applies.
    assert caps.decide({"team": "payments"}, "gpt-4o") == Decision(
        "alert", "gpt-4o", caps.decide(checkout, "gpt-4o").reasons[1:], ("payments-alert",)
    )

    # Block beats downgrade beats alert; the model stays the requested one when blocked.
    decision = caps.decide({**checkout, "team": "search"}, "gpt-4o")
    assert (decision.action, decision.model) == ("block", "gpt-4o")
    assert decision.budgets == ("search-block", "checkout-downgrade")
    assert decision.reasons[0].startswith("search-block: block: 60% of 0.01 USD spent (hard point 50% reached)")

    # Wildcards: `sea*` is the team's whole value, anchored at both ends.
    assert caps.decide({"team": "seaside"}, "gpt-4o").action == "block"
    assert caps.decide({"team": "research"}, "gpt-4o") == Decision("allow", "gpt-4o", (), ())
    assert caps.decide({"team": "payments", "service": "checkout"}, "gpt-4o").action == "alert"  # not checkout-*

    # A `per` budget: each agent its own cap, scoped {environment: prod, agent: NAME}.
    assert caps.decide({"environment": "prod", "agent": "doc-triage"}, "gpt-4o").action == "block"
    assert caps.decide({"environment": "prod", "agent": "summarizer"}, "gpt-4o").action == "alert"
    assert caps.decide({"environment": "prod", "agent": "planner"}, "gpt-4o").action == "allow"
    assert caps.decide({"agent": "doc-triage"}, "gpt-4o").action == "allow"  # no environment: not in scope

    # An allow cap (ads-hourly has no spend) changes nothing and is not reported.
    assert caps.decide({"team": "ads"}, "gpt-4o") == Decision("allow", "gpt-4o", (), ())

    # From memory: no I/O on the request path (an HTTP round trip alone would take ~100 us here).
    started = time.perf_counter()
    for _ in range(10_000):
        caps.decide(checkout, "gpt-4o")
    assert (time.perf_counter() - started) / 10_000 < 50e-6


def test_stale_state_fails_open_or_closed(
    budget_server: Callable[..., RunningServer], client: Callable[..., CapsClient]
) -> None:
    server = budget_server([budget("payments-hourly", {"team": "payments"}, block_at="0.5")], stale_after_seconds=1)
    spend(server, "payments", "checkout-assistant")
    fail_open = client(server.api_url, fail_mode="open")
    fail_closed = client(server.api_url, fail_mode="closed")
    for caps in (fail_open, fail_closed):
        caps.wait_ready(10)
        eventually(lambda caps=caps: caps.decide({"team": "payments"}, "gpt-4o").action == "block")

    # Nothing changes for longer than stale_after_seconds: the 304s of the held polls keep it fresh.
    time.sleep(1.5)
    for caps in (fail_open, fail_closed):
        assert caps.decide({"team": "search"}, "gpt-4o") == Decision("allow", "gpt-4o", (), ())
        assert caps.decide({"team": "payments"}, "gpt-4o").action == "block"

    server.close()
    eventually(lambda: fail_open.decide({"team": "payments"}, "gpt-4o").reasons[:1] == (STALE_REASON,), 5)
    decision = fail_open.decide({"team": "payments"}, "gpt-4o")
    assert (decision.action, decision.model, decision.budgets) == ("allow", "gpt-4o", ())
    assert "stale after 1s" in decision.reasons[1]
    eventually(lambda: fail_closed.decide({"team": "search"}, "gpt-4o").reasons[:1] == (STALE_REASON,), 5)
    decision = fail_closed.decide({"team": "search"}, "gpt-4o")
    assert (decision.action, decision.model) == ("block", "gpt-4o")
    assert "last error: cannot read" in decision.reasons[1] and "Connection refused" in decision.reasons[1]


def test_no_server_at_all_is_stale_from_the_start(client: Callable[..., CapsClient]) -> None:
    url = f"http://127.0.0.1:{dead_port()}"
    caps = client(url, fail_mode="closed")
    with pytest.raises(CapsError, match=r"no cap state from http://127\.0\.0\.1:\d+/v1/caps within 0\.3s: cannot read"):
        caps.wait_ready(0.3)
    decision = caps.decide({"team": "payments"}, "gpt-4o")
    assert (decision.action, decision.reasons[0]) == ("block", STALE_REASON)
    assert decision.reasons[1].startswith(f"no cap state received from {url}/v1/caps yet; last error: cannot read")
    assert client(url, fail_mode="open").decide({}, "gpt-4o").action == "allow"


def test_a_guarded_server_needs_the_read_token(
    budget_server: Callable[..., RunningServer], client: Callable[..., CapsClient]
) -> None:
    hourly = budget("payments-hourly", {"team": "payments"}, block_at="1.0")
    server = budget_server([hourly], read_tokens=["gateway-read-token-1"])
    anonymous = client(server.api_url, wait_seconds=1)
    with pytest.raises(CapsError, match=r"answered 401: the token is missing or not in api\.read_tokens"):
        anonymous.wait_ready(0.5)
    trusted = client(server.api_url + "/v1/caps", token="gateway-read-token-1", wait_seconds=1)
    trusted.wait_ready(10)
    assert trusted.version is not None and trusted.last_error is None


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="fail_mode must be 'open' or 'closed' \\(got 'half'\\)"):
        CapsClient("http://127.0.0.1:8318", fail_mode="half")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"url must be the otel-cost API, e\.g\. http://otel-cost:8318"):
        CapsClient("otel-cost:8318")
    with pytest.raises(ValueError, match="wait_seconds must be > 0 and <= 55, the server's limit \\(got 120\\)"):
        CapsClient("http://127.0.0.1:8318", wait_seconds=120)


def test_sync_and_async_clients_follow_each_change_by_long_poll(
    budget_server: Callable[..., RunningServer], client: Callable[..., CapsClient]
) -> None:
    ladder = {"alert_at": ["0.5"], "downgrade_at": "1.0", "downgrade": {"claude-opus-4-8": "claude-haiku-4-5"}}
    server = budget_server([budget("payments-hourly", {"team": "payments"}, **ladder, block_at="1.5")])
    request = {"team": "payments", "feature": "checkout"}
    threaded = client(server.api_url, wait_seconds=20)  # held up to min(20, stale_after_seconds / 2) = 15 s
    threaded.wait_ready(10)
    steps = [
        ("alert", "claude-opus-4-8", "60% of 0.01 USD spent (alert point 50% reached)"),
        ("downgrade", "claude-haiku-4-5", "120% of 0.01 USD spent (downgrade point 100% reached)"),
        ("block", "claude-opus-4-8", "180% of 0.01 USD spent (hard point 150% reached)"),
    ]

    async def scenario() -> None:
        async with AsyncCapsClient(server.api_url, wait_seconds=20) as caps:
            await caps.wait_ready(10)
            for both in (threaded, caps):
                assert both.decide(request, "claude-opus-4-8") == Decision("allow", "claude-opus-4-8", (), ())
            for action, model, reason in steps:
                versions = (threaded.version, caps.version)
                await asyncio.sleep(0.2)  # both clients are in a held poll now
                started = time.monotonic()
                await asyncio.to_thread(spend, server, "payments", "checkout-assistant")
                # Polling every `wait` seconds would take up to 15 s: the held requests return on the change.
                while (threaded.version, caps.version) == versions or threaded.version != caps.version:
                    assert time.monotonic() - started < 5, f"{action}: the change did not arrive by long poll"
                    await asyncio.sleep(0.005)
                for both in (threaded, caps):
                    decision = both.decide(request, "claude-opus-4-8")
                    assert (decision.action, decision.model, decision.budgets) == (action, model, ("payments-hourly",))
                    assert decision.reasons[0].endswith(reason)
        assert caps.decide(request, "claude-opus-4-8").action == "block"  # closed: answers from memory

    asyncio.run(scenario())
    assert threaded.last_error is None


def test_the_async_client_fails_closed_without_a_server() -> None:
    async def scenario() -> None:
        async with AsyncCapsClient(f"http://127.0.0.1:{dead_port()}", fail_mode="closed") as caps:
            with pytest.raises(CapsError, match=r"within 0\.2s: cannot read .*Connection refused"):
                await caps.wait_ready(0.2)
            decision = caps.decide({"team": "payments"}, "gpt-4o")
            assert (decision.action, decision.model, decision.reasons[0]) == ("block", "gpt-4o", STALE_REASON)

    asyncio.run(scenario())
