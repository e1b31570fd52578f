"""`stratoflow` commands that operate an engine through its REST API: a deployed stack
(`--stack NAME` or `--api URL`), the running `stratoflow local up` (the default), or an AWS
endpoint such as LocalStack (`--endpoint-url`, the API handler then runs in this process).

Exit codes as for `run`: 0 done (a followed run succeeded), 1 a followed run failed or was
cancelled, 2 the input was wrong or the engine cannot be reached (nothing was done), 3 the
request was sent and no answer came (trigger, cancel, retry): it may have been carried out.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from stratoflow.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    INTERRUPTED,
    Column,
    compact_time,
    err_console,
    invalid,
    load,
    output_format,
    output_options,
    parse_params,
    print_document,
    print_listing,
    print_table,
)
from stratoflow.cli_progress import progress_view
from stratoflow.client import ApiResponse, OutcomeUnknown, Target, TargetError, resolve
from stratoflow.core.records import parse_iso

F = TypeVar("F", bound=Callable[..., Any])
FOLLOW_INTERVAL_SECONDS = 1.0
"""How often a followed run or log is looked at again (one API request each time)."""
FINAL = ("succeeded", "failed", "cancelled")
EXIT_UNKNOWN = 3
"""The request was sent and no answer came: it may have been carried out (see `_call`)."""
RESEND = 3
"""Times a trigger or a cancel whose outcome is unknown is sent again (each is safe to
repeat: a trigger carries its Idempotency-Key, a second cancel changes nothing)."""


def target_options(f: F) -> F:
    """--api / --stack / --endpoint-url: where the command goes."""
    f = click.option(
        "--endpoint-url",
        default=None,
        metavar="URL",
        help="An AWS endpoint with a stratoflow engine (LocalStack: http://localhost:4566).",
    )(f)
    f = click.option(
        "--stack",
        default=None,
        metavar="NAME",
        help="A deployed stratoflow stack (its API URL from its outputs); env STRATOFLOW_STACK.",
    )(f)
    f = click.option(
        "--api",
        default=None,
        metavar="URL",
        help="The stratoflow REST API's URL; env STRATOFLOW_API. "
        "Default: the running `stratoflow local up`.",
    )(f)
    return f


def _target(api: str | None, stack: str | None, endpoint_url: str | None) -> Target:
    try:
        return resolve(api, stack, endpoint_url)
    except TargetError as err:
        invalid(str(err))


def _call(
    target: Target, method: str, path: str, *, check: str | None = None, **kwargs: Any
) -> Any:
    """One request; exit 2 if it could not be sent (nothing done), 3 if it was sent and
    no answer came (it may have been done: `check` names the command that tells)."""
    try:
        resp = target.client.request(method, path, **kwargs)
    except TargetError as err:
        invalid(str(err))
    except OutcomeUnknown as err:
        err_console.print(
            "[bold yellow]outcome unknown:[/] the request may have been accepted; check "
            f"`{escape(check or 'stratoflow runs <workflow>')}` ({escape(str(err))})",
            soft_wrap=True,
        )
        sys.exit(EXIT_UNKNOWN)
    if resp.ok:
        return resp.doc
    _fail(resp)


def _fail(resp: ApiResponse) -> NoReturn:
    if resp.status < 500:
        invalid(resp.message)
    err_console.print(f"[bold red]error:[/] the API failed: {escape(resp.message)}", soft_wrap=True)
    sys.exit(EXIT_FAILED)


def _outcome(doc: dict[str, Any]) -> int:
    return EXIT_OK if doc["status"] in ("succeeded", "running", "queued") else EXIT_FAILED


# --------------------------------------------------------------------------- following


def follow_run(target: Target, run_id: str, *, quiet: bool = False) -> dict[str, Any]:
    """Watch a run until it ends (live progress on a terminal); returns its document.

    Ctrl-C stops watching, not the run (it may belong to a schedule or to others): it says
    how to cancel.
    """
    from rich.live import Live

    interactive = err_console.is_terminal and not quiet
    started = time.monotonic()
    try:
        with Live(console=err_console, refresh_per_second=4, transient=True) as live:
            while True:
                doc = _call(target, "GET", f"/runs/{run_id}")
                if doc["status"] in FINAL:
                    return dict(doc)
                if interactive:
                    # Derived from the run's document, as `run`'s view is (cli_progress).
                    live.update(
                        progress_view(doc, time.monotonic() - started, width=err_console.width)
                    )
                time.sleep(FOLLOW_INTERVAL_SECONDS)
    except KeyboardInterrupt:
        err_console.print(
            f"stopped watching; the run goes on (stop it with `stratoflow cancel {run_id}`)"
        )
        sys.exit(INTERRUPTED)


def _finish(doc: dict[str, Any], as_json: bool) -> NoReturn:
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        print_table(doc)
        _print_interventions(doc)
    sys.exit(_outcome(doc))


def _print_interventions(doc: dict[str, Any]) -> None:
    """Under a run's table: why the engine ended it, and the outcomes set by hand."""
    out = Console()
    if doc.get("reason"):
        out.print(Text(f"{doc['status']}: {doc['reason']}", style="bold red"))
    for m in doc.get("marks", []):
        line = Text(f"{m['task_id']} marked {m['status']} by {m['by']} at ")
        line.append(compact_time(m["at"]))
        if m["reason"]:
            line.append(f": {m['reason']}")
        out.print(line)


