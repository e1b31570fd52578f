"""`stratoflow workflows`, `upload`, `pause` and `unpause`: the registered workflows,
through the REST API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.text import Text

from stratoflow.cli.api import call, find_target, target_options
from stratoflow.cli.exits import err_console
from stratoflow.cli.inputs import load
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


@click.command()
@target_options
@output_options
def workflows(
    api: str | None,
    stack: str | None,
    endpoint_url: str | None,
    output: str,
    as_json: bool,
    wide: bool,
) -> None:
    """Registered workflows: version, schedule, paused, next and last run."""
    fmt = output_format(output, as_json)
    target = find_target(api, stack, endpoint_url)
    listing = call(target, "GET", "/workflows")
    rows = []
    for w in listing["workflows"]:
        rows.append(
            {
                "workflow_id": w["workflow_id"],
                "version": w["active_version"],
                "latest_version": w["latest_version"],
                "schedule": w["schedule"],
                "timezone": w["timezone"],
                "paused": w["paused"],
                "active": w["active_version"] is not None,
                "next_run": w["next_run"],
                "last_run": w["last_run"],
                "last_status": w["last_status"],
            }
        )
    errors = listing["load_errors"]
    if fmt != "table":
        print_document({"workflows": rows, "load_errors": errors}, fmt)
        return
    for error in errors:
        err_console.print(
            f"[bold red]rejected upload[/] {escape(error['source'])} ({error['at']}): "
            f"{escape(error['message'])}",
            soft_wrap=True,
        )
    columns = [
        Column("workflow", whole=True),
        Column("v", whole=True, justify="right"),
        Column("schedule", optional=True, drop=3),
        Column("next run", optional=True, drop=1),
        Column("last run", whole=True, optional=True, drop=2),
        Column("status", whole=True),
    ]
    if wide:
        columns.insert(2, Column("latest", justify="right", optional=True, drop=0))
    table_rows = []
    for r in rows:
        sched = f"{r['schedule']} ({r['timezone']})" if r["schedule"] else ""
        if r["paused"]:
            sched = f"{sched}, paused" if sched else "paused"
        cells = [
            Text(r["workflow_id"]),
            Text(str(r["version"] or "inactive")),
            Text(sched),
            Text(compact_time(r["next_run"])),
            Text(r["last_run"] or ""),
            status_text(r["last_status"] or ""),
        ]
        if wide:
            cells.insert(2, Text(str(r["latest_version"])))
        table_rows.append(cells)
    print_listing("workflows", columns, table_rows)


def _set_paused(target: Target, workflow: str, paused: bool) -> None:
    call(target, "POST", f"/workflows/{workflow}/{'pause' if paused else 'unpause'}")
    err_console.print(f"{workflow}: {'paused' if paused else 'unpaused'}")


@click.command()
@click.argument("workflow")
@target_options
def pause(workflow: str, api: str | None, stack: str | None, endpoint_url: str | None) -> None:
    """Stop starting scheduled runs of WORKFLOW (running ones go on)."""
    _set_paused(find_target(api, stack, endpoint_url), workflow, True)


@click.command()
@click.argument("workflow")
@target_options
def unpause(workflow: str, api: str | None, stack: str | None, endpoint_url: str | None) -> None:
    """Resume WORKFLOW's schedule (missed slots follow its `catchup`)."""
    _set_paused(find_target(api, stack, endpoint_url), workflow, False)


def upload_file(target: Target, file: str) -> dict[str, Any]:
    """Validate here (exit 2 and nothing sent if invalid), then upload: the API stores the
    file under the bucket's workflows/ and registers it."""
    load(file)
    path = Path(file)
    text = path.read_text(encoding="utf-8")
    return dict(call(target, "POST", "/workflows", query={"name": path.name}, text=text))


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@target_options
@click.option("--json", "as_json", is_flag=True)
def upload(
    file: str, api: str | None, stack: str | None, endpoint_url: str | None, as_json: bool
) -> None:
    """Validate FILE, then put it under workflows/ (it becomes the active version)."""
    result = upload_file(find_target(api, stack, endpoint_url), file)
    if as_json:
        click.echo(json.dumps(result))
    else:
        err_console.print(
            f"uploaded {result['key']}: workflow {result['workflow_id']} v{result['version']}"
        )
