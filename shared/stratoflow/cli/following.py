"""Following a run through the REST API until it ends, and ending a command with the
run's outcome: its table (or document), then exit 0 if it succeeded, 1 if not."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, NoReturn

from stratoflow.cli.api import call
from stratoflow.cli.exits import EXIT_FAILED, EXIT_OK, INTERRUPTED, err_console
from stratoflow.cli.output import print_interventions, print_table
from stratoflow.cli.progress import progress_view
from stratoflow.client import Target

FOLLOW_INTERVAL_SECONDS = 1.0
"""How often a followed run or log is looked at again (one API request each time)."""
FINAL = ("succeeded", "failed", "cancelled")


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
                doc = call(target, "GET", f"/runs/{run_id}")
                if doc["status"] in FINAL:
                    return dict(doc)
                if interactive:
                    # Derived from the run's document, as `run`'s view is (cli.progress).
                    live.update(
                        progress_view(doc, time.monotonic() - started, width=err_console.width)
                    )
                time.sleep(FOLLOW_INTERVAL_SECONDS)
    except KeyboardInterrupt:
        err_console.print(
            f"stopped watching; the run goes on (stop it with `stratoflow cancel {run_id}`)"
        )
        sys.exit(INTERRUPTED)


def exit_with_run(doc: dict[str, Any], as_json: bool) -> NoReturn:
    """Print the run (its document with --json, else its table and interventions) and exit
    with its outcome: 0 if it succeeded or still runs, 1 if it failed or was cancelled."""
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        print_table(doc)
        print_interventions(doc)
    sys.exit(EXIT_OK if doc["status"] in ("succeeded", "running", "queued") else EXIT_FAILED)


def end_control(target: Target, run_id: str, answer: Any, *, wait: bool, as_json: bool) -> None:
    """How a command that acted on a run ends: with --wait, following the run to its
    outcome (and exiting with it); else with the API's answer printed under --json."""
    if wait:
        exit_with_run(follow_run(target, run_id, quiet=as_json), as_json)
    if as_json:
        sys.stdout.write(json.dumps(answer) + "\n")
