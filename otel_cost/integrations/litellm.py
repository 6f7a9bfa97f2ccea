"""LiteLLM proxy: every request asks otel-cost's cap state before it reaches a model.

`OtelCostCaps` is a LiteLLM custom callback. Its `async_pre_call_hook` turns the request's virtual key
(team, organization, key alias, ...) and metadata into otel-cost dimensions, asks `decide()` (from
memory: the cap state is kept fresh by a background long poll), then rejects a blocked request with
HTTP 429 and the reason, rewrites the model of a downgraded one, and lets the rest through.

    # custom_callbacks.py, beside the proxy's config.yaml
    import os
    from otel_cost.integrations.litellm import OtelCostCaps

    otel_cost_caps = OtelCostCaps("http://otel-cost:8318", token=os.environ["OTEL_COST_READ_TOKEN"])

    # config.yaml
    litellm_settings:
      callbacks: custom_callbacks.otel_cost_caps

Dimensions (`DEFAULT_DIMENSIONS`; change any with `dimensions=`): each is an ordered list of sources,
the first non-empty value wins, mirroring otel-cost's `litellm` attribution preset so a request is
matched against caps under the same owner its spend is recorded under:

    team         key:team_alias, key:team_id              else "unattributed"
    cost_center  key:org_id                               else cost_centers[team], else the team
    feature      key:key_alias, metadata:feature          else the service
    agent        metadata:agent, key:agent_id             else not set
    service      (none)                                   else `service` (OTEL_SERVICE_NAME, "litellm")
    environment  (none)                                   else `environment` (OTEL_ENVIRONMENT_NAME, "production")
    provider     (none)                                   else not set (unknown before routing)
    model        the model the client asked for (`data["model"]`)

Sources: `key:FIELD` (a field of LiteLLM's `UserAPIKeyAuth`: team_alias, team_id, key_alias, org_id,
user_id, end_user_id, agent_id, project_id, ...), `key_metadata:NAME` (the virtual key's metadata),
`team_metadata:NAME` (its team's metadata), `metadata:NAME` (the request's `metadata`) and
`header:NAME` (a request header). Key and team values are set by the proxy's admin; request metadata
and headers are whatever the client sends, so a budget that must hold against a client belongs on a
key or team dimension.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..config import SCOPE_DIMENSIONS
from ..gateway import STALE_REASON, CapsClient, Decision, FailMode
from ..model import UNATTRIBUTED

try:
    from litellm.integrations.custom_logger import CustomLogger
    from litellm.proxy._types import ProxyException, UserAPIKeyAuth
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("otel_cost.integrations.litellm needs LiteLLM: pip install litellm") from exc

__all__ = ["DEFAULT_DIMENSIONS", "OtelCostCaps"]

logger = logging.getLogger(__name__)

#: dimension -> ordered sources; the first that yields a non-empty value wins.
DEFAULT_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "team": ("key:team_alias", "key:team_id"),
    "cost_center": ("key:org_id",),
    "feature": ("key:key_alias", "metadata:feature"),
    "agent": ("metadata:agent", "key:agent_id"),
    "service": (),
    "environment": (),
    "provider": (),
}
_SOURCE_KINDS = ("key", "key_metadata", "team_metadata", "metadata", "header")
# How long a request that arrives before the first document may wait for it (only while the first
# poll is still in flight: a refused connection fails at once and the fail mode applies).
_FIRST_DOCUMENT_WAIT_SECONDS = 2.0
_Reader = Callable[[Any, Mapping[str, Any]], object]


def _text(value: object) -> str | None:
    """A usable dimension value: a non-empty string, or an integer id written as one."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _entry(mapping: object, name: str) -> object:
    return mapping.get(name) if isinstance(mapping, Mapping) else None


def _request_metadata(data: Mapping[str, Any], name: str) -> object:
    # Most routes carry it as `metadata`; a few (e.g. /v1/messages, batches) as `litellm_metadata`.
    value = _entry(data.get("metadata"), name)
    return value if value is not None else _entry(data.get("litellm_metadata"), name)


def _header(data: Mapping[str, Any], name: str) -> object:
    headers = _entry(data.get("proxy_server_request"), "headers")
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():  # header names arrive in the client's case
        if isinstance(key, str) and key.lower() == name:
            return value
    return None


def _reader(dimension: str, index: int, source: str) -> _Reader:
    kind, _, name = source.partition(":")
    where = f"dimensions.{dimension}[{index}]"
    if kind not in _SOURCE_KINDS or not name:
        raise ValueError(
            f"{where}: unknown source {source!r}; write key:FIELD, key_metadata:NAME, team_metadata:NAME, "
            "metadata:NAME or header:NAME"
        )
    if kind == "key":
        if name not in UserAPIKeyAuth.model_fields:
            raise ValueError(f"{where}: LiteLLM's UserAPIKeyAuth has no field {name!r} (got {source!r})")
        return lambda key, data: getattr(key, name, None)
    if kind == "key_metadata":
        return lambda key, data: _entry(getattr(key, "metadata", None), name)
    if kind == "team_metadata":
        return lambda key, data: _entry(getattr(key, "team_metadata", None), name)
    if kind == "metadata":
        return lambda key, data: _request_metadata(data, name)
    lowered = name.lower()
    return lambda key, data: _header(data, lowered)


