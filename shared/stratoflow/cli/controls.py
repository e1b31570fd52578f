"""`stratoflow` commands that act on a run through the REST API: `cancel`, `retry` (a
redrive of what did not succeed), `rerun` one task (Airflow's clear) and `mark` a task's
outcome by hand."""

from __future__ import annotations

import json

import click
from rich.text import Text

from stratoflow.cli.api import RESEND, call, find_target, target_options
from stratoflow.cli.exits import err_console, invalid
from stratoflow.cli.following import end_control


@click.command()
@click.argument("run_id")
@target_options
@click.option("--json", "as_json", is_flag=True)
def cancel(
    run_id: str, api: str | None, stack: str | None, endpoint_url: str | None, as_json: bool
) -> None:
    """Cancel RUN_ID: nothing new starts, running tasks are stopped. Cancelling a cancelled
    run changes nothing."""
    doc = call(
        find_target(api, stack, endpoint_url),
        "POST",
        f"/runs/{run_id}/cancel",
        retries=RESEND,
        check=f"stratoflow status {run_id}",
    )
    if as_json:
        click.echo(json.dumps(doc))
    elif doc["changed"]:
        err_console.print(f"run {run_id}: cancelled")
    else:
        err_console.print(f"run {run_id}: already cancelled")


@click.command()
@click.argument("run_id")
@target_options
@click.option("--wait", is_flag=True, help="Follow the run and exit with its outcome.")
@click.option("--json", "as_json", is_flag=True)
def retry(
    run_id: str,
    api: str | None,
    stack: str | None,
    endpoint_url: str | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Rerun what failed in a finished run (failed, upstream_failed, cancelled tasks), with
    the definition version it ran; what succeeded is kept."""
    target = find_target(api, stack, endpoint_url)
    # Not sent again when no answer comes: a redrive that did happen would then be refused
    # as running, which would read as "nothing done".
    doc = call(target, "POST", f"/runs/{run_id}/retry", check=f"stratoflow status {run_id}")
    redo = [t for t, s in doc["tasks"].items() if s["status"] not in ("succeeded", "skipped")]
    if not as_json:
        err_console.print(f"run {run_id}: retrying {len(redo)} task(s)")
    end_control(target, run_id, doc, wait=wait, as_json=as_json)


@click.command()
@click.argument("run_id")
@click.argument("task_id")
@target_options
@click.option(
    "--downstream", is_flag=True, help="Rerun every task that depends on it too, transitively."
)
@click.option("--wait", is_flag=True, help="Follow the run and exit with its outcome.")
@click.option("--json", "as_json", is_flag=True)
def rerun(
    run_id: str,
    task_id: str,
    api: str | None,
    stack: str | None,
    endpoint_url: str | None,
    downstream: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Run TASK_ID of a finished run again (Airflow's clear), and with --downstream what
    depends on it; the rest keep their outcome. The run goes back to running."""
    target = find_target(api, stack, endpoint_url)
    # Not sent again when no answer comes: a rerun that did happen would then be refused
    # as running (see `retry`).
    doc = call(
        target,
        "POST",
        f"/runs/{run_id}/tasks/{task_id}/rerun",
        body={"downstream": downstream},
        check=f"stratoflow status {run_id}",
    )
    if not as_json:
        again = "and what depends on it " if downstream else ""
        err_console.print(
            Text(f"run {run_id}: rerunning {task_id} {again}(drive {doc['redrives']})")
        )
    end_control(target, run_id, doc, wait=wait, as_json=as_json)


@click.command()
@click.argument("run_id")
@click.argument("task_id")
@target_options
@click.option("--success", "state", flag_value="succeeded", help="Mark it succeeded.")
@click.option("--failed", "state", flag_value="failed", help="Mark it failed.")
@click.option("--reason", default="", metavar="TEXT", help="Why: kept with the run.")
@click.option("--wait", is_flag=True, help="Follow the run and exit with its outcome.")
@click.option("--json", "as_json", is_flag=True)
def mark(
    run_id: str,
    task_id: str,
    api: str | None,
    stack: str | None,
    endpoint_url: str | None,
    state: str | None,
    reason: str,
    wait: bool,
    as_json: bool,
) -> None:
    """Set TASK_ID's outcome by hand (--success or --failed), recorded with who and why;
    the run's outcome follows (see docs/operations.md: mark)."""
    if state is None:
        invalid(f"mark {run_id} {task_id}: give --success or --failed")
    target = find_target(api, stack, endpoint_url)
    doc = call(
        target,
        "POST",
        f"/runs/{run_id}/tasks/{task_id}/mark",
        body={"state": state, "reason": reason},
        check=f"stratoflow status {run_id}",
    )
    if not as_json:
        err_console.print(
            Text(f"run {run_id}: {task_id} marked {state}; the run is {doc['status']}")
        )
    end_control(target, run_id, doc, wait=wait, as_json=as_json)
