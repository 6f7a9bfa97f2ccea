"""`otel-cost prices`: a model's prices with their sources, unpriced models and emitter cost drift from
spans sent through a real server into real chDB, and override files checked line by line."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from otel_cost.cli import cli
from otel_cost.config import load_config
from otel_cost.pricing import CATALOG_VERSION
from otel_cost.pricing.overrides import Rule

from .helpers import NOW_NS, RunningServer, chat_attributes, make_request, make_span
from .test_dedup import export

HOUR_NS = 3600 * 1_000_000_000


def prices(*args: str) -> Result:
    return CliRunner().invoke(cli, ["prices", *args])


def table_rows(output: str) -> list[list[str]]:
    """The rows of the first table in `output` (after its dashes line), cells split on 2+ spaces."""
    lines = output.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("---"))
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip() or line.startswith("("):
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def closed_api() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("command", ["show", "unpriced", "drift", "check"])
def test_every_prices_command_has_help_with_examples(command: str) -> None:
    result = prices(command, "--help")
    assert result.exit_code == 0
    assert f"otel-cost prices {command}" in result.output.split("Examples:", 1)[1]
    group = prices("--help")
    assert f"  {command} " in group.output


# --- show ----------------------------------------------------------------------------------------


def test_show_a_catalog_model_per_million_tokens_exactly() -> None:
    result = prices("show", "gpt-4o", "--provider", "openai", "--at", "2026-11-30")
    assert result.exit_code == 0, result.output
    assert "price_version  genai-prices@0.2.3" in result.output
    rows = table_rows(result.output)
    assert ["any", "input", "2.5", "1M tokens", "catalog openai/gpt-4o"] in rows
    assert ["any", "cache_read", "1.25", "1M tokens", "catalog openai/gpt-4o"] in rows
    assert ["any", "output", "10", "1M tokens", "catalog openai/gpt-4o"] in rows
    assert ["any", "per_request", "0", "1K requests", "catalog openai/gpt-4o"] in rows

    document = json.loads(prices("show", "gpt-4o", "--at", "2026-11-30", "--format", "json").output)
    assert document["price_version"] == CATALOG_VERSION
    assert document["priced_model"] == "gpt-4o"
    assert document["at"] == "2026-11-30T12:00:00Z"
    [tier] = document["tiers"]
    assert tier["above_prompt_tokens"] == 0
    by_class = {price["class"]: price for price in tier["prices"]}
    assert by_class["input"] == {"class": "input", "usd": "2.5", "per": "1M tokens", "source": "catalog openai/gpt-4o"}
    assert by_class["output"]["usd"] == "10"


def test_show_a_multiplier_override_from_its_effective_day_on(tmp_path: Path) -> None:
    config = tmp_path / "otel-cost.yaml"
    config.write_text(
        "pricing:\n"
        "  overrides:\n"
        "    - name: openai-contract\n"
        "      provider: openai\n"
        "      model: gpt-4o\n"
        '      multiplier: "0.80"\n'
        "      effective_from: 2026-12-01\n"
    )
    identity = Rule(load_config(config).pricing.overrides[0]).identity
    assert re.fullmatch(r"openai-contract#[0-9a-f]{8}", identity)

    def shown(day: str) -> dict[str, Any]:
        result = prices(
            "show", "gpt-4o", "--provider", "openai", "--at", day, "--config", str(config), "--format", "json"
        )
        assert result.exit_code == 0, result.output
        document: dict[str, Any] = json.loads(result.output)
        return document

    before = shown("2026-11-30")
    assert before["price_version"] == CATALOG_VERSION
    prices_before = {price["class"]: (price["usd"], price["source"]) for price in before["tiers"][0]["prices"]}
    assert prices_before["input"] == ("2.5", "catalog openai/gpt-4o")

    after = shown("2026-12-01")
    assert after["price_version"] == f"{CATALOG_VERSION}+{identity}"
    source = f"catalog openai/gpt-4o x 0.8 (override {identity})"
    prices_after = {price["class"]: (price["usd"], price["source"]) for price in after["tiers"][0]["prices"]}
    assert prices_after["input"] == ("2", source)
    assert prices_after["cache_read"] == ("1", source)
    assert prices_after["output"] == ("8", source)

    table = prices("show", "gpt-4o", "--provider", "openai", "--at", "2026-12-01", "--config", str(config))
    assert ["any", "output", "8", "1M tokens", source] in table_rows(table.output)
    assert f"price_version  {CATALOG_VERSION}+{identity}" in table.output


def test_show_a_deployment_alias_as_the_model_it_serves(tmp_path: Path) -> None:
    config = tmp_path / "otel-cost.yaml"
    config.write_text(
        "pricing:\n"
        "  overrides:\n"
        "    - name: azure-prod-gpt4o\n"
        "      deployment: my-gpt4o-prod\n"
        "      provider: openai\n"
        "      model: gpt-4o\n"
    )
    identity = Rule(load_config(config).pricing.overrides[0]).identity
    result = prices("show", "my-gpt4o-prod", "--provider", "azure", "--at", "2026-11-30", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "model          my-gpt4o-prod (priced as gpt-4o)" in result.output
    assert f"price_version  {CATALOG_VERSION}+{identity}" in result.output
    assert ["any", "input", "2.5", "1M tokens", "catalog openai/gpt-4o"] in table_rows(result.output)
    # Without the config, nothing knows the deployment name.
    assert prices("show", "my-gpt4o-prod", "--provider", "azure", "--at", "2026-11-30").exit_code == 1


def test_show_long_context_tiers() -> None:
    result = prices("show", "gemini-2.5-pro", "--provider", "gcp.gemini", "--at", "2026-11-30")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    source = "catalog google/gemini-2.5-pro"
    assert ["<= 200,000", "input", "1.25", "1M tokens", source] in rows
    assert ["<= 200,000", "cache_read", "0.125", "1M tokens", source] in rows
    assert ["<= 200,000", "output", "10", "1M tokens", source] in rows
    assert ["> 200,000", "input", "2.5", "1M tokens", source] in rows
    assert ["> 200,000", "output", "15", "1M tokens", source] in rows
    assert "past 200,000 prompt tokens" in result.output and "every token of the request" in result.output

    document = json.loads(prices("show", "gemini-2.5-pro", "--provider", "gcp.gemini", "--format", "json").output)
    assert [tier["above_prompt_tokens"] for tier in document["tiers"]] == [0, 200_000]


def test_show_an_unpriced_model_says_why() -> None:
    result = prices("show", "gpt-9", "--provider", "openai", "--at", "2026-11-30")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: gpt-9 for provider openai is not priced on 2026-11-30: "
        "model 'gpt-9' is not in the price catalog for provider 'openai'\n"
    )


def test_show_refuses_a_date_it_cannot_read() -> None:
    result = prices("show", "gpt-4o", "--at", "30/11/2026")
    assert result.exit_code == 2
    assert "'30/11/2026' does not match the format '%Y-%m-%d'" in result.stderr


# --- unpriced ------------------------------------------------------------------------------------


def llama(start_ns: int) -> Any:
    return make_span(
        chat_attributes(
            **{
                "gen_ai.provider.name": "vllm",
                "gen_ai.request.model": "llama-3.3-70b",
                "gen_ai.response.model": "llama-3.3-70b",
            }
        ),
        start_ns=start_ns,
    )


def test_unpriced_lists_models_no_price_covers(server: RunningServer, store_url: str) -> None:
    export(
        server,
        make_request(
            [llama(NOW_NS), llama(NOW_NS + HOUR_NS), make_span(chat_attributes())],
            resource={"service.name": "lab-assistant", "team": "research"},
        ),
        make_request([llama(NOW_NS + 2 * HOUR_NS)], resource={"service.name": "search-api", "team": "search"}),
    )
    result = prices("unpriced", "--api", server.api_url, "--format", "json")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"(answered by the server at {server.api_url})\n"
    assert json.loads(result.stdout) == [
        {
            "provider": "vllm",
            "model": "llama-3.3-70b",
            "calls": 3,
            "input_tokens": 3600,
            "cache_tokens": 0,
            "output_tokens": 900,
            "first_seen": "2026-11-29 22:30:05",  # span end: NOW_NS plus one second
            "last_seen": "2026-11-30 00:30:05",
            "teams": ["research", "search"],
            "services": ["lab-assistant", "search-api"],
            "unpriced_reason": "provider 'vllm' is not in the price catalog",
        }
    ]

    as_csv = prices("unpriced", "--api", server.api_url, "--format", "csv")
    assert as_csv.stdout.splitlines()[0] == (
        '"provider","model","calls","input_tokens","cache_tokens","output_tokens","first_seen","last_seen",'
        '"teams","services","unpriced_reason"'
    )
    assert as_csv.stdout.splitlines()[1].startswith('"vllm","llama-3.3-70b",3,3600,0,900,')

    # From a day on, straight from the store when no server answers.
    api = closed_api()
    table = prices("unpriced", "--since", "2026-11-30", "--api", api, "--store", store_url)
    assert table.exit_code == 0, table.output
    assert table.stderr.startswith(f"(no server at {api}; opened chdb:")
    [row] = table_rows(table.stdout)
    assert row[:8] == ["vllm", "llama-3.3-70b", "1", "1200", "0", "300", "2026-11-30 00:30:05", "2026-11-30 00:30:05"]
    assert row[8:] == ['["search"]', '["search-api"]', "provider 'vllm' is not in the price catalog"]


# --- drift ---------------------------------------------------------------------------------------


def openlit_span(claim: float) -> Any:
    """OpenLIT's attributes: legacy gen_ai.system, its own price lookup's result in gen_ai.usage.cost."""
    return make_span(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.cost": claim,
        }
    )


def test_drift_shows_an_emitter_claiming_zero_beside_our_exact_cost(make_server: Callable[..., RunningServer]) -> None:
    server = make_server()
    # gpt-4o: 1200 * $2.50/MTok + 300 * $10/MTok = $0.006 a call. One claim of 0 (OpenLIT's lookup
    # failed), one right; a call from another emitter without a claim is not compared.
    export(
        server,
        make_request([openlit_span(0.0), openlit_span(0.006)], scope="openlit.otel.tracing", scope_version="1.34.0"),
        make_request([make_span(chat_attributes())]),
    )
    result = prices("drift", "--api", server.api_url, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "emitter": "openlit.otel.tracing@1.34.0",
            "provider": "openai",
            "model": "gpt-4o",
            "calls_with_claim": 2,
            "disagreeing": 1,
            "our_cost": "0.012",
            "their_cost": "0.006",
            "difference": "-0.006",
        }
    ]
    table = prices("drift", "--api", server.api_url)
    assert table_rows(table.stdout) == [
        ["openlit.otel.tracing@1.34.0", "openai", "gpt-4o", "2", "1", "0.012", "0.006", "-0.006"]
    ]
    # Differences up to --min-difference are an emitter's rounding, not drift.
    tolerant = prices("drift", "--api", server.api_url, "--min-difference", "0.006", "--format", "json")
    assert json.loads(tolerant.stdout) == []
    strict = prices("drift", "--api", server.api_url, "--min-difference", "0.005999", "--format", "json")
    assert [row["disagreeing"] for row in json.loads(strict.stdout)] == [1]


def test_drift_refuses_a_negative_threshold() -> None:
    result = prices("drift", "--min-difference", "-1")
    assert result.exit_code == 2
    assert "must be a non-negative amount in USD (got '-1')" in result.stderr


# --- check ---------------------------------------------------------------------------------------

GOOD = """\
pricing:
  overrides:
    - name: azure-prod-gpt4o
      deployment: my-gpt4o-prod
      provider: openai
      model: gpt-4o
    - name: anthropic-contract-2026
      provider: anthropic
      model: claude-sonnet-4-5
      multiplier: "0.80"
      effective_from: 2026-12-01
      effective_until: 2027-12-01
    - name: self-hosted-llama
      provider: vllm
      model: llama-3.3-70b
      prices: {input_mtok: "0.10", output_mtok: "0.40"}
