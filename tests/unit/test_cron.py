"""Cron schedules and time zones: validation, and fire times read in the workflow's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from stratoflow.core.cron import next_fire_times, validate_schedule, validate_timezone

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


def test_wall_time_skipped_by_spring_forward_does_not_crash() -> None:
    # Berlin skips 02:00-03:00 on 2024-03-31; the slot still comes once, in order.
    fires = next_fire_times("30 2 * * *", "Europe/Berlin", utc(2024, 3, 29), 4)

    assert fires == sorted(set(fires))
    assert len(fires) == 4
    assert utc(2024, 3, 30, 0) < fires[1] < utc(2024, 3, 31, 2)


def test_hourly_across_fall_back_fires_every_real_hour() -> None:
    # Berlin repeats 02:00-03:00 on 2024-10-27; an hourly schedule fires on each UTC hour.
    fires = next_fire_times("0 * * * *", "Europe/Berlin", utc(2024, 10, 26, 23, 30), 4)

    assert fires == [utc(2024, 10, 27, h) for h in (0, 1, 2, 3)]
