"""Budget periods: calendar-aligned in the enforcer's time zone, or a rolling window ending now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["period_bounds", "window_bounds"]


def _first_of(local: datetime, period: str) -> datetime:
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":  # ISO weeks start on Monday
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    if period == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    raise ValueError(f"unknown period {period!r}")


def _next(start: datetime, period: str) -> datetime:
    if period == "day":
        return start.replace(tzinfo=None) + timedelta(days=1)
    if period == "week":
        return start.replace(tzinfo=None) + timedelta(days=7)
    months = 1 if period == "month" else 3
    month = start.month - 1 + months
    return start.replace(tzinfo=None, year=start.year + month // 12, month=month % 12 + 1)


def period_bounds(now: datetime, period: str, zone: str) -> tuple[datetime, datetime]:
    """[start, end) of the calendar period containing `now`, as UTC instants. Local midnights are
    resolved in `zone`, so a day is 23 or 25 hours long across a daylight-saving change."""
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    start = _first_of(local, period)
    end_naive = _next(start, period)
    start_utc = start.replace(tzinfo=None).replace(tzinfo=tz).astimezone(UTC)
    end_utc = end_naive.replace(tzinfo=tz).astimezone(UTC)
    return start_utc, end_utc


def window_bounds(now: datetime, seconds: int) -> tuple[datetime, datetime]:
    """The rolling window [now - seconds, now]."""
    return now - timedelta(seconds=seconds), now
