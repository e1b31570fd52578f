"""What the `stratoflow` commands share: exit codes, messages, argument parsing, tables."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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
    """A run's tasks (status, attempts, how long the last attempt took, exit, the last line
    of output), then its counts by state and its total duration. Ids and states are never
    cut (an id must be copyable: a very long one wraps); the output column gets the room
    left and is cut with an ellipsis."""
    from stratoflow.cli_progress import duration, summary_line, task_seconds

    console = Console()
    colors = {
        "succeeded": "green",
        "failed": "red",
        "upstream_failed": "red",
        "skipped": "yellow",
        "cancelled": "magenta",
    }
    rows: list[tuple[str, str, str, str, str, str]] = []
    for task_id, t in doc["tasks"].items():
        lines = [ln for ln in t["output_tail"].splitlines() if ln.strip()]
        took = task_seconds(t)
        code = (
            "timeout" if t["timed_out"] else ("" if t["exit_code"] is None else str(t["exit_code"]))
        )
        rows.append(
            (
                task_id,
                t["status"],
                str(t["attempts"]),
                "" if took is None else duration(took),
                code,
                visible(lines[-1]) if lines else "",
            )
        )
    headers = ("task", "status", "attempts", "took", "exit", "output (last line)")
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers[:-1])]
    # Each column takes its width plus 3 of border and padding; the table one more. An id
    # longer than the room left by the other columns wraps (folded, never cut).
    others = sum(w + 3 for w in widths[1:]) + 4
    widths[0] = max(4, min(widths[0], console.width - others - 3))
    room = console.width - others - widths[0] - 3 - 3
    table = Table(title=Text(f"{doc['workflow_id']} · run {doc['run_id']} · {doc['status']}"))
    for header, width in zip(headers[:-1], widths, strict=True):
        numeric = header in ("attempts", "took", "exit")
        table.add_column(
            header, width=width, overflow="fold", justify="right" if numeric else "left"
        )
    if room >= 10:
        table.add_column(headers[-1], width=room, no_wrap=True, overflow="ellipsis")
    for task_id, status, attempts, took_text, code, output in rows:
        cells: list[Text | str] = [
            Text(task_id),
            Text(status, style=colors.get(status, "white")),
            attempts,
            took_text,
            code,
        ]
        if room >= 10:
            cells.append(Text(output))
        table.add_row(*cells)
    console.print(table)
    for c in doc.get("compensations", []):
        console.print(Text(f"compensation {c['task_id']}: {c['status']}"))
    console.print(summary_line(doc))


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if chr(c) not in "\t"}


def visible(text: str) -> str:
    """`text` with its control characters shown as escapes (`\\x1b[31m`): a task's output
    in a table neither colours nor moves the terminal, and is shown as it was written."""
    return text.translate(_CONTROL)


def progress_line(succeeded: int, failed: int, running: int, total: int, seconds: float) -> str:
    """The live line under a run being followed (rich markup)."""
    return (
        f"[bold]{succeeded}[/] succeeded  [bold red]{failed}[/] failed  "
        f"[bold cyan]{running}[/] running  of {total}  [dim]{seconds:6.1f}s[/]"
    )
