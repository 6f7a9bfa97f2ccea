"""Literals for the SQL otel-cost writes itself (values are never interpolated any other way)."""

from __future__ import annotations

from datetime import datetime

__all__ = ["quote", "seconds_literal"]


def quote(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def seconds_literal(moment: datetime) -> str:
    """A UTC DateTime literal, to the second (what the rollups' buckets compare with)."""
    return f"toDateTime({int(moment.timestamp())}, 'UTC')"
