"""Docs are part of the product: every command and config key is in the README."""

from __future__ import annotations

from pathlib import Path
from typing import get_args, get_origin

from click.testing import CliRunner

from otel_cost.cli import cli
from otel_cost.config import Config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_quickstart_shows_the_two_make_commands_then_demo_and_a_team_query() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    order = [quickstart.index(text) for text in ("make run", "make test", "otel-cost demo", "otel-cost sql")]
    assert order == sorted(order)
    assert 'otel-cost sql "SELECT team, sum(cost) FROM requests WHERE billable GROUP BY team"' in quickstart


def test_every_command_is_documented() -> None:
    commands = CliRunner().invoke(cli, ["--help"]).output.split("Commands:", 1)[1].split()
    names = [word for word in commands if word in cli.commands]  # type: ignore[attr-defined]
    assert names
    for name in names:
        assert f"otel-cost {name}" in README


def test_every_config_key_is_documented() -> None:
    reference = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for section, field in Config.model_fields.items():
        assert f"\n{section}:" in reference
        model = field.annotation
        if get_origin(model) is list:  # budgets, gateways: lists of one kind of entry
            model = get_args(model)[0]
        for key in model.model_fields:  # type: ignore[union-attr]
            assert f" {key}:" in reference, f"{section}.{key} is not in the README's configuration reference"


def test_performance_section_has_measured_figures() -> None:
    performance = README.split("## Performance", 1)[1].split("\n## ", 1)[0]
    assert "PLACEHOLDER" not in performance
    assert "make bench" in performance
    assert "spans_per_second" in performance and "pricing_speedup" in performance
