"""Cron schedules and time zones: validation, and the fire times of a schedule.

Schedules are read in the workflow's IANA time zone; fire times are returned in UTC,
which is what storage and run ids use.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
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
        raise ValueError(
            f"{shown} is not a valid cron expression: {_which_field(text, err)}"
        ) from err
    return text


_FIELD_RANGES = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day of week", "0-7 (0 and 7 are Sunday) or SUN-SAT"),
)


def _which_field(text: str, err: Exception) -> str:
    """Name the field croniter refused, and what that field allows (its own messages say
    "out of range" without saying where)."""
    fields = text.split()
    bad = []
    for i, (name, allowed) in enumerate(_FIELD_RANGES):
        probe = ["*"] * 5
        probe[i] = fields[i]
        try:
            croniter(" ".join(probe), _REFERENCE).get_next(datetime)
        except CroniterBadDateError:
            continue
        except (ValueError, TypeError):
            bad.append(f"the {name} field {json.dumps(fields[i])} is not valid ({allowed})")
    return "; ".join(bad) if bad else str(err)


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

    The schedule is read in `timezone`'s wall clock, with EventBridge Scheduler's rules for
    daylight saving time: a wall time that does not exist (clocks spring forward over it)
    is skipped, and a wall time that happens twice (clocks fall back) fires once, at its
    first occurrence. So "30 2 * * *" in Europe/Berlin does not fire on the last Sunday of
    March and fires once on the last Sunday of October, and "0 * * * *" fires 23 times on
    the spring day and 24 times on the autumn day.
    """
    if after.utcoffset() is None:
        raise ValueError(f"after must be a timezone-aware datetime, got {after!r}")
    if count < 0:
        raise ValueError(f"count must be zero or more, got {count}")
    return list(islice(iter_fire_times(schedule, timezone, after), count))


def fire_times_between(
    schedule: str, timezone: str, after: datetime, until: datetime, limit: int
) -> list[datetime]:
    """Fire times in (after, until], oldest first, at most `limit` of them."""
    out: list[datetime] = []
    for fire in iter_fire_times(schedule, timezone, after):
        if fire > until or len(out) >= limit:
            break
        out.append(fire)
    return out


def iter_fire_times(schedule: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """Every fire time strictly after `after` (aware), as aware UTC datetimes, in order."""
    zone = ZoneInfo(validate_timezone(timezone))
    after_utc = after.astimezone(UTC)
    # Walk the wall clock (naive local times), starting a little before `after`'s wall
    # time: when `after` lies in a repeated hour, its wall time is ambiguous.
    start = after_utc.astimezone(zone).replace(tzinfo=None) - timedelta(hours=3)
    wall = croniter(validate_schedule(schedule), start)
    while True:
        local: datetime = wall.get_next(datetime)
        first = local.replace(tzinfo=zone, fold=0)
        if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local:
            continue  # in the spring-forward gap: this wall time never happens
        fire = first.astimezone(UTC)
        if fire > after_utc:
            yield fire


def recent_fire_times(schedule: str, timezone: str, until: datetime, count: int) -> list[datetime]:
    """The `count` latest fire times at or before `until`, newest first (same DST rules)."""
    zone = ZoneInfo(validate_timezone(timezone))
    until_utc = until.astimezone(UTC)
    start = until_utc.astimezone(zone).replace(tzinfo=None) + timedelta(hours=3)
    wall = croniter(validate_schedule(schedule), start)
    out: list[datetime] = []
    seen: set[datetime] = set()
    while len(out) < count:
        try:
            local: datetime = wall.get_prev(datetime)
        except CroniterBadDateError:
            break
        first = local.replace(tzinfo=zone, fold=0)
        if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local:
            continue  # in the spring-forward gap
        fire = first.astimezone(UTC)
        if fire <= until_utc and fire not in seen:
            seen.add(fire)
            out.append(fire)
    return out
