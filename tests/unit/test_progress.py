"""The terminal's view of a run is derived from the run's recorded state (cli.progress)."""

from __future__ import annotations

from typing import Any

from stratoflow.cli.progress import (
    counts_text,
    duration,
    estimate_left,
    progress_view,
    summary_line,
    task_counts,
    task_seconds,
)


def _task(status: str, attempts: int = 1, started: str | None = None, finished: str | None = None):
    return {
        "status": status,
        "attempts": attempts,
        "exit_code": None,
        "timed_out": False,
        "started_at": started,
        "finished_at": finished,
        "output_tail": "",
    }


def _doc(tasks: dict[str, Any], status: str = "running", **extra: Any) -> dict[str, Any]:
    return {
        "run_id": "r1",
        "workflow_id": "wf",
        "status": status,
        "started_at": "2026-12-01T10:00:00Z",
        "finished_at": None,
        "tasks": tasks,
        **extra,
    }


def test_the_flaky_examples_end_is_counted_by_task_not_by_attempt() -> None:
    # flaky took 3 attempts, doomed 2 (both failed): a tally of attempts said
    # "2 succeeded 4 failed"; the run's state says 3 succeeded, 1 failed, 1 upstream_failed.
    doc = _doc(
        {
            "flaky": _task("succeeded", 3),
            "doomed": _task("failed", 2),
            "publish": _task("upstream_failed", 0),
            "alert": _task("succeeded"),
            "cleanup": _task("succeeded"),
        },
        status="failed",
        finished_at="2026-12-01T10:00:04.5Z",
    )
    assert task_counts(doc) == {"succeeded": 3, "failed": 1, "upstream_failed": 1}
    assert counts_text(doc).plain == "3 succeeded · 1 failed · 1 upstream_failed"
    assert summary_line(doc).plain == (
        "run r1 failed: 3 succeeded · 1 failed · 1 upstream_failed · took 4.5s"
    )


def test_every_state_is_counted_including_retries_skips_and_pending() -> None:
    doc = _doc(
        {
            "a": _task("succeeded"),
            "b": _task("up_for_retry", 1),  # a timed-out attempt waiting for its retry
            "c": _task("running", 2),
            "d": _task("skipped", 0),
            "e": _task("queued", 0),
            "f": _task("pending", 0),
            "g": _task("cancelled", 0),
        }
    )
    assert list(task_counts(doc).items()) == [
        ("succeeded", 1),
        ("skipped", 1),
        ("cancelled", 1),
        ("running", 1),
        ("up_for_retry", 1),
        ("queued", 1),
        ("pending", 1),
    ]
    assert sum(task_counts(doc).values()) == len(doc["tasks"])


def test_the_live_view_names_running_and_failed_tasks_as_many_as_fit() -> None:
    tasks = {f"load_{i:02d}": _task("running") for i in range(30)}
    tasks["extract"] = _task("failed")
    view = progress_view(_doc(tasks), 12.34, width=60).plain.splitlines()
    assert view[0] == "1 failed · 30 running  of 31  12.3s"
    running = view[1]
    assert running.startswith("running: load_00, load_01")
    assert running.endswith("more)")
    shown = running.removeprefix("running: ").split(" (+")[0].split(", ")
    assert int(running.rsplit("(+", 1)[1].split()[0]) == 30 - len(shown)
    assert len(running) <= 60
    assert view[2] == "failed: extract"


def test_a_view_with_history_estimates_the_time_left() -> None:
    earlier = [
        {
            "status": "succeeded",
            "started_at": "2026-12-01T09:00:00Z",
            "finished_at": f"2026-12-01T09:00:{s}Z",
        }
        for s in ("10", "20", "30")
    ] + [
        {
            "status": "failed",
            "started_at": "2026-12-01T08:00:00Z",
            "finished_at": "2026-12-01T09:00:00Z",
        }
    ]
    assert estimate_left(earlier, 5.0) == 15.0
    assert estimate_left([], 5.0) is None
    view = progress_view(_doc({"a": _task("running")}), 5.0, left=15.0).plain
    assert "~15.0s left" in view
    assert "longer than usual" in progress_view(_doc({"a": _task("running")}), 50, left=-3).plain


def test_durations_are_compact_and_only_for_finished_tasks() -> None:
    assert [duration(s) for s in (0.25, 12.34, 245, 7380)] == ["250ms", "12.3s", "4m05s", "2h03m"]
    done = _task("succeeded", started="2026-12-01T10:00:00Z", finished="2026-12-01T10:00:02.5Z")
    assert task_seconds(done) == 2.5
    assert task_seconds(_task("running", started="2026-12-01T10:00:00Z")) is None


def test_task_names_with_brackets_are_shown_as_written() -> None:
    view = progress_view(_doc({"[red]x": _task("running")}), 1.0)
    assert "[red]x" in view.plain


def test_the_final_table_shows_ids_whole_durations_and_output_as_written(
    capsys: Any, monkeypatch: Any
) -> None:
    from stratoflow.cli.output import print_table

    monkeypatch.setenv("COLUMNS", "130")
    long_id = "extract_customers_from_the_eu_warehouse"
    doc = _doc(
        {
            long_id: _task("succeeded", 2, "2026-12-01T10:00:00Z", "2026-12-01T10:01:05Z"),
            "b": {
                **_task("failed", 1, "2026-12-01T10:00:00Z", "2026-12-01T10:00:00.5Z"),
                "exit_code": 3,
                "output_tail": "pip install 'stratoflow[local]' [red]boom \x1b[2J\x1b[31mred",
            },
        },
        status="failed",
        finished_at="2026-12-01T10:01:06Z",
    )
    print_table(doc)
    out = capsys.readouterr().out
    assert "\x1b" not in out  # the output's escape sequences are shown, not obeyed
    rows = out.splitlines()
    assert any(long_id in row for row in rows)  # whole, not cut
    assert all(len(row) <= 130 for row in rows)
    [b_row] = [row for row in rows if row.startswith("│ b ")]
    assert "500ms" in b_row and " 3 " in b_row
    assert "pip install 'stratoflow[local]' [red]boom" in b_row
    assert any("1m05s" in row for row in rows)
    assert rows[-1] == "run r1 failed: 1 succeeded · 1 failed · took 1m06s"
