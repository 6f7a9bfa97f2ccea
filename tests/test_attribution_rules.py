"""Attribution rules end to end: spans from the real OTel SDK and exporter, through the real receiver,
attributed by configured rules, stored with the rule that named each dimension."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from otel_cost.attribution import PRESET_EXAMPLES, PRESETS
from otel_cost.config import load_config
from otel_cost.errors import ConfigError

from .helpers import RunningServer, send_with_sdk_span

CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 100,
}


def send(server: RunningServer, span: Mapping[str, Any], resource: Mapping[str, Any]) -> dict[str, Any]:
    span_id = send_with_sdk_span(server, {**CHAT, **span}, resource=resource)
    rows = server.query(
        "SELECT cost_center, team, feature, agent, environment, owner_source, owner_rules, tags "
        f"FROM requests WHERE span_id = '{span_id}'"
    ).dicts()
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_attributes_a_realistic_span(make_server: Callable[..., RunningServer], preset: str) -> None:
    assert sorted(PRESET_EXAMPLES) == sorted(PRESETS)  # every preset has its example span
    span, resource, expected = PRESET_EXAMPLES[preset]
    server = make_server({"attribution": {"presets": [preset]}})
    row = send(server, span, resource)
    for dimension, value in expected.items():
        assert row[dimension] == value, (dimension, row)
        rule = row["owner_rules"][dimension]
        if dimension in PRESETS[preset]:
            assert rule.startswith(f"preset:{preset} "), rule
    if preset != "otel_agents":  # the built-in agent keys are the OTel ones: that preset is for explicit lists
        # Without the preset, the same span says nothing the built-in keys understand.
        plain = send(make_server(), span, resource)
        assert any(plain[dimension] != value for dimension, value in expected.items())


def test_regex_rules_capture_or_map_a_service_name_to_a_team(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(
        {
            "attribution": {
                "dimensions": {
                    "team": [
                        {"regex": "^search-", "from": "resource:service.name", "value": "search"},
                        {"regex": "^([a-z]+)-svc$", "from": "resource:service.name"},
                    ]
                }
            }
        }
    )
    fixed = send(server, {}, {"service.name": "search-ranker"})
    captured = send(server, {}, {"service.name": "billing-svc"})
    neither = send(server, {}, {"service.name": "mystery"})
    assert (fixed["team"], fixed["owner_source"]) == ("search", "regex:resource:service.name:^search-")
    assert (captured["team"], captured["owner_source"]) == ("billing", "regex:resource:service.name:^([a-z]+)-svc$")
    assert (neither["team"], neither["owner_source"]) == ("unattributed", "unattributed")


def test_service_catalog_and_cost_center_table(make_server: Callable[..., RunningServer], tmp_path: Path) -> None:
    catalog = tmp_path / "services.yaml"
    catalog.write_text(
        "services:\n"
        "  search-api: {team: search, cost_center: CC-2001, feature: search}\n"
        "  checkout-assistant: {team: payments}\n"
    )
    server = make_server(
        {
            "attribution": {
                "service_catalog": str(catalog),
                "cost_centers": {"payments": "CC-1042", "search": "CC-2001"},
            }
        }
    )
    search = send(server, {}, {"service.name": "search-api"})
    checkout = send(server, {}, {"service.name": "checkout-assistant"})
    assert (search["team"], search["cost_center"], search["feature"]) == ("search", "CC-2001", "search")
    assert search["owner_rules"]["team"] == "catalog:services.yaml"
    assert (checkout["team"], checkout["cost_center"], checkout["feature"]) == (
        "payments",
        "CC-1042",
        "checkout-assistant",
    )
    assert checkout["owner_rules"]["cost_center"] == "cost_centers:payments"
    # A span's own team still wins over the catalog (the built-in order: span, catalog, resource).
    override = send(server, {"app.team": "search"}, {"service.name": "checkout-assistant"})
    assert (override["team"], override["owner_source"]) == ("search", "span:app.team")


def test_first_match_wins_in_the_configured_order(make_server: Callable[..., RunningServer]) -> None:
    span = {"app.team": "from-span"}
    resource = {"service.name": "svc", "team": "from-resource"}
    span_first = make_server({"attribution": {"dimensions": {"team": ["span:app.team", "resource:team"]}}})
    resource_first = make_server({"attribution": {"dimensions": {"team": ["resource:team", "span:app.team"]}}})
    assert send(span_first, span, resource)["team"] == "from-span"
    assert send(resource_first, span, resource)["team"] == "from-resource"
    # A source that yields nothing (missing or blank) passes to the next one.
    assert send(span_first, {"app.team": "  "}, resource)["team"] == "from-resource"


def test_a_span_with_no_usable_metadata_is_unattributed(server: RunningServer) -> None:
    row = send(server, {"user.id": "u-1"}, {"service.name": "unknown_service:python"})
    assert (row["cost_center"], row["team"], row["feature"], row["owner_source"]) == (
        "unattributed",
        "unattributed",
        "unattributed",
        "unattributed",
    )
    assert row["owner_rules"] == {"cost_center": "team", "team": "unattributed", "feature": "unattributed"}


def test_tags_baggage_and_json_sources(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(
        {
            "attribution": {
                "tags": {
                    "customer": ["span:app.customer", "baggage:customer"],
                    "tier": [{"json": "tier", "from": "span:metadata"}],
                }
            }
        }
    )
    row = send(server, {"baggage.customer": "acme", "metadata": '{"tier": "gold"}'}, {"service.name": "svc"})
    assert row["tags"] == {"customer": "acme", "tier": "gold"}
    assert row["owner_rules"]["tag:customer"] == "baggage:customer"
    assert send(server, {}, {"service.name": "svc"})["tags"] == {}


def test_a_dimension_that_explodes_is_capped_into_other(make_server: Callable[..., RunningServer]) -> None:
    # A user id mapped into `team` by mistake: past max_values the rollups get "other", not one row per user.
    server = make_server({"attribution": {"max_values": 10, "dimensions": {"team": ["span:user.id"]}}})
    teams = [send(server, {"user.id": f"user-{n}"}, {"service.name": "svc"})["team"] for n in range(13)]
    assert teams[:10] == [f"user-{n}" for n in range(10)]
    assert teams[10:] == ["other"] * 3
    assert send(server, {"user.id": "user-3"}, {"service.name": "svc"})["team"] == "user-3"  # known values stay
    capped = server.query("SELECT owner_source FROM requests WHERE team = 'other' LIMIT 1").rows[0][0]
    assert capped == "span:user.id (capped)"
    assert server.scalar("SELECT uniqExact(team) FROM spend_minute") == 11


@pytest.mark.parametrize(
    ("attribution", "expected"),
    [
        ("  dimensions:\n    team: ['spann:x']\n", ":3: attribution.dimensions.team.0: unknown source 'spann:x'"),
        (
            "  dimensions:\n    team:\n      - {regex: '(', from: 'span:x'}\n",
            ":4: attribution.dimensions.team.0.regex: bad regular expression '('",
        ),
        ("  presets: [litelm]\n", ":2: attribution.presets.0: unknown preset 'litelm'"),
        ("  dimensions:\n    squad: ['span:x']\n", ":3: attribution.dimensions.squad: unknown dimension 'squad'"),
        ("  tags:\n    team: ['span:x']\n", ":3: attribution.tags.team: tag name 'team' must be snake_case"),
    ],
)
def test_config_errors_name_their_path(tmp_path: Path, attribution: str, expected: str) -> None:
    path = tmp_path / "otel-cost.yaml"
    path.write_text("attribution:\n" + attribution)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert f"{path}{expected}" in caught.value.message, caught.value.message
    assert len(caught.value.message.splitlines()) == 1  # one problem, one line (no union noise)


def test_a_catalog_entry_with_an_unknown_cost_center_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "services.yaml").write_text("services:\n  search-api:\n    team: search\n    cost_center: CC-9\n")
    path = tmp_path / "otel-cost.yaml"
    path.write_text("attribution:\n  service_catalog: services.yaml\n  cost_centers: {search: CC-2001}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.message == (
        f"{tmp_path / 'services.yaml'}:4: services.search-api.cost_center: unknown cost center 'CC-9' "
        "(attribution.cost_centers names CC-2001)"
    )
