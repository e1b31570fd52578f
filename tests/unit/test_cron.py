"""Cron schedules and time zones: validation, and fire times read in the workflow's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from stratoflow.core.cron import (
    fire_times_between,
    next_fire_times,
    validate_schedule,
    validate_timezone,
)

# ---- validate_schedule -------------------------------------------------------------------------


def test_five_field_schedule_is_returned_with_whitespace_normalised() -> None:
    assert validate_schedule("  0  2 * *\t1-5 ") == "0 2 * * 1-5"


@pytest.mark.parametrize(
    "shortcut",
    ["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"],
)
def test_shortcuts_are_accepted(shortcut: str) -> None:
    assert validate_schedule(shortcut) == shortcut


def test_shortcut_case_is_normalised() -> None:
    assert validate_schedule("@Daily") == "@daily"


def test_unknown_shortcut_is_rejected_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r'"@reboot" is not a known schedule shortcut.*@hourly'):
        validate_schedule("@reboot")


def test_seconds_field_is_rejected() -> None:
    with pytest.raises(ValueError, match=r'"\*/10 \* \* \* \* \*" has 6 fields.*seconds'):
        validate_schedule("*/10 * * * * *")


def test_garbage_is_rejected_showing_the_value() -> None:
    with pytest.raises(ValueError, match='"whenever" has 1 fields'):
        validate_schedule("whenever")


def test_out_of_range_minute_is_rejected_showing_the_value() -> None:
    with pytest.raises(ValueError, match=r'"61 \* \* \* \*" is not a valid cron expression'):
        validate_schedule("61 * * * *")


@pytest.mark.parametrize(
    ("schedule", "says"),
    [
        ("61 * * * *", 'the minute field "61" is not valid (0-59)'),
        ("0 24 * * *", 'the hour field "24" is not valid (0-23)'),
        ("0 0 0 * *", 'the day of month field "0" is not valid (1-31)'),
        ("0 0 1 13 *", 'the month field "13" is not valid (1-12 or JAN-DEC)'),
        ("0 0 * * 8", 'the day of week field "8" is not valid (0-7 (0 and 7 are Sunday)'),
        ("*/0 * * * *", 'the minute field "*/0" is not valid'),
        ("61 25 * * *", 'minute field "61" is not valid (0-59); the hour field "25"'),
    ],
)
def test_a_bad_field_is_named_with_what_it_allows(schedule: str, says: str) -> None:
    with pytest.raises(ValueError) as err:
        validate_schedule(schedule)
    assert says in str(err.value)


def test_schedule_that_never_fires_is_rejected() -> None:
    with pytest.raises(ValueError, match=r'"0 0 30 2 \*" never fires'):
        validate_schedule("0 0 30 2 *")


def test_leap_day_schedule_is_accepted() -> None:
    assert validate_schedule("0 0 29 2 *") == "0 0 29 2 *"


# ---- validate_timezone -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/New_York", "EST5EDT"])
def test_zones_known_to_zoneinfo_are_accepted(name: str) -> None:
    assert validate_timezone(name) == name


@pytest.mark.parametrize("name", ["Mars/Olympus", "Europe", "../etc/passwd", "/etc/localtime"])
def test_unknown_zone_is_rejected_showing_the_value(name: str) -> None:
    with pytest.raises(ValueError, match=f'"{name}" is not a known IANA time zone'):
        validate_timezone(name)


def test_empty_zone_is_rejected() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        validate_timezone(" ")


# ---- next_fire_times ---------------------------------------------------------------------------


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_daily_schedule_in_utc_fires_each_day() -> None:
    assert next_fire_times("0 2 * * *", "UTC", utc(2024, 1, 1), 2) == [
        utc(2024, 1, 1, 2),
        utc(2024, 1, 2, 2),
    ]


def test_schedule_is_read_in_the_workflows_timezone_in_winter() -> None:
    assert next_fire_times("0 2 * * *", "Europe/Berlin", utc(2024, 1, 10), 1) == [
        utc(2024, 1, 10, 1)
    ]


def test_schedule_is_read_in_the_workflows_timezone_in_summer() -> None:
    assert next_fire_times("0 2 * * *", "Europe/Berlin", utc(2024, 7, 9, 12), 1) == [
        utc(2024, 7, 10, 0)
    ]


def test_fire_times_are_aware_utc() -> None:
    fire = next_fire_times("@hourly", "Asia/Kolkata", utc(2024, 1, 1), 1)[0]

    assert fire.utcoffset() == timedelta(0)
    assert fire == utc(2024, 1, 1, 0, 30)  # Kolkata is UTC+05:30: its hours start at :30 UTC


def test_a_fire_time_equal_to_after_is_not_repeated() -> None:
    assert next_fire_times("0 * * * *", "UTC", utc(2024, 1, 1, 5), 1) == [utc(2024, 1, 1, 6)]


def test_after_in_another_offset_is_the_same_instant() -> None:
    after = datetime(2024, 1, 1, 7, tzinfo=timezone(timedelta(hours=2)))  # 05:00 UTC

    assert next_fire_times("0 * * * *", "UTC", after, 1) == [utc(2024, 1, 1, 6)]


def test_zero_count_gives_no_times() -> None:
    assert next_fire_times("@daily", "UTC", utc(2024, 1, 1), 0) == []


def test_naive_after_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire_times("@daily", "UTC", datetime(2024, 1, 1), 1)


# ---- daylight saving time: EventBridge Scheduler's rules ---------------------------------
# A wall time that does not exist (spring forward) is skipped; one that happens twice (fall
# back) fires once, at its first occurrence.


def _local_day(zone: str, year: int, month: int, day: int) -> tuple[datetime, datetime]:
    tz = ZoneInfo(zone)
    start = datetime(year, month, day, tzinfo=tz).astimezone(UTC)
    end = datetime(year, month, day, 23, 59, 59, tzinfo=tz).astimezone(UTC)
    return start - timedelta(microseconds=1), end


@pytest.mark.parametrize(
    ("zone", "day", "hourly_fires"),
    [
        ("America/New_York", (2026, 3, 8), 23),  # 02:00 does not exist
        ("America/New_York", (2026, 11, 1), 24),  # 01:00 happens twice, fires once
        ("Europe/Berlin", (2026, 3, 29), 23),
        ("Europe/Berlin", (2026, 10, 25), 24),
    ],
)
def test_hourly_schedule_on_dst_days(
    zone: str, day: tuple[int, int, int], hourly_fires: int
) -> None:
    after, until = _local_day(zone, *day)
    fires = fire_times_between("0 * * * *", zone, after, until, 100)

    assert len(fires) == hourly_fires
    assert len(set(fires)) == len(fires) and fires == sorted(fires)
    local_hours = [f.astimezone(ZoneInfo(zone)).hour for f in fires]
    assert len(set(local_hours)) == hourly_fires  # each wall hour at most once


@pytest.mark.parametrize(
    ("zone", "gap_day", "fold_day", "fold_fire_utc"),
    [
        ("America/New_York", (2026, 3, 8), (2026, 11, 1), None),
        ("Europe/Berlin", (2026, 3, 29), (2026, 10, 25), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
    ],
)
def test_daily_0230_is_skipped_in_the_gap_and_fires_once_in_the_fold(
    zone: str,
    gap_day: tuple[int, int, int],
    fold_day: tuple[int, int, int],
    fold_fire_utc: datetime | None,
) -> None:
    after, until = _local_day(zone, *gap_day)
    assert fire_times_between("30 2 * * *", zone, after, until, 10) == []
    after, until = _local_day(zone, *fold_day)
    fires = fire_times_between("30 2 * * *", zone, after, until, 10)
    assert len(fires) == 1
    local = fires[0].astimezone(ZoneInfo(zone))
    assert (local.hour, local.minute) == (2, 30)
    if fold_fire_utc is not None:
        # 02:30 happens at 00:30 and 01:30 UTC in Berlin that day: the first one fires
        assert fires[0] == fold_fire_utc


def test_the_day_after_a_gap_fires_normally() -> None:
    fires = next_fire_times("30 2 * * *", "America/New_York", utc(2026, 3, 7, 12), 2)

    # 2026-03-08 02:30 does not exist in New York; the next days fire at 02:30 EDT
    assert fires == [utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)]


def test_a_cursor_inside_the_repeated_hour_does_not_fire_it_again() -> None:
    # 01:30 EDT (05:30 UTC) fired; 01:30 EST (06:30 UTC) is the same wall time: not again
    fires = next_fire_times("30 1 * * *", "America/New_York", utc(2026, 11, 1, 5, 30), 1)

    assert fires == [utc(2026, 11, 2, 6, 30)]
