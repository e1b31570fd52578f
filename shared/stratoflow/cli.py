"""The `stratoflow` command.

Exit codes are a contract users' scripts rely on: 0 the run succeeded (or the input is
valid), 1 the run failed or was cancelled, 2 the input is invalid (and nothing ran).
Messages go to stderr; with --json, stdout carries exactly one JSON document.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from stratoflow import cli_ops
from stratoflow.cli_common import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    INTERRUPTED,
    err_console,
    progress_line,
)
from stratoflow.cli_common import invalid as _invalid
from stratoflow.cli_common import load as _load
from stratoflow.cli_common import parse_params as _parse_params
from stratoflow.cli_common import print_table as _print_table
from stratoflow.core.loader import WorkflowFileError, load_workflow, workflow_json_schema
from stratoflow.core.model import (
    Workflow,
    check_param_names_distinct,
    check_params_size,
)
from stratoflow.local.http import DEFAULT_API_PORT


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
        err_console.print(f"[green]ok[/] {escape(f)}: workflow {wf.id!r}, {len(wf.tasks)} tasks")
    if problems:
        for message in problems:
            err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
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


_EMULATOR = click.option(
    "--emulator",
    is_flag=True,
    help="Run the AWS adapters on an embedded moto server instead of the embedded engine "
    "(needs the extra: pip install 'stratoflow[emulator]').",
)


def _check_emulator(emulator: bool) -> None:
    if not emulator:
        return
    import importlib.util

    if importlib.util.find_spec("moto") is None:
        _invalid(
            "--emulator needs moto, an optional extra: pip install 'stratoflow[emulator]' "
            "(or leave --emulator out to use the embedded engine)"
        )


@main.group()
def local() -> None:
    """A long-lived local engine: the embedded engine (SQLite in STRATOFLOW_HOME)."""


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
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_API_PORT,
    show_default=True,
    help="Port of the REST API on 127.0.0.1 (0: a free one).",
)
@_EMULATOR
def up(
    folder: str,
    workers: int,
    emulator_port: int,
    grace: float,
    clock_speed: float,
    port: int,
    emulator: bool,
) -> None:
    """Serve FOLDER: register its workflow files (hot reload), run their schedules, and
    serve the REST API on 127.0.0.1:PORT (what `stratoflow status/trigger/logs/…` use).
    State lives in STRATOFLOW_HOME (default ./.stratoflow) and survives restarts."""
    from stratoflow.local.runtime import LocalRuntime
    from stratoflow.local.server import FolderServer
    from stratoflow.local.target import EngineBusy, home

    _check_emulator(emulator)
    root = Path(folder).resolve()
    runtime = LocalRuntime(
        workers=workers,
        state_dir=home(),
        emulator=emulator,
        emulator_port=emulator_port,
        default_workdir=str(root),
    )
    server = FolderServer(
        root,
        runtime,
        speed=clock_speed,
        say=lambda text: err_console.print(text, soft_wrap=True, markup=False),
        api_port=port,
    )
    try:
        server.start()
    except EngineBusy as exc:
        _invalid(str(exc))
    except OSError as exc:
        _invalid(f"cannot serve the API on 127.0.0.1:{port}: {exc}; pick another with --port")
    try:
        server.serve()
    except KeyboardInterrupt:
        err_console.print(f"shutting down: running tasks get {grace:g} s")
    finally:
        server.shutdown(grace)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--local", "local", is_flag=True, default=True, hidden=True)
@_EMULATOR
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
    help="Use the AWS adapters at this endpoint (e.g. LocalStack at http://localhost:4566) "
    "instead of the embedded engine.",
)
@click.option(
    "--stack",
    default=None,
    metavar="NAME",
    help="Run on this deployed stack instead: upload the file, trigger it, follow the run.",
)
@click.option("--api", default=None, metavar="URL", help="Like --stack, given the API's URL.")
def run(
    file: str,
    local: bool,
    emulator: bool,
    params: tuple[str, ...],
    workers: int,
    as_json: bool,
    endpoint_url: str | None,
    stack: str | None,
    api: str | None,
) -> None:
    """Run a workflow file now and wait for it to finish: on the embedded engine by
    default (its history kept in STRATOFLOW_HOME), or on a deployed stack (--stack/--api)."""
    wf = _load(file)
    param_values = _parse_params(params)
    try:
        check_param_names_distinct({**wf.params, **param_values})
        check_params_size({**wf.params, **param_values})
    except ValueError as err:
        _invalid(f"--param: {err}")
    if sum(bool(x) for x in (endpoint_url, stack or api, emulator)) > 1:
        _invalid("give at most one of --endpoint-url, --stack/--api and --emulator")
    _check_emulator(emulator)
    if stack or api:
        cli_ops.run_remote(cli_ops.remote_target(api, stack), file, param_values, as_json)
    if workers < 1:
        _invalid(f"--workers must be at least 1, got {workers}")
    effective = min(workers, wf.concurrency) if wf.concurrency else workers
    code = _run_locally(wf, Path(file), param_values, effective, as_json, endpoint_url, emulator)
    sys.exit(code)


def _run_locally(
    wf: Workflow,
    path: Path,
    params: dict[str, str],
    workers: int,
    as_json: bool,
    endpoint_url: str | None,
    emulator: bool,
) -> int:
    from stratoflow import services
    from stratoflow.local.runtime import LocalRuntime
    from stratoflow.local.target import home

    # A channel of its own: other `stratoflow run` processes and a `local up` on the same
    # home do not take this run's tasks (a `local up` adopts them if this process dies).
    runtime = LocalRuntime(
        workers=workers,
        state_dir=home(),
        endpoint_url=endpoint_url,
        emulator=emulator,
        channel=f"run-{os.getpid()}-{os.urandom(4).hex()}",
    )
    interactive = err_console.is_terminal and not as_json
    try:
        runtime.start()
    except Exception as exc:
        if runtime.embedded:
            _invalid(f"cannot open the engine in {home()}: {exc}")
        _invalid(f"cannot reach the AWS endpoint {endpoint_url or '(emulator)'}: {exc}")
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
            code: int | None = INTERRUPTED
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
                progress_line(p.succeeded, p.failed, p.running, total, time.monotonic() - started)
            )
    if "error" in result:
        raise result["error"]


cli_ops.register(main)

if __name__ == "__main__":  # pragma: no cover
    main()