"""

BAD = """\
pricing:
  overrides:
    - name: contract-2026
      provider: anthropic
      model: claude-sonnet-4-5
      multiplier: "0.80"
      effective_from: 2026-12-01
    - name: contract-2027
      provider: anthropic
      model: claude-sonnet-4-5
      multiplier: "0.75"
      effective_from: 2027-01-01
    - name: lab-model
      provider: vllm
      model: llama-9
      multiplier: "0.5"
    - name: typo
      provider: openai
      model: gpt-4o
      multiplyer: "0.9"
"""


def test_check_accepts_a_good_file_and_summarizes_each_override(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    identities = [Rule(override).identity for override in load_config(path).pricing.overrides]
    result = prices("check", str(path))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "ok: 3 overrides",
        f"  {identities[0]}: deployment my-gpt4o-prod -> openai/gpt-4o, always",
        f"  {identities[1]}: model anthropic/claude-sonnet-4-5 x 0.80, from 2026-12-01 until 2027-12-01",
        f"  {identities[2]}: model vllm/llama-3.3-70b at input_mtok 0.10, output_mtok 0.40, always",
    ]


def test_check_names_every_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    result = prices("check", str(path))
    assert result.exit_code == 1
    # The unknown key alone stops load_config before it compares overrides; check reports all three.
    assert result.stdout.splitlines() == [
        f"{path}:12: pricing.overrides.1.effective_from: 'contract-2027' overlaps 'contract-2026' (override #0) "
        "for the same model: corrections are new entries whose dates follow the old one's effective_until",
        f"{path}:15: pricing.overrides.2.model: model 'llama-9' is not in the price catalog for provider 'vllm': "
        "add prices to price it",
        f"{path}:20: pricing.overrides.3.multiplyer: unknown key 'multiplyer' in 'pricing.overrides.3'",
    ]
    assert result.stderr == f"Error: {path}: 3 problems\n"


def test_check_without_the_unknown_key_reports_each_problem_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD.rsplit("    - name: typo", 1)[0])
    result = prices("check", str(path))
    assert result.exit_code == 1
    assert [line.split(": ", 2)[1] for line in result.stdout.splitlines()] == [
        "pricing.overrides.1.effective_from",
        "pricing.overrides.2.model",
    ]
    assert result.stderr == f"Error: {path}: 2 problems\n"


def test_check_a_file_that_does_not_exist(tmp_path: Path) -> None:
    result = prices("check", str(tmp_path / "none.yaml"))
    assert result.exit_code == 1
    assert result.stdout == f"{tmp_path}/none.yaml: cannot read config file: No such file or directory\n"
