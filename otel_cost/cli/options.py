"""Option bundles shared by commands, and the one way library errors reach the terminal."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import OtelCostError

__all__ = ["FORMATS", "format_option", "friendly_errors"]

F = TypeVar("F", bound=Callable[..., Any])

FORMATS = ("table", "json", "csv")


def format_option(func: F) -> F:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format.",
    )(func)  # type: ignore[return-value]


def friendly_errors(func: F) -> F:
    """Show an OtelCostError as one clean line and exit 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OtelCostError as exc:
            raise click.ClickException(exc.message) from None

    return wrapper  # type: ignore[return-value]
