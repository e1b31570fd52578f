"""A run's live view and its closing summary on the terminal, derived from its document.

Derived from the run's recorded state, never from a tally of events, so it cannot drift:
a retried attempt, a timeout or a task settled without running (skipped, upstream_failed)
counts as the state the run records for it.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.text import Text

from stratoflow.core.records import parse_iso

TASK_STATES: tuple[str, ...] = (
    "succeeded",
    "failed",
    "upstream_failed",
    "skipped",
    "cancelled",
    "running",
    "up_for_retry",
    "queued",
    "waiting",
    "pending",
)
"""The order counts are shown in: outcomes first, then what is still to come."""

_STYLE = {
    "succeeded": "bold green",
    "failed": "bold red",
    "upstream_failed": "bold red",
    "skipped": "bold yellow",
    "cancelled": "bold magenta",
    "running": "bold cyan",
    "up_for_retry": "bold yellow",
}
_FINAL = frozenset({"succeeded", "failed", "upstream_failed", "skipped", "cancelled"})


def task_counts(doc: Mapping[str, Any]) -> dict[str, int]:
    """How many of the run's tasks are in each state, in `TASK_STATES` order (zeros left
    out; a state this version does not know comes last)."""
    counts: dict[str, int] = {}
    for task in doc["tasks"].values():
        counts[task["status"]] = counts.get(task["status"], 0) + 1
    order = {s: i for i, s in enumerate(TASK_STATES)}
    return dict(sorted(counts.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def counts_text(doc: Mapping[str, Any]) -> Text:
    """`3 succeeded · 1 failed · 1 upstream_failed`, styled by state."""
    out = Text()
    for i, (state, n) in enumerate(task_counts(doc).items()):
        if i:
            out.append(" · ")
        out.append(str(n), style=_STYLE.get(state, "bold"))
        out.append(f" {state}")
    return out


def duration(seconds: float) -> str:
    """A compact duration: `850ms`, `12.3s`, `4m05s`, `2h03m`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        minutes, secs = divmod(int(seconds), 60)
        return f"{minutes}m{secs:02d}s"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m"


def _names(label: str, names: Sequence[str], room: int) -> Text:
    """`running: a, b, c (+4 more)` within about `room` characters."""
    out = Text(f"{label}: ", style="dim")
    shown: list[str] = []
    used = len(label) + 2
    for name in names:
        more = f" (+{len(names) - len(shown)} more)"
        if shown and used + len(name) + 2 + len(more) > room:
            break
        shown.append(name)
        used += len(name) + 2
    out.append(", ".join(shown))
    if len(shown) < len(names):
        out.append(f" (+{len(names) - len(shown)} more)", style="dim")
    return out


def progress_view(
    doc: Mapping[str, Any], elapsed: float, *, left: float | None = None, width: int = 80
) -> Text:
    """The live view under a run being followed: counts by state of all its tasks, the
    elapsed time and (from earlier runs) an estimate of the time left; then which tasks
    run now and which failed, as many names as fit the terminal's width."""
    total = len(doc["tasks"])
    view = counts_text(doc)
    view.append(f"  of {total}", style="dim")
    view.append(f"  {duration(elapsed)}", style="dim")
    if left is not None:
        view.append(f"  ~{duration(left)} left" if left > 0 else "  (longer than usual)")
    tasks: Mapping[str, Mapping[str, Any]] = doc["tasks"]
    running = [t for t, task in tasks.items() if task["status"] == "running"]
    failed = [t for t, task in tasks.items() if task["status"] == "failed"]
    if running:
        view.append("\n")
        view.append_text(_names("running", running, width))
    if failed:
        view.append("\n")
        view.append_text(_names("failed", failed, width))
    return view


def summary_line(doc: Mapping[str, Any]) -> Text:
    """The line after a run ends: its outcome, its counts and how long it took."""
    out = Text(f"run {doc['run_id']} {doc['status']}: ", style="bold")
    out.append_text(counts_text(doc))
    took = run_seconds(doc)
    if took is not None:
        out.append(f" · took {duration(took)}")
    return out


def run_seconds(doc: Mapping[str, Any]) -> float | None:
    """How long a finished run took (None while it runs or when its times are unknown)."""
    return _between(doc.get("started_at"), doc.get("finished_at"))


def task_seconds(task: Mapping[str, Any]) -> float | None:
    """How long a task's last attempt took (None if it has not run to its end)."""
    if task.get("status") not in _FINAL:
        return None
    return _between(task.get("started_at"), task.get("finished_at"))


def _between(start: str | None, end: str | None) -> float | None:
    a, b = parse_iso(start), parse_iso(end)
    if a is None or b is None:
        return None
    return max(0.0, (b - a).total_seconds())


def estimate_left(earlier: Iterable[Mapping[str, Any]], elapsed: float) -> float | None:
    """Time left, from the median duration of earlier succeeded runs of the workflow (run
    summaries: status, started_at, finished_at); None without such history."""
    took = [
        s
        for run in earlier
        if run.get("status") == "succeeded"
        and (s := _between(run.get("started_at"), run.get("finished_at"))) is not None
    ]
    if not took:
        return None
    return statistics.median(took) - elapsed
