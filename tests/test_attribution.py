"""Who pays: span attributes, then resource attributes; nobody -> `unattributed`, visibly."""

from __future__ import annotations

from typing import Any

import pytest

from otel_cost.attribution import DIMENSION_SOURCES, Attributor
from otel_cost.model import UNATTRIBUTED, Owner


def owner(span: dict[str, Any] | None = None, resource: dict[str, Any] | None = None) -> Owner:
    attributor = Attributor()
    return attributor.attribute(span or {}, attributor.resource(resource or {}))


def core(found: Owner) -> tuple[str, ...]:
    """The six dimensions and the team's rule (tags and the per-dimension rules are checked apart)."""
    return tuple(found[:6])


def test_nothing_known_is_unattributed() -> None:
    assert core(owner()) == (UNATTRIBUTED, UNATTRIBUTED, UNATTRIBUTED, "", "", "unattributed")
    assert UNATTRIBUTED == "unattributed"


def test_resource_team() -> None:
    got = owner(resource={"service.name": "checkout-assistant", "team": "payments"})
    assert core(got) == ("payments", "payments", "checkout-assistant", "", "", "resource:team")


def test_span_attributes_win_over_the_resource() -> None:
    resource = {
        "service.name": "checkout-assistant",
        "team": "payments",
        "cost_center": "CC-1",
        "feature": "refunds",
        "agent": "resource-agent",
        "deployment.environment.name": "prod",
    }
    span = {
        "app.team": "search",
        "app.cost_center": "CC-2",
        "app.feature": "autocomplete",
        "gen_ai.agent.name": "doc-triage",
        "environment": "staging",
    }
    assert core(owner(span, resource)) == ("CC-2", "search", "autocomplete", "doc-triage", "staging", "span:app.team")


def test_each_dimension_falls_back_to_the_resource_separately() -> None:
    resource = {"team": "payments", "feature": "refunds", "deployment.environment": "prod"}
    got = owner({"gen_ai.agent.id": "agent-7"}, resource)
    assert core(got) == ("payments", "payments", "refunds", "agent-7", "prod", "resource:team")


@pytest.mark.parametrize("key", DIMENSION_SOURCES["team"])
def test_every_team_key(key: str) -> None:
    assert core(owner({key: "search"})) == ("search", "search", UNATTRIBUTED, "", "", f"span:{key}")
    assert owner(resource={key: "search"}).source == f"resource:{key}"


def test_team_keys_in_order() -> None:
    keys = DIMENSION_SOURCES["team"]
    span = {key: f"team-{rank}" for rank, key in reversed(list(enumerate(keys)))}
    assert owner(span).team == "team-0"
    assert owner({keys[-1]: "last", keys[1]: "second"}).source == f"span:{keys[1]}"


@pytest.mark.parametrize("key", DIMENSION_SOURCES["cost_center"])
def test_every_cost_center_key(key: str) -> None:
    assert owner({key: "CC-1042"}, {"team": "payments"}).cost_center == "CC-1042"


def test_cost_center_defaults_to_the_team() -> None:
    assert owner({"team": "payments"}).cost_center == "payments"
    assert owner(resource={"owner.team": "ml-platform"}).cost_center == "ml-platform"


def test_cost_center_without_a_team_is_still_unattributed_spend() -> None:
    got = owner({"cost_center": "CC-9"})
    assert (got.cost_center, got.team, got.source) == ("CC-9", UNATTRIBUTED, "unattributed")


def test_feature_falls_back_to_the_service_name() -> None:
    assert owner(resource={"service.name": "search-api"}).feature == "search-api"
    assert owner({"otel_cost.feature": "rerank"}, {"service.name": "search-api"}).feature == "rerank"
    assert owner(resource={"service.name": "search-api", "feature": "ranking"}).feature == "ranking"


@pytest.mark.parametrize("service", ["unknown_service", "unknown_service:python", "unknown_service:node", "  "])
def test_sdk_default_service_name_is_not_an_owner(service: str) -> None:
    attributor = Attributor()
    resource = attributor.resource({"service.name": service})
    assert resource.service_name == service.strip()  # stored as sent, but owns nothing
    assert resource.owner_key == ""
    assert core(attributor.attribute({}, resource)) == (
        UNATTRIBUTED,
        UNATTRIBUTED,
        UNATTRIBUTED,
        "",
        "",
        "unattributed",
    )


def test_agent_from_name_then_id() -> None:
    assert owner({"gen_ai.agent.name": "triage", "gen_ai.agent.id": "asst_1"}).agent == "triage"
    assert owner({"gen_ai.agent.id": "asst_1"}).agent == "asst_1"
    assert owner({"gen_ai.agent.id": "asst_1", "agent": "x"}).agent == "asst_1"
    assert owner({"app.agent": "planner"}).agent == "planner"
    assert owner({}, {"gen_ai.agent.name": "from-resource"}).agent == "from-resource"
    assert owner({"team": "a"}).agent == ""


def test_environment_from_the_new_then_the_old_attribute() -> None:
    both = {"deployment.environment.name": "prod", "deployment.environment": "production-old"}
    assert owner(resource=both).environment == "prod"
    assert owner(resource={"deployment.environment": "production-old"}).environment == "production-old"
    assert owner(resource={"environment": "dev"}).environment == "dev"
    assert owner().environment == ""


def test_values_are_stripped_and_cut_to_128_characters() -> None:
    got = owner({"team": "  search  ", "feature": "f" * 300}, {"service.name": " svc "})
    assert (got.team, got.feature) == ("search", "f" * 128)
    assert Attributor().resource({"service.name": " " + "s" * 200}).service_name == "s" * 128
    assert owner(resource={"team": "t" * 129}).team == "t" * 128


def test_blank_values_do_not_count() -> None:
    got = owner({"team": "   ", "app.team": ""}, {"team": "payments"})
    assert (got.team, got.source) == ("payments", "resource:team")
    assert owner({"team": None}).team == UNATTRIBUTED


def test_non_string_values_are_text() -> None:
    got = owner({"team": 42, "cost_center": 1042})
    assert (got.team, got.cost_center) == ("42", "1042")


def test_span_without_owner_keys_reuses_the_resource_owner() -> None:
    attributor = Attributor()
    resource = attributor.resource({"team": "payments", "service.name": "checkout"})
    assert attributor.attribute({"gen_ai.request.model": "gpt-4o"}, resource) is resource.owner


def test_resource_owner_is_computed_once() -> None:
    resource = Attributor().resource({"team": "payments", "service.name": "checkout"})
    assert core(resource.owner) == ("payments", "payments", "checkout", "", "", "resource:team")
    assert resource.first["team"] == (4, "payments", "resource:team")  # the first rule after the four span keys
    assert resource.first["agent"] is None


def test_booleans_read_as_the_store_writes_them() -> None:
    # Stored attributes say true/false; attribution reads the same text, so re-attribution agrees.
    assert owner({"team": True}).team == "true"
    assert owner({"team": False}).team == "false"
