"""What the `stratoflow` commands share: exit codes, messages, argument parsing, tables."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stratoflow.core.loader import WorkflowFileError, load_workflow
from stratoflow.core.model import PARAM_NAME_PATTERN, Workflow

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
INTERRUPTED = 130

err_console = Console(stderr=True, highlight=False)


def invalid(message: str) -> NoReturn:
    """Print `message` as written (its brackets are not rich markup) and exit 2."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(EXIT_INVALID)


def load(path: str) -> Workflow:
    try:
        return load_workflow(path)
    except WorkflowFileError as err:
        invalid(err.message)


def parse_params(values: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            invalid(f"--param {item!r}: expected NAME=VALUE, e.g. --param region=eu-west-1")
        name = name.strip()
        if not re.fullmatch(PARAM_NAME_PATTERN, name):
            invalid(
                f"--param {item!r}: the name must match {PARAM_NAME_PATTERN} (it becomes "
                f"the environment variable STRATOFLOW_PARAM_{name.upper()})"
            )
        params[name] = value
    return params


def print_table(doc: Mapping[str, Any]) -> None:
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
            escape(lines[-1][:80]) if lines else "",
        )
    console.print(table)
    for c in doc.get("compensations", []):
        console.print(f"compensation {c['task_id']}: {c['status']}")


def progress_line(succeeded: int, failed: int, running: int, total: int, seconds: float) -> str:
    """The live line under a run being followed (rich markup)."""
    return (
        f"[bold]{succeeded}[/] succeeded  [bold red]{failed}[/] failed  "
        f"[bold cyan]{running}[/] running  of {total}  [dim]{seconds:6.1f}s[/]"
    )
