"""What the commands print: a run's task table, listings that fit the terminal, documents
as JSON or YAML, times in this machine's zone; a task's text always shown as written."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import click
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from stratoflow.core.records import parse_iso

_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "running": "cyan",
    "queued": "cyan",
}


def print_table(doc: Mapping[str, Any]) -> None:
    """A run's tasks (status, attempts, how long the last attempt took, exit, the last line
    of output), then its counts by state and its total duration. Ids and states are never
    cut (an id must be copyable: a very long one wraps); the output column gets the room
    left and is cut with an ellipsis."""
    from stratoflow.cli.progress import duration, summary_line, task_seconds

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


def print_interventions(doc: Mapping[str, Any]) -> None:
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


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if chr(c) not in "\t"}


def visible(text: str) -> str:
    """`text` with its control characters shown as escapes (`\\x1b[31m`): a task's output
    in a table neither colours nor moves the terminal, and is shown as it was written."""
    return text.translate(_CONTROL)


def status_text(status: str) -> Text:
    """A run's status, coloured by what it means."""
    return Text(status, style=_STATUS_STYLE.get(status, ""))


# --------------------------------------------------------------------------- listings

F = TypeVar("F", bound=Callable[..., Any])
OUTPUT_FORMATS = ("table", "json", "yaml")


def output_options(f: F) -> F:
    """`-o json|yaml|table` (kubectl's), `--json` (the same as `-o json`) and `--wide`."""
    f = click.option(
        "--wide", is_flag=True, help="More columns (the table only; json and yaml have all)."
    )(f)
    f = click.option("--json", "as_json", is_flag=True, help="The same as -o json.")(f)
    f = click.option(
        "-o",
        "--output",
        "output",
        type=click.Choice(OUTPUT_FORMATS),
        default="table",
        show_default=True,
        help="How to print: a table, or the document (times in UTC) as JSON or YAML.",
    )(f)
    return f


def output_format(output: str, as_json: bool) -> str:
    """The format `-o` and `--json` ask for (`--json` wins: it is the older spelling)."""
    return "json" if as_json else output


def print_document(doc: Any, fmt: str) -> None:
    """A listing's document on stdout, as JSON (one line) or YAML (its keys in order)."""
    if fmt == "yaml":
        import yaml

        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    else:
        sys.stdout.write(json.dumps(doc) + "\n")


def compact_time(text: str | None, now: datetime | None = None) -> str:
    """A stored UTC time in this machine's zone, short: `17:46:07` today, `12-01 17:46:07`
    this year, `2025-12-01 17:46` before; "" for none."""
    when = parse_iso(text)
    if when is None:
        return ""
    local = when.astimezone()
    today = (now or datetime.now().astimezone()).astimezone()
    if local.date() == today.date():
        return local.strftime("%H:%M:%S")
    if local.year == today.year:
        return local.strftime("%m-%d %H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class Column:
    """A listing's column. A `whole` column (an id, a state) is never cut: a value must be
    copyable from the table. The others wrap, down to their header's width, and `optional`
    ones (lowest `drop` first) are left out when even wrapped they would not fit."""

    header: str
    whole: bool = False
    optional: bool = False
    drop: int = 0
    justify: JustifyMethod = "left"


_NARROWEST = 8
"""A wrapped column keeps at least this many characters (or its header's width)."""


def print_listing(
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[Text]],
    console: Console | None = None,
) -> None:
    """A table of `rows` (`Text` cells: nothing in them is markup) that fits the terminal
    without cutting an id (see `Column`)."""
    out = console or Console()
    keep = list(range(len(columns)))
    natural = [max([len(c.header)] + [r[i].cell_len for r in rows]) for i, c in enumerate(columns)]
    least = [
        w if c.whole else min(w, max(_NARROWEST, len(c.header)))
        for c, w in zip(columns, natural, strict=True)
    ]
    droppable = sorted((c.drop, i) for i, c in enumerate(columns) if c.optional)
    # Each column costs 3 more than its text (padding and its border), the table 1.
    while droppable and sum(least[i] + 3 for i in keep) + 1 > out.width:
        keep.remove(droppable.pop(0)[1])
    table = Table(title=Text(title))
    for i in keep:
        c = columns[i]
        # A whole column wider than the terminal on its own is folded (wrapped, never cut).
        table.add_column(
            c.header,
            no_wrap=c.whole,
            min_width=least[i],
            overflow="fold",
            justify=c.justify,
        )
    for r in rows:
        table.add_row(*(r[i] for i in keep))
    out.print(table)
