"""The `stratoflow` command.

Exit codes are a contract users' scripts rely on: 0 the run succeeded (or the input is
valid), 1 the run failed or was cancelled, 2 the input is invalid (and nothing ran).
Messages go to stderr; with --json, stdout carries exactly one JSON document.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape

from stratoflow import cli_console, cli_controls, cli_ops, cli_schedules
from stratoflow.cli_common import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    err_console,
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

T = TypeVar("T")


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
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds running tasks get at shutdown (Ctrl-C, SIGTERM) before they are stopped "
    "and recorded cancelled; a second Ctrl-C stops them at once.",
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
    State lives in STRATOFLOW_HOME (default ./.stratoflow) and survives restarts.

    Ctrl-C or SIGTERM: no new task starts; running tasks get --grace seconds, then are
    stopped and recorded cancelled (exit 0). Exit 1: the engine met a failure it cannot
    recover from (the message says which)."""
    from stratoflow.local.failures import EngineFailed
    from stratoflow.local.runtime import LocalRuntime
    from stratoflow.local.server import FolderServer
    from stratoflow.local.signals import StopSignals, signal_name
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

    def first(signum: int) -> None:
        # From the signals' own thread: no new task starts from now on.
        runtime.drain()
        server.stop()
        err_console.print(
            f"{signal_name(signum)}: stopping; no new task starts, running tasks get "
            f"{grace:g} s (Ctrl-C again: stop them now)",
            markup=False,
        )

    def second(signum: int) -> None:
        runtime.hurry()
        err_console.print(f"{signal_name(signum)} again: stopping running tasks now", markup=False)

    failure: str | None = None
    with StopSignals(first, second):
        try:
            server.start()
        except EngineBusy as exc:
            _invalid(str(exc))
        except sqlite3.Error as exc:
            _invalid(f"cannot open the engine in {home()}: {exc}")
        except OSError as exc:
            _invalid(f"cannot serve the API on 127.0.0.1:{port}: {exc}; pick another with --port")
        try:
            server.serve()
        except EngineFailed as exc:
            failure = exc.reason
        finally:
            server.shutdown(grace, failure)
    if failure is not None:
        err_console.print(
            f"[bold red]error:[/] the local engine stopped: {escape(failure)}; its running "
            "commands were stopped. Fix the cause, then start `stratoflow local up` again.",
            soft_wrap=True,
        )
        sys.exit(EXIT_FAILED)


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
    "--grace",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds running tasks get after Ctrl-C or SIGTERM before they are stopped "
    "(no new task starts meanwhile); a second Ctrl-C stops them at once.",
)
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
    grace: float,
    endpoint_url: str | None,
    stack: str | None,
    api: str | None,
) -> None:
    """Run a workflow file now and wait for it to finish: on the embedded engine by
    default (its history kept in STRATOFLOW_HOME), or on a deployed stack (--stack/--api).

    Ctrl-C or SIGTERM cancels the run: no new task starts, running tasks get --grace
    seconds, then are stopped; all are recorded cancelled (exit 130 on Ctrl-C, 143 on
    SIGTERM)."""
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
    code = _run_locally(
        wf, Path(file), param_values, effective, as_json, endpoint_url, emulator, grace
    )
    sys.exit(code)


def _run_locally(
    wf: Workflow,
    path: Path,
    params: dict[str, str],
    workers: int,
    as_json: bool,
    endpoint_url: str | None,
    emulator: bool,
    grace: float,
) -> int:
    from stratoflow import services
    from stratoflow.local.failures import EngineFailed, unrecoverable
    from stratoflow.local.runtime import LocalRuntime
    from stratoflow.local.signals import StopSignals, exit_code_for, signal_name
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
    wake = threading.Event()

    def first(signum: int) -> None:
        # From the signals' own thread: no new task starts from now on.
        runtime.drain()
        wake.set()
        err_console.print(
            f"{signal_name(signum)}: cancelling the run; no new task starts"
            + (f", running tasks get {grace:g} s (Ctrl-C again: stop them now)" if grace else ""),
            markup=False,
        )

    def second(signum: int) -> None:
        runtime.hurry()
        err_console.print(f"{signal_name(signum)} again: stopping running tasks now", markup=False)

    signals = StopSignals(first, second)
    failure: str | None = None
    doc: Any = None
    with signals:
        try:
            runtime.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                runtime.stop()
            if runtime.embedded:
                _invalid(f"cannot open the engine in {home()}: {exc}")
            _invalid(f"cannot reach the AWS endpoint {endpoint_url or '(emulator)'}: {exc}")
        finished = False
        try:
            run_id = _drive(runtime, wf, path, params, workers, as_json, interactive, wake)
            if signals.first is not None:
                _stop_run(runtime, run_id, grace)
            ports = runtime.ports
            assert ports is not None
            doc = _retrying("reading the run", lambda: services.run_status(ports, run_id))
            finished = True
        except EngineFailed as exc:
            failure = exc.reason
        except Exception as exc:
            # Not a traceback: one line here, the whole story in handlers.log.
            logging.getLogger("stratoflow.local").exception("stratoflow run failed")
            failure = unrecoverable(exc) or f"{type(exc).__name__}: {exc}"
        finally:
            if not finished:
                runtime.drain()
                runtime.cancel.set()  # its commands stop with it
            runtime.stop()
    if failure is not None:
        err_console.print(
            f"[bold red]error:[/] the local engine stopped: {escape(failure)}; the run's "
            "commands were stopped. Fix the cause; `stratoflow local up` on this home then "
            "ends the run.",
            soft_wrap=True,
        )
        return EXIT_FAILED
    assert doc is not None
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        _print_table(doc)
    if signals.first is not None:
        return exit_code_for(signals.first)
    return EXIT_OK if doc["status"] == "succeeded" else EXIT_FAILED


