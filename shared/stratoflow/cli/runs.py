"""`stratoflow runs`, `status`, `trigger` and `logs`: a workflow's runs, one run, starting
one and reading a task's output, through the REST API."""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any

import click
from rich.text import Text

from stratoflow.cli.api import RESEND, call, find_target, target_options
from stratoflow.cli.exits import INTERRUPTED, err_console
from stratoflow.cli.following import FOLLOW_INTERVAL_SECONDS, exit_with_run, follow_run
from stratoflow.cli.inputs import parse_params
from stratoflow.cli.output import (
    Column,
    compact_time,
    output_format,
    output_options,
    print_document,
    print_listing,
    status_text,
)
from stratoflow.client import Target
from stratoflow.core.records import parse_iso


def _took(run: dict[str, Any]) -> str:
    from stratoflow.cli.progress import duration

    start, end = parse_iso(run["started_at"]), parse_iso(run["finished_at"])
    return duration((end - start).total_seconds()) if start and end else ""


@click.command()
@click.argument("workflow", required=False)
@target_options
@click.option("-n", "limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@output_options
def runs(
    workflow: str | None,
    api: str | None,
    stack: str | None,
    endpoint_url: str | None,
    limit: int,
    output: str,
    as_json: bool,
    wide: bool,
) -> None:
    """Run history, newest first (of one workflow, or of all)."""
    fmt = output_format(output, as_json)
    target = find_target(api, stack, endpoint_url)
    if workflow:
        ids = [workflow]
    else:
        ids = [w["workflow_id"] for w in call(target, "GET", "/workflows")["workflows"]]
    found: list[dict[str, Any]] = []
    for wid in ids:
        token = None
        got: list[dict[str, Any]] = []
        while len(got) < limit:
            page = call(
                target,
                "GET",
                f"/workflows/{wid}/runs",
                query={"limit": min(100, limit - len(got)), "next_token": token},
            )
            got += page["runs"]
            token = page["next_token"]
            if not token or not page["runs"]:
                break
        found += got
    found.sort(key=lambda r: r["created_at"], reverse=True)
    rows = [
        {
            k: r[k]
            for k in (
                "run_id",
                "workflow_id",
                "version",
                "status",
                "trigger",
                "logical_date",
                "started_at",
                "finished_at",
                "redrives",
            )
        }
        for r in found[:limit]
    ]
    if fmt != "table":
        print_document(rows, fmt)
        return
    columns = [
        Column("run", whole=True),
        Column("workflow", whole=True, optional=True, drop=3),
        Column("status", whole=True),
        Column("started", optional=True, drop=2),
        Column("finished", optional=True, drop=1),
    ]
    if wide:
        columns += [
            Column("v", justify="right", optional=True, drop=0),
            Column("trigger", optional=True, drop=0),
            Column("logical date", optional=True, drop=0),
            Column("took", justify="right", optional=True, drop=1),
            Column("redrives", justify="right", optional=True, drop=0),
        ]
    table_rows = []
    for r in rows:
        cells = [
            Text(r["run_id"]),
            Text(r["workflow_id"]),
            status_text(r["status"]),
            Text(compact_time(r["started_at"])),
            Text(compact_time(r["finished_at"])),
        ]
        if wide:
            cells += [
                Text(str(r["version"])),
                Text(r["trigger"]),
                Text(compact_time(r["logical_date"])),
                Text(_took(r)),
                Text(str(r["redrives"])),
            ]
        table_rows.append(cells)
    print_listing("runs", columns, table_rows)


@click.command()
@click.argument("run_id")
@target_options
@click.option("--json", "as_json", is_flag=True, help="The same document as `run --json`.")
@click.option("--wait", is_flag=True, help="Wait for the run to end first.")
def status(
    run_id: str,
    api: str | None,
    stack: str | None,
    endpoint_url: str | None,
    as_json: bool,
    wait: bool,
) -> None:
    """One run's task table. Exit 0 if it succeeded or still runs, 1 if it failed or was
    cancelled."""
    target = find_target(api, stack, endpoint_url)
    doc = (
        follow_run(target, run_id, quiet=as_json)
        if wait
        else call(target, "GET", f"/runs/{run_id}")
    )
    exit_with_run(doc, as_json)


def trigger_run(
    target: Target, workflow: str, params: dict[str, str], key: str | None
) -> dict[str, Any]:
    """Trigger a run, always with an Idempotency-Key (a fresh one if none is given), so that
    a request whose answer was lost can be sent again without starting a second run."""
    return dict(
        call(
            target,
            "POST",
            f"/workflows/{workflow}/runs",
            body={"params": params},
            headers={"Idempotency-Key": key or str(uuid.uuid4())},
            retries=RESEND,
            check=f"stratoflow runs {workflow}",
        )
    )


@click.command()
@click.argument("workflow")
@target_options
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Repeatable.")
@click.option(
    "--idempotency-key",
    default=None,
    metavar="KEY",
    help="However often this is sent with the same KEY, one run is started.",
)
@click.option("--wait", is_flag=True, help="Follow the run and exit with its outcome.")
@click.option("--json", "as_json", is_flag=True)
def trigger(
    workflow: str,
    api: str | None,
    stack: str | None,
    endpoint_url: str | None,
    params: tuple[str, ...],
    idempotency_key: str | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Start a run of WORKFLOW's active version now; prints its run id."""
    target = find_target(api, stack, endpoint_url)
    doc = trigger_run(target, workflow, parse_params(params), idempotency_key)
    if wait:
        err_console.print(f"run [bold]{doc['run_id']}[/] of {workflow} v{doc['version']}")
        exit_with_run(follow_run(target, doc["run_id"], quiet=as_json), as_json)
    if as_json:
        click.echo(json.dumps(doc))
    else:
        click.echo(doc["run_id"])


@click.command()
@click.argument("run_id")
@click.argument("task_id")
@target_options
@click.option("--attempt", type=click.IntRange(min=1), default=None, help="Default: the last.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the attempt ends.")
@click.option(
    "--compensation", is_flag=True, help="The output of the task's compensation (a saga)."
)
def logs(
    run_id: str,
    task_id: str,
    api: str | None,
    stack: str | None,
    endpoint_url: str | None,
    attempt: int | None,
    follow: bool,
    compensation: bool,
) -> None:
    """Print an attempt's full output (stdout and stderr as the command wrote them)."""
    target = find_target(api, stack, endpoint_url)
    printed = 0
    try:
        while True:
            doc = call(
                target,
                "GET",
                f"/runs/{run_id}/tasks/{task_id}/logs",
                query={"attempt": attempt, "compensation": "true" if compensation else None},
            )
            text: str = doc["text"]
            if len(text) < printed:
                printed = 0  # the log was cut to its tail: start again from what is there
            sys.stdout.write(text[printed:])
            sys.stdout.flush()
            printed = len(text)
            if not follow or doc["complete"]:
                break
            attempt = doc["attempt"]  # keep following this attempt, not a later retry
            time.sleep(FOLLOW_INTERVAL_SECONDS)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    if not doc["found"]:
        err_console.print(
            f"(no full log for attempt {doc['attempt']}: shown is the stored output tail)"
        )
