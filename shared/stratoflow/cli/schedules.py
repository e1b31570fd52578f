"""`stratoflow next` and `stratoflow backfill`: a schedule's fire times, and runs of past
slots. They read a workflow file or the definitions of a home's (or an endpoint's) engine
directly, not through the REST API. Exit codes as for the other commands: 0, 2 when the
input is wrong (nothing created)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from stratoflow.cli.exits import err_console, invalid
from stratoflow.cli.inputs import load


@click.command(name="next")
@click.argument("target")
@click.option("-n", "count", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--after", default=None, metavar="ISO", help="Start after this time (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of UTC times.")
@click.option(
    "--endpoint-url",
    default=None,
    metavar="URL",
    help="Read a registered WORKFLOW's schedule from this endpoint.",
)
def next_times(
    target: str, count: int, after: str | None, as_json: bool, endpoint_url: str | None
) -> None:
    """The next fire times of a workflow FILE (or a registered WORKFLOW id)."""
    from zoneinfo import ZoneInfo

    from stratoflow.core.cron import next_fire_times

    start = datetime.now(UTC) if after is None else _iso_arg("--after", after)
    schedule, timezone = _schedule_of(target, endpoint_url)
    try:
        fires = next_fire_times(schedule, timezone, start, count)
    except (OverflowError, ValueError):
        # The calendar ends with year 9999: a late --after has fewer fire times before it.
        invalid(
            f"--after {after!r}: the schedule {schedule!r} has fewer than {count} fire times "
            f"between it and the end of year {_LATEST.year}; give an earlier time or a smaller -n"
        )
    if as_json:
        click.echo(json.dumps([f.isoformat().replace("+00:00", "Z") for f in fires]))
        return
    zone = ZoneInfo(timezone)
    for fire in fires:
        local = fire.astimezone(zone)
        click.echo(f"{local:%Y-%m-%d %H:%M %Z} ({timezone})  {fire:%Y-%m-%dT%H:%M:%SZ}")


def _schedule_of(target: str, endpoint_url: str | None) -> tuple[str, str]:
    if Path(target).exists() or Path(target).suffix.lower() in (".json", ".yaml", ".yml"):
        wf = load(target)
        if not wf.schedule:
            invalid(f"workflow file {target!r} has no schedule")
        return wf.schedule, wf.timezone
    ports = _engine(endpoint_url)
    meta = ports.definitions.get_meta(target)
    if meta is None or not meta.schedule:
        invalid(
            f"{target!r} is neither a workflow file nor a workflow registered with a "
            f"schedule at {endpoint_url or 'the local engine'}"
        )
    return meta.schedule, meta.timezone


_ENDPOINT = click.option(
    "--endpoint-url",
    default=None,
    metavar="URL",
    help="The engine's AWS endpoint (default: the running `stratoflow local up`).",
)


def _engine(endpoint_url: str | None) -> Any:
    from stratoflow.local.target import NoEngine, connect

    try:
        return connect(endpoint_url)
    except NoEngine as err:
        invalid(str(err))


@click.command()
@click.argument("workflow")
@click.option("--start", required=True, metavar="ISO")
@click.option("--end", required=True, metavar="ISO")
@_ENDPOINT
@click.option("--json", "as_json", is_flag=True)
def backfill(workflow: str, start: str, end: str, endpoint_url: str | None, as_json: bool) -> None:
    """One run per schedule slot in [START, END]; running it twice creates nothing more."""
    from stratoflow import services

    begin, finish = _iso_arg("--start", start), _iso_arg("--end", end)
    if finish < begin:
        invalid(f"--end {end!r} is before --start {start!r}")
    ports = _engine(endpoint_url)
    _check_backfill_size(ports, workflow, begin, finish, start, end)
    try:
        created = services.backfill(ports, workflow, begin, finish)
    except LookupError as err:
        invalid(str(err))
    except OverflowError:
        invalid(
            f"--start {start!r} / --end {end!r}: out of the range the schedule can be computed "
            f"in; give times from {_EARLIEST.date().isoformat()} to "
            f"{_LATEST.date().isoformat()}"
        )
    if as_json:
        click.echo(json.dumps(created))
    else:
        err_console.print(f"{len(created)} run(s) created")
        for run_id in created:
            click.echo(run_id)


def _check_backfill_size(
    ports: Any, workflow: str, begin: datetime, finish: datetime, start: str, end: str
) -> None:
    """Refuse a range with more slots than one backfill creates, rather than creating the
    first BACKFILL_LIMIT of them and leaving the rest without a word."""
    from datetime import timedelta

    from stratoflow import services
    from stratoflow.core.cron import fire_times_between

    meta = ports.definitions.get_meta(workflow)
    if meta is None or not meta.schedule:
        return  # services.backfill says so
    limit = services.BACKFILL_LIMIT
    try:
        slots = fire_times_between(
            meta.schedule, meta.timezone, begin - timedelta(microseconds=1), finish, limit + 1
        )
    except OverflowError:
        return
    if len(slots) > limit:
        invalid(
            f"--start {start!r} --end {end!r}: the range holds more than {limit} slots of "
            f"workflow {workflow!r} (schedule {meta.schedule!r}); one backfill creates at most "
            f"{limit} runs: split the range (its first {limit} slots end at "
            f"{slots[limit - 1].isoformat().replace('+00:00', 'Z')})"
        )


_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
_LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
"""The times `--after`, `--start` and `--end` may give: a day inside the calendar Python
can compute in (years 1 to 9999), so that time zones and a slot's neighbours stay in it."""


def _iso_arg(option: str, value: str) -> datetime:
    """An aware UTC time from an ISO 8601 option (no offset: UTC); exit 2 naming the option
    and the value if it is not one, or out of the range schedules can be computed in."""
    out_of_range = (
        f"{option} {value!r}: out of range; give a time from {_EARLIEST.date().isoformat()} "
        f"to {_LATEST.date().isoformat()} (UTC), e.g. 2026-03-08T00:00:00Z"
    )
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except ValueError as err:
        if "out of range" in str(err):  # year 0, month 13, …: a date, outside the calendar
            invalid(out_of_range)
        invalid(f"{option} {value!r}: expected an ISO 8601 time, e.g. 2026-03-08T00:00:00Z")
    except OverflowError:  # its offset took it out of the calendar
        invalid(out_of_range)
    if not _EARLIEST <= moment <= _LATEST:
        invalid(out_of_range)
    return moment