def _retrying(what: str, call: Callable[[], T], attempts: int = 8) -> T:
    """`call()`, tried again after a back-off when it fails transiently (a database locked
    beyond its busy timeout, a connection the emulator closed); EngineFailed when the
    failure cannot heal or persists."""
    from stratoflow.local.failures import EngineFailed, backoff_delay, unrecoverable

    for failures in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            reason = unrecoverable(exc)
            if reason is not None or failures == attempts:
                raise EngineFailed(
                    f"{reason or f'{type(exc).__name__}: {exc}'}, while {what}"
                ) from exc
            logging.getLogger("stratoflow.local").error(
                "stratoflow run: %s failed (%d in a row); trying again",
                what,
                failures,
                exc_info=exc,
            )
            time.sleep(backoff_delay(failures))
    raise AssertionError("unreachable")


def _drive(
    runtime: Any,
    wf: Workflow,
    path: Path,
    params: dict[str, str],
    workers: int,
    as_json: bool,
    interactive: bool,
    wake: threading.Event,
) -> str:
    """Start the run and wait until it ends or a stop is asked for (`wake`); returns its id.

    The wait is in a thread of its own so that the main thread only waits on `wake`, set
    by the run's end, a stop signal or the engine's unrecoverable failure (EngineFailed)."""
    version = runtime.register(wf, str(path.resolve()))
    run_id: str = runtime.request_run(
        wf.id, version, params=params, workdir=str(path.resolve().parent)
    )
    if not as_json:
        err_console.print(
            f"run [bold]{run_id}[/] of {wf.id} v{version} "
            f"({len(wf.tasks)} tasks, {workers} workers)"
        )
    result: dict[str, BaseException] = {}

    def waiter() -> None:
        try:
            runtime.wait(run_id)
        except BaseException as exc:
            result["error"] = exc
        finally:
            wake.set()

    threading.Thread(target=waiter, name="stratoflow-run-wait", daemon=True).start()
    if interactive:
        _follow(runtime, run_id, wake, len(wf.tasks))
    else:
        wake.wait()
    error = result.get("error")
    if error is not None:
        raise error
    return run_id


def _stop_run(runtime: Any, run_id: str, grace: float) -> None:
    """After a stop signal: let running tasks have the grace (the runtime already took no
    new work), then cancel the run, stop what still runs and wait for the reports, so the
    home records every task cancelled or as it ended, none running."""
    from stratoflow import services

    runtime.wait_idle(grace)
    _retrying("cancelling the run", lambda: services.cancel_run(runtime.ports, run_id))
    runtime.cancel.set()
    runtime.quiesce()


def _follow(runtime: Any, run_id: str, done: threading.Event, total: int) -> None:
    """Live progress on the terminal until `done` (the run ended, or a stop was asked for),
    read from the run's own document each time, never tallied from events, so it cannot
    drift (`cli_progress`). A big run's document costs more to read: it is read less often."""
    from rich.live import Live

    from stratoflow import services
    from stratoflow.cli_progress import estimate_left, progress_view

    started = time.monotonic()
    earlier = _earlier_runs(runtime, run_id)
    every = 0.25 if total <= 1000 else 1.0
    with Live(console=err_console, refresh_per_second=4, transient=True) as live:
        while not done.is_set():
            doc = services.run_status(runtime.ports, run_id)
            if doc is not None:
                elapsed = time.monotonic() - started
                live.update(
                    progress_view(
                        doc,
                        elapsed,
                        left=estimate_left(earlier, elapsed),
                        width=err_console.width,
                    )
                )
            done.wait(every)


def _earlier_runs(runtime: Any, run_id: str) -> list[dict[str, Any]]:
    """The workflow's latest runs before this one (for an estimate of the time left)."""
    run = runtime.ports.runs.get_run(run_id)
    if run is None:
        return []
    runs, _ = runtime.ports.runs.page_runs(run.workflow_id, 10, None)
    return [
        {"status": r.status.public, "started_at": r.started_at, "finished_at": r.finished_at}
        for r in runs
        if r.run_id != run_id
    ]


cli_ops.register(main)
cli_controls.register(main)
cli_schedules.register(main)
main.add_command(cli_console.console)

if __name__ == "__main__":  # pragma: no cover
    main()
