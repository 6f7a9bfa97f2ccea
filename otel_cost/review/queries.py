"""The review's SQL: `clickhouse/queries/*.sql`, each one statement with a `{week:String}` parameter
(an ISO week, `2026-W48`), run as clickhouse-client would run it."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from ..store import QueryResult
from ..store.schema import sql_dir
from ..store.sql import quote

__all__ = ["QUERIES", "Week", "query_path", "query_text", "run_review_query"]

#: Every review query, in the order the review shows them.
QUERIES = (
    "top_movers",
    "new_spenders",
    "trending_toward_cap",
    "cost_per_result",
    "unattributed_unpriced",
    "unpriced_models",
    "floating_aliases",
    "cache_savings",
    "model_mix",
)

_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_PARAMETER = "{week:String}"


class Week:
    """An ISO week (Monday 00:00 UTC to the next Monday)."""

    __slots__ = ("label", "start")

    def __init__(self, label: str) -> None:
        match = _WEEK.match(label)
        if match is None:
            raise ValueError(f"a week is written YYYY-Www, e.g. 2026-W48 (got {label!r})")
        year, number = int(match.group(1)), int(match.group(2))
        try:
            monday = date.fromisocalendar(year, number, 1)
        except ValueError:
            raise ValueError(f"{year} has no ISO week {number}") from None
        self.label = label
        self.start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)

    @classmethod
    def containing(cls, moment: datetime) -> Week:
        year, number, _ = moment.astimezone(UTC).isocalendar()
        return cls(f"{year}-W{number:02d}")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=7)

    @property
    def previous(self) -> Week:
        return Week.containing(self.start - timedelta(days=1))

    def __repr__(self) -> str:
        return f"Week({self.label!r})"


def query_path(name: str) -> Path:
    return sql_dir() / "queries" / f"{name}.sql"


def query_text(name: str, week: Week) -> str:
    """The file's statement with the week bound (the literal clickhouse-client's --param_week gives)."""
    text = query_path(name).read_text()
    if _PARAMETER not in text:
        raise ValueError(f"{query_path(name)} does not take the {_PARAMETER} parameter")
    return text.replace(_PARAMETER, quote(week.label))


def run_review_query(run: Callable[[str], QueryResult], name: str, week: Week) -> QueryResult:
    return run(query_text(name, week))