# --------------------------------------------------------------------------- commands


def register(main: click.Group) -> None:
    """Add the operations commands to the `stratoflow` group."""
    for command in (
        workflows,
        runs,
        status,
        pause,
        unpause,
        upload,
        trigger,
        logs,
    ):
        main.add_command(command)


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
    target = _target(api, stack, endpoint_url)
    listing = _call(target, "GET", "/workflows")
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
            _status_text(r["last_status"] or ""),
        ]
        if wide:
            cells.insert(2, Text(str(r["latest_version"])))
        table_rows.append(cells)
    print_listing("workflows", columns, table_rows)


_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "running": "cyan",
    "queued": "cyan",
}


def _status_text(status: str) -> Text:
    return Text(status, style=_STATUS_STYLE.get(status, ""))


def _took(run: dict[str, Any]) -> str:
    from stratoflow.cli_progress import duration

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
    target = _target(api, stack, endpoint_url)
    if workflow:
        ids = [workflow]
    else:
        ids = [w["workflow_id"] for w in _call(target, "GET", "/workflows")["workflows"]]
    found: list[dict[str, Any]] = []
    for wid in ids:
        token = None
        got: list[dict[str, Any]] = []
        while len(got) < limit:
            page = _call(
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
            _status_text(r["status"]),
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
    target = _target(api, stack, endpoint_url)
    doc = (
        follow_run(target, run_id, quiet=as_json)
        if wait
        else _call(target, "GET", f"/runs/{run_id}")
    )
    _finish(doc, as_json)


def _set_paused(target: Target, workflow: str, paused: bool) -> None:
    _call(target, "POST", f"/workflows/{workflow}/{'pause' if paused else 'unpause'}")
    err_console.print(f"{workflow}: {'paused' if paused else 'unpaused'}")


@click.command()
@click.argument("workflow")
@target_options
def pause(workflow: str, api: str | None, stack: str | None, endpoint_url: str | None) -> None:
    """Stop starting scheduled runs of WORKFLOW (running ones go on)."""
    _set_paused(_target(api, stack, endpoint_url), workflow, True)


@click.command()
@click.argument("workflow")
@target_options
def unpause(workflow: str, api: str | None, stack: str | None, endpoint_url: str | None) -> None:
    """Resume WORKFLOW's schedule (missed slots follow its `catchup`)."""
    _set_paused(_target(api, stack, endpoint_url), workflow, False)


def upload_file(target: Target, file: str) -> dict[str, Any]:
    """Validate here (exit 2 and nothing sent if invalid), then upload: the API stores the
    file under the bucket's workflows/ and registers it."""
    load(file)
    path = Path(file)
    text = path.read_text(encoding="utf-8")
    return dict(_call(target, "POST", "/workflows", query={"name": path.name}, text=text))


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@target_options
@click.option("--json", "as_json", is_flag=True)
def upload(
    file: str, api: str | None, stack: str | None, endpoint_url: str | None, as_json: bool
) -> None:
    """Validate FILE, then put it under workflows/ (it becomes the active version)."""
    result = upload_file(_target(api, stack, endpoint_url), file)
    if as_json:
        click.echo(json.dumps(result))
    else:
        err_console.print(
            f"uploaded {result['key']}: workflow {result['workflow_id']} v{result['version']}"
        )


def trigger_run(
    target: Target, workflow: str, params: dict[str, str], key: str | None
) -> dict[str, Any]:
    """Trigger a run, always with an Idempotency-Key (a fresh one if none is given), so that
    a request whose answer was lost can be sent again without starting a second run."""
    return dict(
        _call(
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
    target = _target(api, stack, endpoint_url)
    doc = trigger_run(target, workflow, parse_params(params), idempotency_key)
    if wait:
        err_console.print(f"run [bold]{doc['run_id']}[/] of {workflow} v{doc['version']}")
        _finish(follow_run(target, doc["run_id"], quiet=as_json), as_json)
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
    target = _target(api, stack, endpoint_url)
    printed = 0
    try:
        while True:
            doc = _call(
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


def run_remote(target: Target, file: str, params: dict[str, str], as_json: bool) -> NoReturn:
    """`run FILE --stack/--api`: upload, trigger, follow."""
    uploaded = upload_file(target, file)
    doc = trigger_run(target, uploaded["workflow_id"], params, None)
    if not as_json:
        err_console.print(
            f"run [bold]{doc['run_id']}[/] of {uploaded['workflow_id']} v{uploaded['version']} "
            f"on {target.client.where}"
        )
    _finish(follow_run(target, doc["run_id"], quiet=as_json), as_json)


def remote_target(api: str | None, stack: str | None) -> Target:
    return _target(api, stack, None)
