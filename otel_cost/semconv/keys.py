"""Where each canonical field is found, per emitter. Earlier names win when a span carries several.

See `../shared/reference/genai-semconv.md` ("Legacy and vendor variants") for the sources.
"""

from __future__ import annotations

__all__ = [
    "AGGREGATE_OPERATIONS",
    "FIELD_SOURCES",
    "INDEX",
    "INFERENCE_OPERATIONS",
    "OPERATION_ALIASES",
    "PROVIDER_ALIASES",
    "TYPED_KEYS",
]

FIELD_SOURCES: dict[str, tuple[str, ...]] = {
    "input": (
        "gen_ai.usage.input_tokens",  # current semconv (inclusive of cache reads and writes)
        "gen_ai.usage.prompt_tokens",  # semconv <= 1.27, old OpenLLMetry, old LiteLLM
        "ai.usage.inputTokens",  # Vercel AI SDK >= 5
        "ai.usage.promptTokens",  # Vercel AI SDK < 5
        "llm.token_count.prompt",  # OpenInference
        "llm.usage.prompt_tokens",
    ),
    "output": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "ai.usage.outputTokens",
        "ai.usage.completionTokens",
        "llm.token_count.completion",
        "llm.usage.completion_tokens",
    ),
    "total": (
        "gen_ai.usage.total_tokens",
        "llm.usage.total_tokens",
        "ai.usage.totalTokens",
        "ai.usage.tokens",
        "llm.token_count.total",
    ),
    "cache_read": (
        "gen_ai.usage.cache_read.input_tokens",  # current semconv
        "gen_ai.usage.cache_read_input_tokens",  # OpenLLMetry <= 0.49
        "gen_ai.usage.details.cache_read_tokens",  # pydantic-ai / logfire
        "gen_ai.usage.prompt_tokens_details.cached_tokens",
        "ai.usage.inputTokenDetails.cacheReadTokens",  # Vercel AI SDK 6
        "ai.usage.cachedInputTokens",  # Vercel AI SDK 5
        "llm.token_count.prompt_details.cache_read",  # OpenInference
    ),
    "cache_write": (
        "gen_ai.usage.cache_write.input_tokens",  # semantic-conventions-genai main
        "gen_ai.usage.cache_creation.input_tokens",  # semconv 1.40-1.41
        "gen_ai.usage.cache_creation_input_tokens",  # OpenLLMetry <= 0.49
        "gen_ai.usage.details.cache_write_tokens",
        "ai.usage.inputTokenDetails.cacheWriteTokens",
        "llm.token_count.prompt_details.cache_write",
    ),
    "cache_write_1h": (
        "gen_ai.usage.cache_creation.ephemeral_1h_input_tokens",
        "gen_ai.usage.cache_write.1h.input_tokens",
        "gen_ai.usage.details.cache_write_1h_tokens",
    ),
    "reasoning": (
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",  # OpenLLMetry, OpenLIT
        "llm.usage.reasoning_tokens",
        "gen_ai.usage.details.reasoning_tokens",
        "ai.usage.reasoningTokens",
        "ai.usage.outputTokenDetails.reasoningTokens",
        "llm.token_count.completion_details.reasoning",
    ),
    # Per-modality counts: audio is priced apart by realtime and audio models.
    "input_audio": (
        "gen_ai.usage.details.input_audio_tokens",  # pydantic-ai / logfire
        "gen_ai.usage.prompt_tokens_details.audio_tokens",
        "llm.token_count.prompt_details.audio",  # OpenInference
    ),
    "output_audio": (
        "gen_ai.usage.details.output_audio_tokens",
        "gen_ai.usage.completion_tokens_details.audio_tokens",
        "llm.token_count.completion_details.audio",
    ),
    "request_model": (
        "gen_ai.request.model",
        "ai.model.id",
        "llm.request.model",
        "llm.request.model_name",
    ),
    "response_model": (
        "gen_ai.response.model",
        "ai.response.model",
        "llm.response.model",
        "llm.response.model_name",
        "llm.model_name",  # OpenInference: the model that answered
        "embedding.model_name",  # OpenInference EMBEDDING spans name their model here, not in llm.model_name
    ),
    "provider": (
        "gen_ai.provider.name",
        "gen_ai.system",  # replaced by gen_ai.provider.name in semconv 1.37
        "ai.model.provider",
        "llm.provider",
        "llm.system",
    ),
    "operation": (
        "gen_ai.operation.name",
        "llm.request.type",  # OpenLLMetry
        "ai.operationId",  # Vercel AI SDK
        "openinference.span.kind",  # OpenInference
        "traceloop.span.kind",  # OpenLLMetry workflows, tasks, agents, tools
    ),
    "response_service_tier": (
        "gen_ai.openai.response.service_tier",
        "openai.response.service_tier",
        "gen_ai.response.service_tier",
    ),
    "request_service_tier": (
        "gen_ai.openai.request.service_tier",
        "gen_ai.request.service_tier",
        "openai.request.service_tier",
    ),
    # No semantic convention names batch processing yet (2026-11). A call that carries the id of the batch
    # job it ran in (`gen_ai.batch.id`, as OpenAI batch instrumentations in Go and Java set it) was
    # served by a batch API; so was one whose service tier says "batch" (see `extract`).
    "batch_id": ("gen_ai.batch.id",),
    "emitter_cost": (
        "gen_ai.usage.cost",  # OpenLIT (often 0 when its own price lookup failed)
        "operation.cost",  # logfire
        "gen_ai.cost.total_cost",  # LiteLLM
        "gen_ai.cost.total",
        "llm.cost.total",  # OpenInference
        "gen_ai.usage.cost_usd",
    ),
    "error_type": ("error.type",),
    "conversation_id": ("gen_ai.conversation.id", "session.id"),
    "response_id": ("gen_ai.response.id",),
    # pydantic-ai's agent-run span carries the run's summed usage under `agent_name`.
    "pydantic_ai_agent": ("agent_name",),
}

