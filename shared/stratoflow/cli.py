"""The `stratoflow` command.

Exit codes are a contract users' scripts rely on: 0 the run succeeded (or the input is
valid), 1 the run failed or was cancelled, 2 the input is invalid (and nothing ran).
Messages go to stderr; with --json, stdout carries exactly one JSON document.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from stratoflow.core.loader import WorkflowFileError, load_workflow, workflow_json_schema
from stratoflow.core.model import (
    PARAM_NAME_PATTERN,
    Workflow,
    check_param_names_distinct,
    check_params_size,
)

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
INTERRUPTED = 130

err_console = Console(stderr=True, highlight=False)


def _invalid(message: str) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    sys.exit(EXIT_INVALID)


def _load(path: str) -> Workflow:
    try:
        return load_workflow(path)
    except WorkflowFileError as err:
        _invalid(err.message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stratoflow")
def main() -> None:
    """stratoflow: DAG workflows of shell commands, on AWS Lambda/Fargate or locally."""


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate(files: tuple[str, ...]) -> None:
    """Check workflow files; exit 2 with a message naming file, field and value if invalid."""
    problems = []
    for f in files:
        try:
            wf = load_workflow(f)
        except WorkflowFileError as err:
            problems.append(err.message)
            continue
        err_console.print(f"[green]ok[/] {f}: workflow {wf.id!r}, {len(wf.tasks)} tasks")
    if problems:
        for message in problems:
            err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
        sys.exit(EXIT_INVALID)


@main.command()
def schema() -> None:
    """Print the JSON Schema of workflow files (for editors)."""
    click.echo(json.dumps(workflow_json_schema(), indent=2))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True
)
def graph(file: str, fmt: str) -> None:
    """Print the workflow's DAG as Mermaid or Graphviz dot."""
    from stratoflow.core.render import render_dot, render_mermaid

    wf = _load(file)
    click.echo(render_mermaid(wf) if fmt == "mermaid" else render_dot(wf))


@main.command(name="next")
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
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from stratoflow.core.cron import next_fire_times

    schedule, timezone = _schedule_of(target, endpoint_url)
    if after is None:
        start = datetime.now(UTC)
    else:
        try:
            start = datetime.fromisoformat(after.replace("Z", "+00:00"))
        except ValueError:
            _invalid(f"--after {after!r}: expected an ISO 8601 time, e.g. 2026-03-08T00:00:00Z")
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    fires = next_fire_times(schedule, timezone, start, count)
    if as_json:
        click.echo(json.dumps([f.isoformat().replace("+00:00", "Z") for f in fires]))
        return
    zone = ZoneInfo(timezone)
    for fire in fires:
        local = fire.astimezone(zone)
        click.echo(f"{local:%Y-%m-%d %H:%M %Z} ({timezone})  {fire:%Y-%m-%dT%H:%M:%SZ}")


