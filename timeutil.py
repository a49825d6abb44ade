"""Time helpers: UTC everywhere inside, half-hour slots aligned to :00/:30, Europe/London for people."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

UTC = timezone.utc
LONDON = ZoneInfo("Europe/London")
SLOT = timedelta(minutes=30)
WEEK = timedelta(days=7)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the app's default clock)."""
    return datetime.now(UTC)


def floor_slot(moment: datetime) -> datetime:
    """The start of the half-hour slot that contains `moment`."""
    moment = moment.astimezone(UTC)
    return moment.replace(minute=30 if moment.minute >= 30 else 0, second=0, microsecond=0)


def ceil_slot(moment: datetime) -> datetime:
    """The first slot boundary at or after `moment`."""
    floor = floor_slot(moment)
    return floor if floor == moment.astimezone(UTC) else floor + SLOT


def slot_starts(start: datetime, end: datetime) -> list[datetime]:
    """Slot starts in `[start, end)`, start aligned down to a slot boundary."""
    out, cursor = [], floor_slot(start)
    while cursor < end:
        out.append(cursor)
        cursor += SLOT
    return out


def parse_utc(text: str) -> datetime:
    """Parse an ISO 8601 time ('2023-03-15T12:00Z', '...+00:00', '... 00:00:00+00:00') into aware UTC."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"time {text!r} has no timezone")
    return parsed.astimezone(UTC)


def london_day_bounds(day: date) -> tuple[datetime, datetime]:
    """UTC bounds of a Europe/London calendar day (46, 48 or 50 half-hours)."""
    start = datetime.combine(day, time(0), LONDON).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), LONDON).astimezone(UTC)
    return start, end


def to_london(moment: datetime) -> datetime:
    """The same instant on the Europe/London clock, for display."""
    return moment.astimezone(LONDON)