#: attribute name -> (field, rank); rank 0 is the preferred source.
INDEX: dict[str, tuple[str, int]] = {
    name: (field, rank) for field, names in FIELD_SOURCES.items() for rank, name in enumerate(names)
}

#: Attributes whose values end up in typed columns (usage, models, provider, operation, ...): the
#: stored `attributes` map leaves them out. The batch id stays: `processing` only says "batch".
TYPED_KEYS = frozenset(name for name, (field, _) in INDEX.items() if field != "batch_id")

#: Operations that are one call to a model: billable.
INFERENCE_OPERATIONS = frozenset(
    {
        "chat",
        "generate_content",
        "text_completion",
        "embeddings",
        "completion",
        "responses",
        "create_response",
        "image_generation",
        "audio_transcription",
        "speech",
        "rerank",
    }
)

#: Operations whose usage (if any) sums their children's: stored non-billable, never billed again.
AGGREGATE_OPERATIONS = frozenset(
    {
        "invoke_agent",
        "create_agent",
        "execute_tool",
        "invoke_workflow",
        "retrieval",
        "agent",
        "workflow",
        "task",
        "tool",
        "chain",
        "retriever",
        "reranker",
        "guardrail",
        "evaluator",
    }
)

#: Emitter spellings of operations -> canonical semconv names.
OPERATION_ALIASES: dict[str, str] = {
    # OpenLLMetry llm.request.type
    "embedding": "embeddings",
    # OpenInference span kinds
    "llm": "chat",
    # Vercel AI SDK operation ids: the do* spans are the provider calls, the others wrap them.
    "ai.generatetext.dogenerate": "chat",
    "ai.streamtext.dostream": "chat",
    "ai.generateobject.dogenerate": "chat",
    "ai.streamobject.dostream": "chat",
    "ai.embed.doembed": "embeddings",
    "ai.embedmany.doembed": "embeddings",
    "ai.generatetext": "invoke_workflow",
    "ai.streamtext": "invoke_workflow",
    "ai.generateobject": "invoke_workflow",
    "ai.streamobject": "invoke_workflow",
    "ai.embed": "invoke_workflow",
    "ai.embedmany": "invoke_workflow",
    "ai.toolcall": "execute_tool",
}

#: `gen_ai.provider.name` / `gen_ai.system` / vendor spellings -> canonical provider names.
PROVIDER_ALIASES: dict[str, str] = {
    "openai": "openai",
    "openai.chat": "openai",
    "openai.responses": "openai",
    "openai.completion": "openai",
    "openai.embedding": "openai",
    "anthropic": "anthropic",
    "anthropic.messages": "anthropic",
    "aws.bedrock": "aws.bedrock",
    "aws": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "amazon-bedrock": "aws.bedrock",
    "amazon.bedrock": "aws.bedrock",
    "azure.ai.openai": "azure.ai.openai",
    "az.ai.openai": "azure.ai.openai",
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "azure-openai": "azure.ai.openai",
    "azure.ai.inference": "azure.ai.inference",
    "az.ai.inference": "azure.ai.inference",
    "gcp.gemini": "gcp.gemini",
    "gemini": "gcp.gemini",
    "google": "gcp.gemini",
    "google.generative-ai": "gcp.gemini",
    "gcp.vertex_ai": "gcp.vertex_ai",
    "vertex_ai": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "google.vertex": "gcp.vertex_ai",
    "gcp.gen_ai": "gcp.gen_ai",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "groq": "groq",
    "mistral_ai": "mistral_ai",
    "mistral": "mistral_ai",
    "mistralai": "mistral_ai",
    "perplexity": "perplexity",
    "x_ai": "x_ai",
    "xai": "x_ai",
    "ibm.watsonx.ai": "ibm.watsonx.ai",
    "together": "together",
    "together_ai": "together",
    "fireworks": "fireworks",
    "openrouter": "openrouter",
}
