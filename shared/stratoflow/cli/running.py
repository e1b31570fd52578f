"""`stratoflow run FILE`: run a workflow file now and wait for its end, on the home's
embedded engine in this process (or the AWS adapters), or on a deployed stack."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.markup import escape

from stratoflow.cli.api import find_target
from stratoflow.cli.exits import EXIT_FAILED, EXIT_OK, err_console, invalid
from stratoflow.cli.following import exit_with_run, follow_run
from stratoflow.cli.inputs import EMULATOR, check_emulator, load, parse_params
from stratoflow.cli.output import print_table
from stratoflow.cli.runs import trigger_run
from stratoflow.cli.workflows import upload_file
from stratoflow.client import Target
from stratoflow.core.field_checks import check_param_names_distinct, check_params_size
from stratoflow.core.model import Workflow
from stratoflow.core.records import parse_iso

T = TypeVar("T")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--local", "local", is_flag=True, default=True, hidden=True)
@EMULATOR
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
    wf = load(file)
    param_values = parse_params(params)
    try:
        check_param_names_distinct({**wf.params, **param_values})
        check_params_size({**wf.params, **param_values})
    except ValueError as err:
        invalid(f"--param: {err}")
    if sum(bool(x) for x in (endpoint_url, stack or api, emulator)) > 1:
        invalid("give at most one of --endpoint-url, --stack/--api and --emulator")
    check_emulator(emulator)
    if stack or api:
        _run_remote(find_target(api, stack, None), file, param_values, as_json)
    if workers < 1:
        invalid(f"--workers must be at least 1, got {workers}")
    effective = min(workers, wf.concurrency) if wf.concurrency else workers
    code = _run_locally(
        wf, Path(file), param_values, effective, as_json, endpoint_url, emulator, grace
    )
    sys.exit(code)


def _run_remote(target: Target, file: str, params: dict[str, str], as_json: bool) -> NoReturn:
    """`run FILE --stack/--api`: upload, trigger, follow."""
    uploaded = upload_file(target, file)
    doc = trigger_run(target, uploaded["workflow_id"], params, None)
    if not as_json:
        err_console.print(
            f"run [bold]{doc['run_id']}[/] of {uploaded['workflow_id']} v{uploaded['version']} "
            f"on {target.client.where}"
        )
    exit_with_run(follow_run(target, doc["run_id"], quiet=as_json), as_json)


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
                invalid(f"cannot open the engine in {home()}: {exc}")
            invalid(f"cannot reach the AWS endpoint {endpoint_url or '(emulator)'}: {exc}")
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
        print_table(doc)
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
            wait_watching(runtime, run_id)
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


WATCH_SECONDS = 30.0
"""How often a waiting `stratoflow run` looks at its run as `local up`'s tick would."""


def wait_watching(runtime: Any, run_id: str) -> None:
    """Wait for the run's end, doing for it what `local up`'s tick does for every run (this
    process ticks no schedule: it runs one run): end it at its deadline, even with no
    attempt running (a retry's delay, say), and mend it once no task has settled for
    `services.QUIET_SECONDS` (a step lost with a report that went to the dead-letter
    queue). A failed look is logged and tried at the next one."""
    from stratoflow import services
    from stratoflow.services import mend

    ports = runtime.ports
    settled, since = -1, time.monotonic()
    deadline: float | None = None
    while True:
        try:
            run = ports.runs.get_run(run_id)
            if run is not None:
                due = parse_iso(run.deadline)
                deadline = due.timestamp() if due is not None else None
                if deadline is not None and time.time() >= deadline:
                    services.time_out_run(ports, run_id)
                if run.final_count != settled:
                    settled, since = run.final_count, time.monotonic()
                elif time.monotonic() - since >= mend.QUIET_SECONDS:
                    services.mend_run(ports, run_id)
                    since = time.monotonic()
        except Exception:
            logging.getLogger("stratoflow.local").warning(
                "watching run %s failed; looking again later", run_id, exc_info=True
            )
        timeout = WATCH_SECONDS if deadline is None else deadline - time.time() + 0.05
        try:
            runtime.wait(run_id, timeout=max(0.05, min(WATCH_SECONDS, timeout)))
            return
        except TimeoutError:
            pass


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
    drift (`stratoflow.cli.progress`). A big run's document costs more to read: it is read
    less often."""
    from rich.live import Live

    from stratoflow import services
    from stratoflow.cli.progress import estimate_left, progress_view

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
