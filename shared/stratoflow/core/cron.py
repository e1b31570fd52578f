"""Cron schedules and time zones: validation, and the fire times of a schedule.

Schedules are read in the workflow's IANA time zone; fire times are returned in UTC,
which is what storage and run ids use.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

SHORTCUTS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
_FIELDS = "minute hour day-of-month month day-of-week"
# Validation must not read the clock (core is pure), so a schedule is tried from a fixed
# instant. A leap year's first day, so "0 0 29 2 *" is found and "0 0 30 2 *" is not.
_REFERENCE = datetime(2000, 1, 1, tzinfo=UTC)


def validate_schedule(schedule: str) -> str:
    """The schedule with whitespace normalised; ValueError naming the value if it is invalid.

    Accepts 5-field cron (minute hour day-of-month month day-of-week) and the shortcuts in
    SHORTCUTS. Seconds or year fields are rejected: the dispatcher ticks once a minute.
    """
    text = " ".join(schedule.split())
    shown = json.dumps(schedule)
    if text.startswith("@"):
        if text.lower() not in SHORTCUTS:
            raise ValueError(
                f"{shown} is not a known schedule shortcut; use one of "
                f"{', '.join(SHORTCUTS)} or 5-field cron ({_FIELDS})"
            )
        return text.lower()
    field_count = len(text.split())
    if field_count != 5:
        extra = " (seconds and years are not supported)" if field_count in (6, 7) else ""
        raise ValueError(
            f"{shown} has {field_count} fields; a schedule has 5: "
            f'{_FIELDS}, e.g. "0 2 * * *"{extra}'
        )
    try:
        croniter(text, _REFERENCE).get_next(datetime)
    except CroniterBadDateError as err:
        raise ValueError(f"{shown} never fires: no date matches it") from err
    except (ValueError, TypeError) as err:  # every croniter error derives from one of these
        raise ValueError(f"{shown} is not a valid cron expression: {err}") from err
    return text


def validate_timezone(name: str) -> str:
    """The IANA time zone name unchanged; ValueError naming the value if zoneinfo lacks it."""
    if not name.strip():
        raise ValueError('the time zone must not be empty; use an IANA name such as "UTC"')
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as err:
        raise ValueError(
            f'{json.dumps(name)} is not a known IANA time zone; use a name such as "UTC", '
            '"Europe/Berlin" or "America/New_York"'
        ) from err
    return name


def next_fire_times(schedule: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    """The first `count` fire times strictly after `after`, as aware UTC datetimes.

    The schedule is evaluated in `timezone`, so "0 2 * * *" in Europe/Berlin fires at 01:00
    UTC in winter and 00:00 UTC in summer. A wall time skipped by a DST change fires at the
    end of the gap (croniter's behaviour); exact DST rules are refined separately.
    """
    if after.utcoffset() is None:
        raise ValueError(f"after must be a timezone-aware datetime, got {after!r}")
    if count < 0:
        raise ValueError(f"count must be zero or more, got {count}")
    zone = ZoneInfo(validate_timezone(timezone))
    fire_times = croniter(validate_schedule(schedule), after.astimezone(zone))
    return [fire_times.get_next(datetime).astimezone(UTC) for _ in range(count)]
