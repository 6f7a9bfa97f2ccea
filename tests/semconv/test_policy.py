"""Content never lands; secrets are redacted (DESIGN "Principles" 6)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from otel_cost.attribution import DIMENSION_SOURCES
from otel_cost.semconv import redact_values, to_dict
from otel_cost.semconv.keys import FIELD_SOURCES
from otel_cost.semconv.policy import _CONTENT_EXACT, _CONTENT_PREFIXES, CONTENT, KEEP, REDACTED, SECRET, classify_key

from ..helpers import key_values


class Unreadable:
    """A KeyValue whose value must not be touched: reading it fails the test."""

    def __init__(self, key: str) -> None:
        self.key = key

    @property
    def value(self) -> Any:
        raise AssertionError(f"the value of {self.key!r} was read")


def attributes(values: dict[str, Any]) -> dict[str, Any]:
    return to_dict(key_values(values))


# --- content -----------------------------------------------------------------------------------------

CONTENT_KEYS = sorted(
    {
        *_CONTENT_EXACT,
        *(prefix + suffix for prefix in _CONTENT_PREFIXES for suffix in ("0.content", "value", "0.message.role")),
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.prompt",
        "gen_ai.prompt.0.content",
        "gen_ai.completion.0.tool_calls.0.arguments",
        "llm.input_messages.0.message.content",
        "llm.output_messages.0.message.contents.0.message_content.text",
        "llm.prompts.0",
        "input.value",
        "output.value",
        "input.mime_type",
        "ai.prompt",
        "ai.prompt.messages",
        "ai.response.text",
        "ai.toolCall.args",
        "traceloop.entity.input",
        "traceloop.entity.output",
        "langfuse.observation.input",
        "all_messages_events",
        # OpenInference: embedding inputs, retrieved and reranked documents, whole message lists.
        "embedding.embeddings",
        "embedding.embeddings.0.embedding.text",
        "embedding.embeddings.0.embedding.vector",
        "retrieval.documents",
        "retrieval.documents.0.document.content",
        "retrieval.documents.3.document.metadata",
        "reranker.query",
        "reranker.input_documents.0.document.content",
        "reranker.output_documents.0.document.content",
        "llm.prompts",
        "llm.input_messages",
        "llm.output_messages",
    }
)


@pytest.mark.parametrize("key", CONTENT_KEYS)
def test_content_attributes_never_appear(key: str) -> None:
    assert classify_key(key) == CONTENT
    out = attributes({key: "Tell me the patient's diagnosis", "gen_ai.usage.input_tokens": 12})
    assert out == {"gen_ai.usage.input_tokens": 12}


def test_content_values_are_never_read() -> None:
    key_values_list = [Unreadable(key) for key in CONTENT_KEYS]
    assert to_dict(key_values_list) == {}


def test_content_inside_a_map_value_is_dropped() -> None:
    out = attributes({"metadata": {"prompt": "secret plan", "input.value": "x", "team": "search", "n": [1, 2]}})
    assert out == {"metadata": {"team": "search", "n": [1, 2]}}


def test_content_inside_a_list_of_maps_is_dropped() -> None:
    out = attributes({"app.steps": [{"messages": ["hi"], "step": 1}, {"completion": "yo", "step": 2}]})
    assert out == {"app.steps": [{"step": 1}, {"step": 2}]}


# --- what must be kept -----------------------------------------------------------------------------------

FIELD_KEYS = sorted({key for keys in FIELD_SOURCES.values() for key in keys})
OWNER_KEYS = sorted({key for keys in DIMENSION_SOURCES.values() for key in keys})
KEPT_KEYS = sorted(
    {
        *FIELD_KEYS,
        *OWNER_KEYS,
        "service.name",
        "service.namespace",
        "deployment.environment.name",
        "metadata.user_api_key_alias",
        "metadata.user_api_key_team_id",
        "metadata.user_api_key_team_alias",
        "metadata.user_api_key_hash",
        "metadata.user_api_key_user_id",
        "metadata.user_api_key_org_id",
        "gen_ai.request.max_tokens",
        "gen_ai.usage.input_tokens",
        "llm.token_count.prompt",
        "ai.usage.totalTokens",
        "gen_ai.agent.name",
        "user.id",
        "session.id",
        "traceloop.association.properties.team",
        "langfuse.trace.tags",
        "ai.telemetry.functionId",
        "gen_ai.tool.name",
        "server.address",
    }
)


@pytest.mark.parametrize("key", KEPT_KEYS)
def test_usage_and_attribution_keys_are_kept(key: str) -> None:
    # Every key the normalizer or the attributor reads must survive the policy, or spend is lost.
    assert classify_key(key) == KEEP
    assert attributes({key: "value-1"}) == {key: "value-1"}


# --- secret-named keys ---------------------------------------------------------------------------------

SECRET_KEYS = [
    "http.request.header.authorization",
    "http.request.header.proxy-authorization",
    "http.request.header.x-api-key",
    "http.request.header.cookie",
    "http.response.header.set-cookie",
    "metadata.user_api_key",
    "x-api-key",
    "openai.api_key",
    "gen_ai.openai.api_key",
    "anthropic.apikey",
    "api_key",
    "API_KEY",
    "azure.client_secret",
    "db.password",
    "app.passwd",
    "oauth.access_token",
    "oauth.refresh_token",
    "oidc.id_token",
    "auth_token",
    "github.token",
    "aws.secret_access_key",
    "aws.access_key",
    "gcp.credentials",
    "gcp.credential",
    "tls.private_key",
    "webhook.secret",
    "session_key",
    "langfuse.api-token",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_named_attributes_are_redacted_unread(key: str) -> None:
    assert classify_key(key) == SECRET
    assert to_dict([Unreadable(key)]) == {key: REDACTED}
    assert attributes({key: "hunter2", "team": "search"}) == {key: REDACTED, "team": "search"}


def test_secret_named_keys_inside_maps_are_redacted() -> None:
    out = attributes({"litellm.params": {"api_key": "abc", "model": "gpt-4o", "headers": {"Authorization": "x"}}})
    assert out == {"litellm.params": {"api_key": REDACTED, "model": "gpt-4o", "headers": {"Authorization": REDACTED}}}


def test_repeated_key_keeps_the_last_value() -> None:
    assert to_dict(key_values({"team": "a"}) + key_values({"team": "b"})) == {"team": "b"}


def test_scalar_types_survive() -> None:
    out = attributes({"s": "x", "i": 3, "f": 0.5, "b": True, "raw": b"\x00\x01", "l": ["a", 1]})
    assert out == {"s": "x", "i": 3, "f": 0.5, "b": True, "raw": b"\x00\x01", "l": ["a", 1]}
    assert to_dict([KeyValue(key="empty")]) == {}  # a key without a value carries nothing


# --- secret-looking values ------------------------------------------------------------------------------

SECRETS = {
    "openai project key": "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 2,
    "openai legacy key": "sk-" + "T3BlbkFJ" * 6,
    "openai service account": "sk-svcacct-" + "a1B2c3D4e5F6g7H8i9J0" * 2,
    "anthropic key": "sk-ant-api03-" + "x9Y8z7W6v5U4t3S2r1Q0" * 4 + "-AA",
    "langfuse secret key": "sk-lf-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d",
    "aws access key id": "AKIAIOSFODNN7EXAMPLE",
    "aws session key id": "ASIAY34FZKBOKMUTVV7A",
    "google api key": "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    "google oauth token": "ya29.a0AfH6SMBx3xK9L2mN4pQ7rS8tU1vW2xY3z",
    "github classic token": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "github fine-grained token": "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ",
    "slack bot token": "xoxb-2048-1024-" + "aBcDeFgHiJkLmNoPqRsTuVwX",
    "stripe live key": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "stripe test key": "rk_test_" + "51H8s9dK3lP0qR7tU2vW",
    "hugging face token": "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567",
    "bearer header": "Bearer abc.def.ghi",
    "bearer jwt header": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXZhbHVl",
    "basic header": "Basic dXNlcjpwYXNzd29yZA==",
    "jwt": "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.Sf1KxwRJSMeKKF2QT4fw",
}


@pytest.mark.parametrize("secret", list(SECRETS.values()), ids=list(SECRETS))
def test_secret_values_are_redacted_in_any_attribute(secret: str) -> None:
    attrs: dict[str, Any] = {"app.note": f"using {secret} today", "exact": secret, "gen_ai.usage.input_tokens": 5}
    assert redact_values(attrs) == 2
    assert attrs == {"app.note": f"using {REDACTED} today", "exact": REDACTED, "gen_ai.usage.input_tokens": 5}


@pytest.mark.parametrize("secret", list(SECRETS.values()), ids=list(SECRETS))
def test_secret_values_are_redacted_in_nested_lists_and_maps(secret: str) -> None:
    attrs: dict[str, Any] = {
        "app.config": {"endpoint": "https://api.example.com", "auth": {"header": secret}, "retries": 3},
        "app.history": ["clean", [f"x {secret}"], {"k": secret}],
        "app.clean": ["gpt-4o", {"team": "search"}],
    }
    assert redact_values(attrs) == 2
    assert attrs == {
        "app.config": {"endpoint": "https://api.example.com", "auth": {"header": REDACTED}, "retries": 3},
        "app.history": ["clean", [f"x {REDACTED}"], {"k": REDACTED}],
        "app.clean": ["gpt-4o", {"team": "search"}],
    }


def test_pem_private_key_body_is_redacted_too() -> None:
    # Redacting only the BEGIN line would leave the key material itself in storage.
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\nMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3S"
    attrs: dict[str, Any] = {
        "full": f"key:\n-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\nafter",
        "cut": f"-----BEGIN OPENSSH PRIVATE KEY-----\n{body}",  # truncated by the sender: redact to the end
        "header": "-----BEGIN EC PRIVATE KEY-----",
        "nested": ["x", {"k": f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----"}],
        "public": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
    }
    assert redact_values(attrs) == 4
    assert attrs == {
        "full": f"key:\n{REDACTED}\nafter",
        "cut": REDACTED,
        "header": REDACTED,
        "nested": ["x", {"k": REDACTED}],
        "public": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
    }


def test_redact_values_counts_changed_attributes() -> None:
    attrs: dict[str, Any] = {
        "a": f"{SECRETS['openai project key']} and {SECRETS['aws access key id']}",
        "b": SECRETS["jwt"],
        "c": "clean",
    }
    assert redact_values(attrs) == 2
    assert attrs == {"a": f"{REDACTED} and {REDACTED}", "b": REDACTED, "c": "clean"}


CLEAN_VALUES: dict[str, Any] = {
    "model": "gpt-4o-2024-08-06",
    "bedrock model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "response id": "chatcmpl-9hQvK2mXn3Lp4Rs5Tu6Vw7Xy",
    "anthropic message id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "short sk": "sk-short",
    "trace id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
    "url": "https://api.openai.com/v1/chat/completions",
    "email": "alice@example.com",
    # Words ending in "sk" before a hyphenated name are not OpenAI keys: service, team and feature names.
    "service name": "risk-assessment-service-prod",
    "queue name": "task-queue-processor-main",
    "app name": "flask-app-production-server",
    "desk": "help-desk-ticket-summarizer-v2",
    "int": 1200,
    "float": 0.0042,
    "bool": True,
    "none": None,
    "list": ["gpt-4o", 1, 2.5, False],
    "map": {"team": "search", "tier": "flex"},
}


def test_clean_values_are_untouched() -> None:
    attrs = dict(CLEAN_VALUES)
    assert redact_values(attrs) == 0
    assert attrs == CLEAN_VALUES


def test_clean_values_next_to_a_secret_are_untouched() -> None:
    attrs = {**CLEAN_VALUES, "leak": SECRETS["anthropic key"]}
    assert redact_values(attrs) == 1
    assert attrs == {**CLEAN_VALUES, "leak": REDACTED}


def test_empty_attributes() -> None:
    assert redact_values({}) == 0
    assert redact_values({"a": None}) == 0


@pytest.mark.parametrize(
    "prose",
    ["basic research platform", "Basic research-platform", "bearer of responsibility", "Bearer responsibility"],
)
def test_prose_that_mentions_bearer_or_basic_is_not_a_credential(prose: str) -> None:
    attrs: dict[str, Any] = {"app.team_description": prose}
    assert redact_values(attrs) == 0
    assert attrs == {"app.team_description": prose}
