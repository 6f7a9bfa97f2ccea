"""Configuration: defaults, env substitution and overrides, and errors located by file, line and key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from otel_cost.config import load_config
from otel_cost.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "otel-cost.yaml"
    path.write_text(text)
    return path


def test_defaults_serve_a_laptop() -> None:
    config = load_config(environ={})
    assert (config.receiver.grpc_endpoint, config.receiver.http_endpoint, config.api.endpoint) == (
        "0.0.0.0:4317",
        "0.0.0.0:4318",
        "0.0.0.0:8318",
    )
    assert config.store.url == "chdb:./otel-cost-data"
    assert config.receiver.bearer_tokens == []
    assert config.receiver.max_request_bytes == 64 * 1024 * 1024


def test_env_substitution_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, 'receiver:\n  bearer_tokens: ["${env:INGEST}", "${env:SPARE:-spare-token}"]\n')
    config = load_config(path, environ={"INGEST": "abc"})
    assert config.receiver.bearer_tokens == ["abc", "spare-token"]


def test_an_unset_env_var_is_an_error_not_a_silent_empty_token(tmp_path: Path) -> None:
    path = write(tmp_path, 'receiver:\n  bearer_tokens: ["${env:OTEL_COST_INGEST_TOKEN}"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.message == (
        "receiver.bearer_tokens[0]: environment variable OTEL_COST_INGEST_TOKEN is not set "
        "(write ${env:OTEL_COST_INGEST_TOKEN:-default} to make it optional)"
    )


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "store:\n  url: chdb:/from/file\n  batch_size: 10\n")
    environ = {"OTEL_COST_STORE_URL": "chdb:/from/env", "OTEL_COST_RECEIVER_BEARER_TOKENS": "a, b"}
    config = load_config(path, environ=environ)
    assert (config.store.url, config.store.batch_size, config.receiver.bearer_tokens) == (
        "chdb:/from/env",
        10,
        ["a", "b"],
    )
    config = load_config(path, environ=environ, overrides={"store": {"url": "chdb:/from/flag"}})
    assert config.store.url == "chdb:/from/flag"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("htttp:\n  x: 1\n", "{path}:1: htttp: unknown key 'htttp'"),
        (
            "receiver:\n  max_request_bytes: 10\n",
            "{path}:2: receiver.max_request_bytes: Input should be greater than or equal to 1024 (got 10)",
        ),
        (
            "store:\n  batch_size: 5000\n  queue_size: 2048\n",
            "{path}:1: store: store.batch_size must be <= store.queue_size (got 5000 > 2048)",
        ),
        ("api:\n  endpoint: 8318\n", "{path}:2: api.endpoint: Input should be a valid string (got 8318)"),
        (
            "receiver:\n  bearer_tokens: ['']\n",
            "{path}:2: receiver.bearer_tokens: tokens must not be empty (an empty list disables authentication)",
        ),
        (
            "receiver:\n  tls:\n    cert_file: /nope.crt\n    key_file: /nope.key\n",
            "{path}:3: receiver.tls.cert_file: file '/nope.crt' does not exist",
        ),
        ("- a\n- b\n", "{path}: the top level must be a mapping of sections (receiver, api, store)"),
        ("receiver: [\n", "{path}: not valid YAML"),
    ],
)
def test_errors_name_file_line_and_dotted_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.message.startswith(expected.format(path=path))


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml", environ={})
    assert caught.value.message == f"{tmp_path / 'absent.yaml'}: cannot read config file: No such file or directory"


GOOD_OVERRIDE = "  - name: contract\n    provider: anthropic\n    model: claude-sonnet-4-5\n    multiplier: '0.8'\n"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            "  - name: x\n    provider: openai\n    model: gpt-4o\n    multiplier: '0.9'\n    discount: 5\n",
            "{path}:7: pricing.overrides.0.discount: unknown key 'discount' in 'pricing.overrides.0'",
        ),
        (
            "  - name: x\n    model: gpt-4o\n",
            "{path}:3: pricing.overrides.0: a model override needs a multiplier or prices",
        ),
        (
            "  - name: x\n    provider: openai\n    model: gpt-4o\n    prices: {input_mtokens: '1'}\n",
            "{path}:6: pricing.overrides.0.prices: unknown price key(s) input_mtokens",
        ),
        (
            "  - name: x\n    provider: openai\n    model: gpt-4o-typo\n    multiplier: '0.9'\n",
            "{path}:5: pricing.overrides.0.model: model 'gpt-4o-typo' is not in the price catalog for provider "
            "'openai': add prices to price it",
        ),
        (
            "  - name: x\n    provider: nowhere-ai\n    multiplier: '0.9'\n",
            "{path}:4: pricing.overrides.0.provider: provider 'nowhere-ai' is not in the price catalog",
        ),
        (
            GOOD_OVERRIDE + "    effective_until: 2026-12-31\n"
            "  - name: contract-v2\n    provider: anthropic\n    model: claude-sonnet-4-5\n    multiplier: '0.75'\n"
            "    effective_from: 2026-12-15\n",
            "{path}:12: pricing.overrides.1.effective_from: 'contract-v2' overlaps 'contract' (override #0)",
        ),
        (GOOD_OVERRIDE + GOOD_OVERRIDE, "{path}:2: pricing.overrides: override name 'contract' is used twice"),
    ],
)
def test_price_override_errors_name_their_line(tmp_path: Path, overrides: str, expected: str) -> None:
    path = write(tmp_path, "pricing:\n  overrides:\n" + overrides)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.message.startswith(expected.format(path=path)), caught.value.message


def test_a_correction_is_a_new_entry_after_the_old_one(tmp_path: Path) -> None:
    text = (
        "pricing:\n  overrides:\n" + GOOD_OVERRIDE + "    effective_until: 2026-12-15\n"
        "  - name: contract-v2\n    provider: anthropic\n    model: claude-sonnet-4-5\n    multiplier: '0.75'\n"
        "    effective_from: 2026-12-15\n"
    )
    config = load_config(write(tmp_path, text), environ={})
    assert [override.name for override in config.pricing.overrides] == ["contract", "contract-v2"]


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        (
            "  sinks:\n    - {kind: webhook, url: 'https://hooks.internal/finops'}\n",
            "{path}:3: alerts.sinks.0: a webhook sink needs a secret (at least 16 characters): its requests are signed",
        ),
        ("  sinks:\n    - {kind: slack}\n", "{path}:3: alerts.sinks.0: a slack sink needs a url"),
        (
            "  sinks:\n    - {kind: log, kinds: [agent_loops]}\n",
            "{path}:3: alerts.sinks.0: unknown alert kind(s) agent_loops (known: budget_threshold, budget_forecast, "
            "agent_loop, retry_storm, spend_spike, unpriced_model, unattributed_share, floating_alias, new_owner)",
        ),
        (
            "  sinks:\n    - {kind: slack, url: 'https://hooks.slack.com/a'}\n"
            "    - {kind: slack, url: 'https://hooks.slack.com/b'}\n",
            "{path}:2: alerts.sinks: sink names must be unique (set `name`): slack",
        ),
        (
            "  runaway:\n    agent_loop:\n      max_call: 10\n",
            "{path}:4: alerts.runaway.agent_loop.max_call: unknown key 'max_call' in 'alerts.runaway.agent_loop'",
        ),
        (
            "  runaway:\n    retry_storm:\n      contain: {action: downgrade}\n",
            "{path}:4: alerts.runaway.retry_storm.contain: a downgrade containment needs a downgrade map",
        ),
        (
            "  runaway:\n    spend_spike:\n      window: 2d\n      baseline: 24h\n",
            "{path}:3: alerts.runaway.spend_spike: window must be shorter than baseline",
        ),
        (
            "  hygiene:\n    lookback: an hour\n",
            "{path}:3: alerts.hygiene.lookback: window must be minutes, hours or days, e.g. 60m, 24h, 7d "
            "(got 'an hour')",
        ),
    ],
)
def test_alert_errors_name_their_line(tmp_path: Path, alerts: str, expected: str) -> None:
    path = write(tmp_path, "alerts:\n" + alerts)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.message.startswith(expected.format(path=path)), caught.value.message


def test_alerts_default_to_every_detector_and_the_log() -> None:
    alerts = load_config(environ={}).alerts
    assert alerts.enabled and alerts.budgets and [sink.kind for sink in alerts.sinks] == ["log"]
    assert (alerts.runaway.agent_loop.max_calls, alerts.runaway.agent_loop.max_cost_usd) == (25, Decimal("10"))
    assert alerts.runaway.agent_loop.contain is None  # containment is opt-in