class OtelCostCaps(CustomLogger):
    """A LiteLLM proxy callback enforcing otel-cost cap state (see the module docstring).

    `url`, `token`, `fail_mode`, `wait_seconds`, `timeout_seconds` configure the `CapsClient`, which
    starts polling at once. `dimensions` replaces the sources of the dimensions it names (an empty list
    leaves only the fallback); `cost_centers` maps teams to cost centers like the server's
    `attribution.cost_centers`; `service` and `environment` are this proxy's own, as its spans name
    them (by default LiteLLM's: OTEL_SERVICE_NAME, else "litellm"; OTEL_ENVIRONMENT_NAME, else
    "production").
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        fail_mode: FailMode = "open",
        wait_seconds: float = 30.0,
        timeout_seconds: float = 10.0,
        dimensions: Mapping[str, Sequence[str]] | None = None,
        cost_centers: Mapping[str, str] | None = None,
        service: str | None = None,
        environment: str | None = None,
    ) -> None:
        super().__init__()
        sources = dict(DEFAULT_DIMENSIONS)
        for dimension, listed in (dimensions or {}).items():
            if dimension not in sources:
                known = ", ".join(name for name in SCOPE_DIMENSIONS if name != "model")
                raise ValueError(
                    f"dimensions: unknown dimension {dimension!r}; known: {known} (the model is the request's)"
                )
            if isinstance(listed, str):
                raise ValueError(f"dimensions.{dimension}: expected a list of sources (got the string {listed!r})")
            sources[dimension] = tuple(listed)
        self._readers = tuple(
            (dimension, tuple(_reader(dimension, index, source) for index, source in enumerate(listed)))
            for dimension, listed in sources.items()
            if listed
        )
        self._cost_centers = dict(cost_centers or {})
        self._service = service or os.environ.get("OTEL_SERVICE_NAME") or "litellm"
        self._environment = environment or os.environ.get("OTEL_ENVIRONMENT_NAME") or "production"
        self._client_options: dict[str, Any] = {
            "token": token,
            "fail_mode": fail_mode,
            "wait_seconds": wait_seconds,
            "timeout_seconds": timeout_seconds,
        }
        self._url = url
        self._pid = os.getpid()
        self._started_at = time.monotonic()
        self._client = CapsClient(url, **self._client_options).start()

    @property
    def client(self) -> CapsClient:
        """The cap state client, polling (restarted in a process forked after construction)."""
        if self._pid != os.getpid():
            # Forked after construction (proxy workers): the polling thread stayed in the parent. Drop
            # the inherited client without closing it, since its socket is the parent's too.
            self._client = CapsClient(self._url, **self._client_options).start()
            self._pid = os.getpid()
            self._started_at = time.monotonic()
        return self._client

    async def _first_document(self, client: CapsClient) -> None:
        """Right after start, let a request wait (without blocking the loop) for the first poll."""
        deadline = self._started_at + _FIRST_DOCUMENT_WAIT_SECONDS
        while client.version is None and client.last_error is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def attributes(self, user_api_key_dict: UserAPIKeyAuth | None, data: Mapping[str, Any]) -> dict[str, str]:
        """The request's dimensions (without the model), as `decide()` matches them against caps."""
        found: dict[str, str] = {}
        for dimension, readers in self._readers:
            for read in readers:
                value = _text(read(user_api_key_dict, data))
                if value is not None:
                    found[dimension] = value
                    break
        # The server's fallbacks, so "unattributed" and default cost-center budgets apply here too.
        team = found.setdefault("team", UNATTRIBUTED)
        found.setdefault("cost_center", self._cost_centers.get(team, team))
        service = found.setdefault("service", self._service)
        found.setdefault("environment", self._environment)
        found.setdefault("feature", service)
        return found

    async def async_pre_call_hook(
        self,
        user_api_key_dict: UserAPIKeyAuth,
        cache: Any,
        data: dict[str, Any],
        call_type: str,
    ) -> dict[str, Any]:
        """Reject (429), downgrade (rewrite `data["model"]`) or pass the request, before routing."""
        model = data.get("model")
        if not isinstance(model, str) or not model:
            return data  # nothing a budget prices by model (e.g. an MCP tool call)
        client = self.client
        if client.version is None:
            await self._first_document(client)
        decision = client.decide(self.attributes(user_api_key_dict, data), model)
        if decision.action == "block":
            logger.debug("otel-cost blocked a %s request for %s: %s", call_type, model, decision.reasons)
            raise _blocked(decision)
        if decision.action == "downgrade" and decision.model != model:
            logger.debug("otel-cost downgraded %s to %s: %s", model, decision.model, decision.reasons)
            data["model"] = decision.model
        return data


def _blocked(decision: Decision) -> ProxyException:
    """The exception the proxy answers with a 429 as it is (its handler keeps a ProxyException's code)."""
    stale = decision.reasons[:1] == (STALE_REASON,)
    # A spent budget does not come back in the seconds an SDK's retries wait: tell OpenAI SDKs not to
    # retry. Stale state (fail-closed) may clear at once, so that one stays retryable.
    headers = {} if stale else {"x-should-retry": "false"}
    return ProxyException(
        message="otel-cost: request blocked: " + "; ".join(decision.reasons),
        type="budget_exceeded",
        param=None,
        code=429,
        headers=headers,
    )