def _schedule_of(target: str, endpoint_url: str | None) -> tuple[str, str]:
    if Path(target).exists() or Path(target).suffix.lower() in (".json", ".yaml", ".yml"):
        wf = _load(target)
        if not wf.schedule:
            _invalid(f"workflow file {target!r} has no schedule")
        return wf.schedule, wf.timezone
    ports = _engine(endpoint_url)
    meta = ports.definitions.get_meta(target)
    if meta is None or not meta.schedule:
        _invalid(
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
        _invalid(str(err))
    except Exception as exc:  # an unreachable endpoint, missing resources: bad input
        _invalid(f"cannot reach the engine at {endpoint_url or '(local server)'}: {exc}")


@main.command()
@_ENDPOINT
@click.option("--json", "as_json", is_flag=True)
def workflows(endpoint_url: str | None, as_json: bool) -> None:
    """Registered workflows: version, schedule, paused, next and last run."""
    ports = _engine(endpoint_url)
    rows = []
    for meta in sorted(ports.definitions.list_workflows(), key=lambda m: m.workflow_id):
        last = ports.runs.list_runs(meta.workflow_id, 1)
        rows.append(
            {
                "workflow_id": meta.workflow_id,
                "version": meta.active_version,
                "latest_version": meta.latest_version,
                "schedule": meta.schedule,
                "timezone": meta.timezone,
                "paused": meta.paused,
                "active": meta.active_version is not None,
                "next_run": meta.next_slot if not meta.paused else None,
                "last_run": last[0].run_id if last else None,
                "last_status": last[0].status.public if last else None,
            }
        )
    errors = ports.definitions.source_errors()
    if as_json:
        click.echo(json.dumps({"workflows": rows, "load_errors": errors}))
        return
    for error in errors:
        err_console.print(
            f"[bold red]rejected upload[/] {error['source']} ({error['at']}): {error['message']}",
            soft_wrap=True,
        )
    table = Table(title="workflows")
    for col in ("workflow", "version", "schedule", "paused", "next run", "last run", "status"):
        table.add_column(col)
    for r in rows:
        sched = f"{r['schedule']} ({r['timezone']})" if r["schedule"] else ""
        table.add_row(
            r["workflow_id"],
            str(r["version"] or "inactive"),
            sched,
            "yes" if r["paused"] else "",
            r["next_run"] or "",
            r["last_run"] or "",
            r["last_status"] or "",
        )
    Console().print(table)


@main.command()
@click.argument("workflow", required=False)
@_ENDPOINT
@click.option("-n", "limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def runs(workflow: str | None, endpoint_url: str | None, limit: int, as_json: bool) -> None:
    """Run history, newest first (of one workflow, or of all)."""
    ports = _engine(endpoint_url)
    ids = [workflow] if workflow else [m.workflow_id for m in ports.definitions.list_workflows()]
    found = [r for wid in ids for r in ports.runs.list_runs(wid, limit)]
    found.sort(key=lambda r: r.created_at, reverse=True)
    rows = [
        {
            "run_id": r.run_id,
            "workflow_id": r.workflow_id,
            "version": r.version,
            "status": r.status.public,
            "trigger": r.trigger,
            "logical_date": r.logical_date,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
        }
        for r in found[:limit]
    ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table(title="runs")
    for col in ("run", "workflow", "v", "status", "trigger", "logical date", "finished"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["run_id"],
            r["workflow_id"],
            str(r["version"]),
            r["status"],
            r["trigger"],
            r["logical_date"],
            r["finished_at"] or "",
        )
    Console().print(table)


@main.command()
@click.argument("run_id")
@_ENDPOINT
@click.option("--json", "as_json", is_flag=True)
def status(run_id: str, endpoint_url: str | None, as_json: bool) -> None:
    """One run's task table (with --json, the same document as `run --json`)."""
    from stratoflow import services

    ports = _engine(endpoint_url)
    doc = services.run_status(ports, run_id)
    if doc is None:
        _invalid(f"no run {run_id!r}")
    if as_json:
        click.echo(json.dumps(doc))
    else:
        _print_table(doc)


@main.command()
@click.argument("workflow")
@_ENDPOINT
def pause(workflow: str, endpoint_url: str | None) -> None:
    """Stop starting scheduled runs of WORKFLOW (running ones go on)."""
    _set_paused(workflow, endpoint_url, True)


@main.command()
@click.argument("workflow")
@_ENDPOINT
def unpause(workflow: str, endpoint_url: str | None) -> None:
    """Resume WORKFLOW's schedule (missed slots follow its `catchup`)."""
    _set_paused(workflow, endpoint_url, False)


def _set_paused(workflow: str, endpoint_url: str | None, paused: bool) -> None:
    ports = _engine(endpoint_url)
    if not ports.definitions.set_paused(workflow, paused):
        _invalid(f"no registered workflow {workflow!r}")
    err_console.print(f"{workflow}: {'paused' if paused else 'unpaused'}")


@main.command()
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
        _invalid(f"--end {end!r} is before --start {start!r}")
    ports = _engine(endpoint_url)
    try:
        created = services.backfill(ports, workflow, begin, finish)
    except LookupError as err:
        _invalid(str(err))
    if as_json:
        click.echo(json.dumps(created))
    else:
        err_console.print(f"{len(created)} run(s) created")
        for run_id in created:
            click.echo(run_id)


def _iso_arg(option: str, value: str) -> Any:
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _invalid(f"{option} {value!r}: expected an ISO 8601 time, e.g. 2026-03-08T00:00:00Z")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@main.group()
def local() -> None:
    """A long-lived local engine on the embedded emulator."""


@local.command()
@click.option(
    "--dir",
    "folder",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False, exists=True),
    help="Folder of workflow files.",
)
@click.option("--workers", type=click.IntRange(1, 256), default=4, show_default=True)
@click.option(
    "--emulator-port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Port of the embedded AWS emulator (default: a free one).",
)
@click.option(
    "--grace",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds running tasks get at shutdown before they are stopped.",
)
@click.option(
    "--clock-speed",
    type=click.FloatRange(min=1.0),
    default=1.0,
    hidden=True,
    help="Run the engine's clock this many times faster (demos, tests).",
)
def up(folder: str, workers: int, emulator_port: int, grace: float, clock_speed: float) -> None:
    """Serve FOLDER: register its workflow files (hot reload) and run their schedules."""
    from stratoflow.local.runtime import LocalRuntime
    from stratoflow.local.server import FolderServer
    from stratoflow.local.target import home

    root = Path(folder).resolve()
    runtime = LocalRuntime(
        workers=workers, state_dir=home(), emulator_port=emulator_port, default_workdir=str(root)
    )
    server = FolderServer(
        root,
        runtime,
        speed=clock_speed,
        say=lambda text: err_console.print(text, soft_wrap=True, markup=False),
    )
    server.start()
    try:
        server.serve()
    except KeyboardInterrupt:
        err_console.print(f"shutting down: running tasks get {grace:g} s")
    finally:
        server.shutdown(grace)


def _parse_params(values: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            _invalid(f"--param {item!r}: expected NAME=VALUE, e.g. --param region=eu-west-1")
        name = name.strip()
        if not re.fullmatch(PARAM_NAME_PATTERN, name):
            _invalid(
                f"--param {item!r}: the name must match {PARAM_NAME_PATTERN} (it becomes "
                f"the environment variable STRATOFLOW_PARAM_{name.upper()})"
            )
        params[name] = value
    return params


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--local",
    "local",
    is_flag=True,
    default=True,
    help="Run on the embedded AWS emulator (the default).",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a parameter (repeatable); may name keys not declared in `params`.",
)
@click.option(
    "--workers",
    type=int,
    default=4,
    show_default=True,
    help="Commands run at once (the workflow's concurrency, if smaller, wins).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document when the run ends.")
@click.option(
    "--endpoint-url",
    default=None,
    metavar="URL",
    help="Use this AWS endpoint (e.g. LocalStack at http://localhost:4566) "
    "instead of the embedded emulator.",
)
def run(
    file: str,
    local: bool,
    params: tuple[str, ...],
    workers: int,
    as_json: bool,
    endpoint_url: str | None,
) -> None:
    """Run a workflow file now, locally, and wait for it to finish."""
    wf = _load(file)
    param_values = _parse_params(params)
    try:
        check_param_names_distinct({**wf.params, **param_values})
        check_params_size({**wf.params, **param_values})
    except ValueError as err:
        _invalid(f"--param: {err}")
    if workers < 1:
        _invalid(f"--workers must be at least 1, got {workers}")
    effective = min(workers, wf.concurrency) if wf.concurrency else workers
    code = _run_locally(wf, Path(file), param_values, effective, as_json, endpoint_url)
    sys.exit(code)


def _run_locally(
    wf: Workflow,
    path: Path,
    params: dict[str, str],
    workers: int,
    as_json: bool,
    endpoint_url: str | None,
) -> int:
    from stratoflow import services
    from stratoflow.local.runtime import LocalRuntime

    state_dir = Path(os.environ.get("STRATOFLOW_HOME", ".stratoflow"))
    runtime = LocalRuntime(workers=workers, state_dir=state_dir, endpoint_url=endpoint_url)
    interactive = err_console.is_terminal and not as_json
    try:
        runtime.start()
    except Exception as exc:
        _invalid(f"cannot reach the AWS endpoint {endpoint_url or '(embedded)'}: {exc}")
    try:
        version = runtime.register(wf, str(path.resolve()))
        run_id = runtime.request_run(
            wf.id, version, params=params, workdir=str(path.resolve().parent)
        )
        if not as_json:
            err_console.print(
                f"run [bold]{run_id}[/] of {wf.id} v{version} "
                f"({len(wf.tasks)} tasks, {workers} workers)"
            )
        try:
            if interactive:
                _follow(runtime, run_id, len(wf.tasks))
            else:
                runtime.wait(run_id)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: cancelling the run, stopping its tasks")
            assert runtime.ports is not None
            services.cancel_run(runtime.ports, run_id)
            runtime.cancel.set()
            runtime.quiesce()
            code = INTERRUPTED
        else:
            code = None
        assert runtime.ports is not None
        doc = services.run_status(runtime.ports, run_id)
        assert doc is not None
    finally:
        runtime.stop()
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        _print_table(doc)
    if code is not None:
        return code
    return EXIT_OK if doc["status"] == "succeeded" else EXIT_FAILED


def _follow(runtime: Any, run_id: str, total: int) -> None:
    """Live progress on the terminal until the run ends."""
    from rich.live import Live

    done = threading.Event()
    result: dict[str, Any] = {}

    def waiter() -> None:
        try:
            result["run"] = runtime.wait(run_id)
        except BaseException as exc:
            result["error"] = exc
        finally:
            done.set()

    threading.Thread(target=waiter, daemon=True).start()
    started = time.monotonic()
    with Live(console=err_console, refresh_per_second=8, transient=True) as live:
        while not done.wait(0.125):
            p = runtime.progress
            live.update(
                f"[bold]{p.succeeded}[/] succeeded  [bold red]{p.failed}[/] failed  "
                f"[bold cyan]{p.running}[/] running  of {total}  "
                f"[dim]{time.monotonic() - started:6.1f}s[/]"
            )
    if "error" in result:
        raise result["error"]


def _print_table(doc: dict[str, Any]) -> None:
    console = Console()
    table = Table(title=f"{doc['workflow_id']} · run {doc['run_id']} · {doc['status']}")
    for col in ("task", "status", "attempts", "exit", "output (last line)"):
        table.add_column(col)
    colors = {
        "succeeded": "green",
        "failed": "red",
        "upstream_failed": "red",
        "skipped": "yellow",
        "cancelled": "magenta",
    }
    for task_id, t in doc["tasks"].items():
        lines = [ln for ln in t["output_tail"].splitlines() if ln.strip()]
        table.add_row(
            task_id,
            f"[{colors.get(t['status'], 'white')}]{t['status']}[/]",
            str(t["attempts"]),
            "timeout"
            if t["timed_out"]
            else ("" if t["exit_code"] is None else str(t["exit_code"])),
            (lines[-1][:80] if lines else ""),
        )
    console.print(table)
    for c in doc.get("compensations", []):
        console.print(f"compensation {c['task_id']}: {c['status']}")


if __name__ == "__main__":  # pragma: no cover
    main()
