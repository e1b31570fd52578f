"""`stratoflow local up`: a long-lived local engine serving a folder of workflow files and
the REST API, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import click
from rich.markup import escape

from stratoflow.cli.exits import EXIT_FAILED, err_console, invalid
from stratoflow.cli.inputs import EMULATOR, check_emulator
from stratoflow.local import DEFAULT_API_PORT


@click.group()
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
@EMULATOR
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

    check_emulator(emulator)
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
            invalid(str(exc))
        except sqlite3.Error as exc:
            invalid(f"cannot open the engine in {home()}: {exc}")
        except OSError as exc:
            invalid(f"cannot serve the API on 127.0.0.1:{port}: {exc}; pick another with --port")
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
