"""The LiteLLM proxy callback against the real server and the real `litellm` package.

A request goes the way the proxy sends it: the callback's `async_pre_call_hook` with a real
`UserAPIKeyAuth`, then the (possibly rewritten) request through a real `litellm.Router` to an
OpenAI-compatible provider on loopback, which records the model it was asked for.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from otel_cost.gateway import STALE_REASON

from .helpers import RunningServer
from .test_gateway import budget, dead_port, eventually, spend
from .test_gateway import budget_server as budget_server  # noqa: PLC0414  (a fixture: used by its name)

MESSAGES = [{"role": "user", "content": "Summarize the refund policy."}]


@pytest.fixture(scope="module")
def lite() -> Iterator[SimpleNamespace]:
    """litellm and the integration, imported here rather than at collection (litellm takes seconds)."""
    with pytest.MonkeyPatch.context() as patch:
        # The price map bundled with litellm: without this, importing it downloads one (no network here).
        patch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        yield SimpleNamespace(
            litellm=importlib.import_module("litellm"),
            types=importlib.import_module("litellm.proxy._types"),
            DualCache=importlib.import_module("litellm.caching.dual_cache").DualCache,
            integration=importlib.import_module("otel_cost.integrations.litellm"),
        )


class FakeProvider:
    """An OpenAI-compatible chat completions endpoint on loopback that records each requested model."""

    def __init__(self) -> None:
        self.models: list[str] = []
        models = self.models

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                models.append(body["model"])
                answer = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 1_795_991_404,
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
                }
                out = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.api_base = f"http://127.0.0.1:{self._server.server_port}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    yield fake
    fake.close()


def test_the_callback_blocks_and_downgrades_real_litellm_requests(
    lite: SimpleNamespace, budget_server: Callable[..., RunningServer], provider: FakeProvider
) -> None:
    server = budget_server(
        [
            budget("payments-hourly", {"team": "payments"}, downgrade_at="0.5", downgrade={"gpt-4o": "gpt-4o-mini"}),
            budget("search-hourly", {"team": "search"}, block_at="0.5"),
        ]
    )
    spend(server, "payments", "checkout-assistant")  # 60% of each: payments downgrades, search blocks
    spend(server, "search", "search-api")
    hook = lite.integration.OtelCostCaps(server.api_url, wait_seconds=1)
    hook.client.wait_ready(10)
    eventually(lambda: hook.client.decide({"team": "search"}, "gpt-4o").action == "block")
    # The proxy only calls a pre-call hook defined on the callback's own class.
    assert "async_pre_call_hook" in vars(type(hook))
    router = lite.litellm.Router(
        model_list=[
            {
                "model_name": name,
                "litellm_params": {"model": f"openai/{name}", "api_base": provider.api_base, "api_key": "sk-fake"},
            }
            for name in ("gpt-4o", "gpt-4o-mini", "gpt-4.1")
        ]
    )

    def key(**fields: Any) -> Any:
        return lite.types.UserAPIKeyAuth(api_key="88dc28d0f030c55ed4ab77ed8faf0981", **fields)

    async def through_proxy(user: Any, model: str) -> Any:
        data = {"model": model, "messages": list(MESSAGES), "metadata": {"agent": "refund-bot"}}
        data = await hook.async_pre_call_hook(
            user_api_key_dict=user, cache=lite.DualCache(), data=data, call_type="acompletion"
        )
        return await router.acompletion(**data)

    async def scenario() -> None:
        payments = key(key_alias="checkout-prod", team_id="team-7f3a", team_alias="payments", org_id="org-fin")
        response = await through_proxy(payments, "gpt-4o")
        assert provider.models == ["gpt-4o-mini"]  # downgraded before routing
        assert response.choices[0].message.content == "ok"

        await through_proxy(payments, "gpt-4.1")  # not in the downgrade map: an alert, passed as asked
        assert provider.models[-1] == "gpt-4.1"

        search = key(key_alias="search-rerank", team_id="team-51b0", team_alias="search")
        with pytest.raises(lite.types.ProxyException) as blocked:
            await through_proxy(search, "gpt-4o")
        # The proxy's handler answers a ProxyException with its code as the HTTP status.
        assert (blocked.value.code, blocked.value.type) == ("429", "budget_exceeded")
        assert blocked.value.message == (
            "otel-cost: request blocked: search-hourly: block: 60% of 0.01 USD spent (hard point 50% reached)"
        )
        assert blocked.value.headers == {"x-should-retry": "false"}  # OpenAI SDKs: a spent budget is no blip

        await through_proxy(key(), "gpt-4o")  # a key without a team: unattributed, no cap
        assert provider.models == ["gpt-4o-mini", "gpt-4.1", "gpt-4o"]

    asyncio.run(scenario())


def test_dimensions_from_the_key_the_request_and_the_fallbacks(
    lite: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_ENVIRONMENT_NAME", raising=False)
    url = f"http://127.0.0.1:{dead_port()}"
    hook = lite.integration.OtelCostCaps(url)
    user = lite.types.UserAPIKeyAuth(
        api_key="k", key_alias="checkout-prod", team_id="team-7f3a", team_alias="payments", org_id="org-fin"
    )
    data = {"model": "gpt-4o", "metadata": {"agent": "refund-bot", "feature": "ignored: the key alias wins"}}
    assert hook.attributes(user, data) == {
        "team": "payments",
        "cost_center": "org-fin",
        "feature": "checkout-prod",
        "agent": "refund-bot",
        "service": "litellm",
        "environment": "production",
    }
    # No team, no org, no alias: the server's fallbacks (unattributed; the team; the service).
    bare = lite.integration.OtelCostCaps(url, service="gw-eu", environment="prod")
    assert bare.attributes(lite.types.UserAPIKeyAuth(api_key="k"), {"model": "gpt-4o"}) == {
        "team": "unattributed",
        "cost_center": "unattributed",
        "feature": "gw-eu",
        "service": "gw-eu",
        "environment": "prod",
    }
    custom = lite.integration.OtelCostCaps(
        url,
        dimensions={"team": ["key_metadata:owner", "key:team_id"], "agent": ["header:X-Agent"], "feature": []},
        cost_centers={"growth": "CC-7"},
    )
    user = lite.types.UserAPIKeyAuth(api_key="k", team_id="team-7f3a", metadata={"owner": "growth"})
    data = {"model": "gpt-4o", "proxy_server_request": {"headers": {"x-agent": "crawler"}}}
    attributes = custom.attributes(user, data)
    assert (attributes["team"], attributes["cost_center"], attributes["agent"]) == ("growth", "CC-7", "crawler")
    assert attributes["feature"] == attributes["service"]  # no source left: the fallback

    with pytest.raises(ValueError, match=r"dimensions\.team\[1\]: unknown source 'span:team'; write key:FIELD"):
        lite.integration.OtelCostCaps(url, dimensions={"team": ["key:team_alias", "span:team"]})
    with pytest.raises(ValueError, match=r"dimensions\.team\[0\]: LiteLLM's UserAPIKeyAuth has no field 'team_name'"):
        lite.integration.OtelCostCaps(url, dimensions={"team": ["key:team_name"]})
    with pytest.raises(ValueError, match="dimensions: unknown dimension 'owner'; known: cost_center, team"):
        lite.integration.OtelCostCaps(url, dimensions={"owner": ["key:team_alias"]})


def test_fail_closed_blocks_with_the_stale_reason(lite: SimpleNamespace) -> None:
    hook = lite.integration.OtelCostCaps(f"http://127.0.0.1:{dead_port()}", fail_mode="closed")
    user = lite.types.UserAPIKeyAuth(api_key="k", team_alias="payments")

    async def call(data: dict[str, Any]) -> Any:
        return await hook.async_pre_call_hook(
            user_api_key_dict=user, cache=lite.DualCache(), data=data, call_type="acompletion"
        )

    with pytest.raises(lite.types.ProxyException) as blocked:
        asyncio.run(call({"model": "gpt-4o", "messages": MESSAGES}))
    assert blocked.value.code == "429"
    assert blocked.value.message.startswith(f"otel-cost: request blocked: {STALE_REASON}; no cap state received")
    assert blocked.value.headers == {}  # stale state may clear at once: retrying is fine
    # A request that names no model (an MCP tool call) is not the cap state's business.
    assert asyncio.run(call({"name": "search_docs"})) == {"name": "search_docs"}
