"""Presets: where the emitters people run put ownership metadata, per owner dimension.

Enabled by name (`attribution.presets`); each one's sources are consulted in the order listed, before
the built-in keys (or wherever `preset:NAME` appears in a dimension's own list). The example span of
each preset is what its README entry shows and what the tests send.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS", "PRESET_EXAMPLES"]

# dimension -> sources (the same text or {regex|json, from} forms as attribution.dimensions)
PRESETS: dict[str, dict[str, list[Any]]] = {
    # LiteLLM proxy: the virtual key's team, organization and key alias ride on every request span.
    "litellm": {
        "team": ["span:metadata.user_api_key_team_alias", "span:metadata.user_api_key_team_id"],
        "cost_center": ["span:metadata.user_api_key_org_id"],
        "feature": ["span:metadata.user_api_key_alias"],
    },
    # OpenLLMetry: `Traceloop.set_association_properties({...})` and the workflow decorator's name.
    "openllmetry": {
        "team": ["span:traceloop.association.properties.team"],
        "cost_center": ["span:traceloop.association.properties.cost_center"],
        "feature": ["span:traceloop.association.properties.feature", "span:traceloop.workflow.name"],
        "agent": ["span:traceloop.association.properties.agent"],
    },
    # Langfuse: trace metadata (`langfuse.trace.metadata.*`) and the trace's name.
    "langfuse": {
        "team": ["span:langfuse.trace.metadata.team"],
        "cost_center": ["span:langfuse.trace.metadata.cost_center"],
        "feature": ["span:langfuse.trace.metadata.feature", "span:langfuse.trace.name"],
        "agent": ["span:langfuse.trace.metadata.agent"],
    },
    # Vercel AI SDK: `experimental_telemetry: {functionId, metadata}`.
    "vercel_ai": {
        "team": ["span:ai.telemetry.metadata.team"],
        "cost_center": ["span:ai.telemetry.metadata.costCenter", "span:ai.telemetry.metadata.cost_center"],
        "feature": ["span:ai.telemetry.functionId", "span:ai.telemetry.metadata.feature"],
        "agent": ["span:ai.telemetry.metadata.agent"],
    },
    # OpenInference: `using_metadata({...})` puts a JSON object in the `metadata` attribute.
    "openinference": {
        "team": [{"json": "team", "from": "span:metadata"}],
        "cost_center": [{"json": "cost_center", "from": "span:metadata"}],
        "feature": [{"json": "feature", "from": "span:metadata"}],
        "agent": [{"json": "agent", "from": "span:metadata"}, "span:agent.name"],
    },
    # OpenTelemetry GenAI agent spans and their children.
    "otel_agents": {
        "agent": ["span:gen_ai.agent.name", "span:gen_ai.agent.id"],
    },
    # The resource's `service.namespace` (the spec's own example of an owning team).
    "service_namespace": {
        "team": ["resource:service.namespace"],
    },
}

#: One realistic span's attributes per preset (span, resource) and the owner they should give.
PRESET_EXAMPLES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, str]]] = {
    "litellm": (
        {
            "metadata.user_api_key_team_id": "team-7f3a",
            "metadata.user_api_key_team_alias": "search",
            "metadata.user_api_key_org_id": "org-research",
            "metadata.user_api_key_alias": "search-rerank-prod",
            "metadata.user_api_key_hash": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        },
        {"service.name": "litellm-proxy"},
        {"team": "search", "cost_center": "org-research", "feature": "search-rerank-prod"},
    ),
    "openllmetry": (
        {
            "traceloop.association.properties.team": "support",
            "traceloop.association.properties.user_id": "u-1842",
            "traceloop.workflow.name": "ticket_triage",
            "traceloop.entity.path": "ticket_triage.classify",
        },
        {"service.name": "support-bot"},
        {"team": "support", "feature": "ticket_triage"},
    ),
    "langfuse": (
        {
            "langfuse.trace.name": "invoice-extraction",
            "langfuse.trace.metadata.team": "finance-ops",
            "langfuse.trace.metadata.cost_center": "CC-4410",
            "langfuse.trace.tags": ["prod", "extraction"],
            "user.id": "u-99",
            "session.id": "s-3",
        },
        {"service.name": "invoices"},
        {"team": "finance-ops", "cost_center": "CC-4410", "feature": "invoice-extraction"},
    ),
    "vercel_ai": (
        {
            "ai.telemetry.functionId": "product-description",
            "ai.telemetry.metadata.team": "catalog",
            "ai.telemetry.metadata.costCenter": "CC-3100",
            "ai.operationId": "ai.generateText.doGenerate",
        },
        {"service.name": "storefront"},
        {"team": "catalog", "cost_center": "CC-3100", "feature": "product-description"},
    ),
    "openinference": (
        {
            "metadata": '{"team": "data-platform", "feature": "sql-assistant", "agent": "sql-writer"}',
            "openinference.span.kind": "LLM",
            "tag.tags": ["beta"],
        },
        {"service.name": "analytics"},
        {"team": "data-platform", "feature": "sql-assistant", "agent": "sql-writer"},
    ),
    "otel_agents": (
        {"gen_ai.agent.name": "refund-agent", "gen_ai.agent.id": "asst_5j66UpCpwteGg4YSxUnt7lPY"},
        {"service.name": "refunds", "team": "payments"},
        {"team": "payments", "agent": "refund-agent"},
    ),
    "service_namespace": (
        {},
        {"service.name": "ranker", "service.namespace": "search"},
        {"team": "search", "feature": "ranker"},
    ),
}
