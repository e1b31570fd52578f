"""What must hold after every chaos run, whatever was injected: each check compares the
engine's records with the commands' own journal and with the trigger rules, and returns
the violations it found as sentences (an empty list: the run is sound)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from stratoflow.core.model import TriggerRule
from stratoflow.core.records import RunRecord, TaskRecord
from stratoflow.core.rules import Decision, UpstreamCounts, decide
from stratoflow.core.states import (
    FINAL_TASK_STATUSES as FINAL,
)
from stratoflow.core.states import GOOD_LEAF_STATUSES, RunStatus, TaskStatus

from .dags import JOURNAL, DagDesign

RAN = (TaskStatus.SUCCEEDED, TaskStatus.FAILED)
_COUNT_FIELD = {
    TaskStatus.SUCCEEDED: "succeeded",
    TaskStatus.FAILED: "failed",
    TaskStatus.UPSTREAM_FAILED: "upstream_failed",
    TaskStatus.SKIPPED: "skipped",
    TaskStatus.CANCELLED: "cancelled",
}


@dataclass
class Journal:
    """The commands' journal: what ran, in the order it happened (one line per start and
    per end, appended by the commands themselves)."""

    starts: dict[tuple[str, int], list[int]] = field(default_factory=lambda: defaultdict(list))
    ends: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    """(task, attempt) → (line, exit code)."""
    lines_of: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls, workdir: Path) -> Journal:
        j = cls()
        path = workdir / JOURNAL
        text = path.read_text() if path.exists() else ""
        for i, line in enumerate(text.splitlines()):
            parts = line.split()
            task_id, attempt = parts[0], int(parts[1])
            j.lines_of[task_id].append(i)
            if parts[2] == "start":
                j.starts[(task_id, attempt)].append(i)
            else:
                j.ends[(task_id, attempt)] = (i, int(parts[3]))
        return j

    def first_start(self, task_id: str) -> int | None:
        found = [i for (t, _), lines in self.starts.items() if t == task_id for i in lines]
        return min(found) if found else None

    def finished_line(self, task_id: str, attempt: int) -> int | None:
        """Where the attempt's command ended: its end line, or its start line when it was
        killed (timed out) before it could write one."""
        if (task_id, attempt) in self.ends:
            return self.ends[(task_id, attempt)][0]
        starts = self.starts.get((task_id, attempt))
        return starts[0] if starts else None


def expected_outcome(
    design: DagDesign, task_id: str, lost: set[tuple[str, int]]
) -> tuple[TaskStatus, int]:
    """The status and final attempt a task that ran must end with: its first attempt that
    was scripted to succeed and was not reported lost succeeds, else the last one fails."""
    t = design.by_id[task_id]
    for n, outcome in enumerate(t.outcomes, start=1):
        if outcome == "ok" and (task_id, n) not in lost:
            return TaskStatus.SUCCEEDED, n
    return TaskStatus.FAILED, t.retries + 1


def check_run(
    design: DagDesign,
    run: RunRecord | None,
    tasks: dict[str, TaskRecord],
    journal: Journal,
    lost: set[tuple[str, int]],
    waiting: list[tuple[str, str]],
    dead_letters: list[str],
    known: list[str] | None = None,
) -> list[str]:
    """Every violation of the suite's invariants in one finished run (the deviations of
    known issues go to `known` instead)."""
    known = [] if known is None else known
    if run is None:
        return ["the run does not exist"]
    bad: list[str] = []
    if run.status not in (RunStatus.SUCCEEDED, RunStatus.FAILED) or not run.finished_at:
        bad.append(f"the run did not end: {run.status.value}")
    status = {t.id: tasks.get(t.id, TaskRecord(t.id)).status for t in design.tasks}
    for t in design.tasks:
        rec = tasks.get(t.id, TaskRecord(t.id))
        parents = Counter(status[p] for p in t.depends)
        # Final states are what the trigger rules imply from the parents' final states.
        ended = {_COUNT_FIELD[s]: n for s, n in parents.items() if s in _COUNT_FIELD}
        counts = UpstreamCounts(total=len(t.depends), **ended)
        decision = decide(t.rule, counts)
        if decision is Decision.WAIT:
            bad.append(f"{t.id}: a parent never ended ({dict(parents)})")
            continue
        if decision is Decision.RUN:
            want, attempt = expected_outcome(design, t.id, lost)
            if rec.status is not want or rec.attempt != attempt:
                bad.append(
                    f"{t.id}: {rec.status.value} at attempt {rec.attempt}, expected "
                    f"{want.value} at attempt {attempt} (lost reports applied: "
                    f"{sorted(n for tid, n in lost if tid == t.id)})"
                )
        else:
            want = TaskStatus.SKIPPED if decision is Decision.SKIP else TaskStatus.UPSTREAM_FAILED
            if rec.status is TaskStatus.SKIPPED and _skip_decided_before_failure(t.rule, counts):
                # Airflow's rule, documented (docs/reliability.md, found #1): all_success
                # decides at once, so a skip that ended first skips the task even when a
                # parent fails later; from final counts alone either outcome is right.
                known.append(f"{t.id}: skipped before a parent's failure was counted")
            elif rec.status is not want:
                bad.append(
                    f"{t.id}: {rec.status.value}, but its rule {t.rule.value} and "
                    f"parents {dict(parents)} make it {want.value}"
                )
        # Counters balanced: each parent's end counted once, in the counter of its status.
        expected_counters = {s: n for s, n in parents.items() if s in _COUNT_FIELD}
        if rec.counters != expected_counters:
            bad.append(
                f"{t.id}: upstream counters {dict(rec.counters)}, parents ended {expected_counters}"
            )
        bad += _journal_checks(design, t.id, status, rec, journal)
    leaves = [t.id for t in design.tasks if not design.children(t.id)]
    leaf_bad = sum(status[t] not in GOOD_LEAF_STATUSES for t in leaves)
    want_run = RunStatus.SUCCEEDED if leaf_bad == 0 else RunStatus.FAILED
    if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED) and run.status is not want_run:
        bad.append(f"run {run.status.value}, but its leaves make it {want_run.value}")
    if run.final_count != len(design.tasks):
        bad.append(f"run final_count {run.final_count}, {len(design.tasks)} tasks")
    if run.leaf_bad != leaf_bad:
        bad.append(f"run leaf_bad {run.leaf_bad}, {leaf_bad} bad leaves")
    if run.active != 0:
        bad.append(f"run still holds {run.active} concurrency slot(s)")
    if waiting:
        bad.append(f"waiting entries left: {waiting}")
    for body in dead_letters:
        if not _accounted_for(body, tasks):
            bad.append(f"a message in a dead-letter queue, its attempt unrecorded: {body[:300]}")
    return bad


def _accounted_for(dead_letter: str, tasks: dict[str, TaskRecord]) -> bool:
    """Whether the records say what became of a dead-lettered message's attempt: the task
    ended in it or moved past it. Such a message was a spare copy (a duplicate, a report of
    an attempt settled meanwhile); any other would leave its run without an outcome."""
    _, _, body = dead_letter.partition(": ")
    try:
        msg = json.loads(body)
        task_id, attempt = str(msg["task_id"]), int(msg["attempt"])
    except (ValueError, KeyError, TypeError):
        return False
    rec = tasks.get(task_id)
    if rec is None:
        return False
    return rec.attempt > attempt or (rec.attempt == attempt and rec.status in FINAL)


def _skip_decided_before_failure(rule: TriggerRule, counts: UpstreamCounts) -> bool:
    """Whether an all_success task whose parents ended with a skip and a failure may have
    been decided on the skip alone (the skipped parent ended first)."""
    bad = counts.failed + counts.upstream_failed + counts.cancelled
    return rule is TriggerRule.ALL_SUCCESS and counts.skipped > 0 and bad > 0


def _journal_checks(
    design: DagDesign,
    task_id: str,
    status: dict[str, TaskStatus],
    rec: TaskRecord,
    journal: Journal,
) -> list[str]:
    bad: list[str] = []
    t = design.by_id[task_id]
    mine = {k: v for k, v in journal.starts.items() if k[0] == task_id}
    if rec.status not in RAN and mine:
        return [f"{task_id}: {rec.status.value}, yet its command ran ({sorted(mine)})"]
    for (_, n), lines in mine.items():
        if len(lines) > 1:
            bad.append(f"{task_id}: attempt {n} ran {len(lines)} times")
        if n > t.retries + 1:
            bad.append(f"{task_id}: attempt {n} ran, beyond its {t.retries} retries")
    if rec.status is TaskStatus.SUCCEEDED:
        end = journal.ends.get((task_id, rec.attempt))
        if end is None or end[1] != 0:
            bad.append(
                f"{task_id}: succeeded at attempt {rec.attempt}, whose command "
                f"{'never ended' if end is None else f'exited {end[1]}'}"
            )
        else:
            after = [i for i in journal.lines_of[task_id] if i > end[0]]
            if after:
                bad.append(f"{task_id}: its command ran again after its success was recorded")
    first = journal.first_start(task_id)
    if first is None or not t.depends or t.rule is TriggerRule.ALWAYS:
        return bad
    # A dependent starts only once the parents its rule needed have ended.
    ended = {}
    for p in t.depends:
        prec_status = status[p]
        prec_attempt = _final_attempt(design, p, journal, prec_status)
        ended[p] = (prec_status, journal.finished_line(p, prec_attempt) if prec_attempt else None)

    def done_before(p: str) -> bool:
        line = ended[p][1]
        # A parent that never ran (skipped, upstream_failed) was decided before its child.
        return line is None or line < first

    if t.rule in (TriggerRule.ONE_SUCCESS, TriggerRule.ONE_FAILED, TriggerRule.ONE_DONE):
        wanted = {
            TriggerRule.ONE_SUCCESS: (TaskStatus.SUCCEEDED,),
            TriggerRule.ONE_FAILED: (TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED),
            TriggerRule.ONE_DONE: (TaskStatus.SUCCEEDED, TaskStatus.FAILED),
        }[t.rule]
        if not any(ended[p][0] in wanted and done_before(p) for p in t.depends):
            bad.append(f"{task_id} ({t.rule.value}) started before any parent ended as needed")
    else:
        early = [p for p in t.depends if not done_before(p)]
        if early:
            bad.append(f"{task_id} ({t.rule.value}) started before its parents {early} ended")
        for p in t.depends:
            later = [i for i in journal.lines_of[p] if i > first]
            if later:
                bad.append(f"{task_id} started while its parent {p} was still running")
    return bad


def _final_attempt(
    design: DagDesign, task_id: str, journal: Journal, status: TaskStatus
) -> int | None:
    if status not in RAN:
        return None
    attempts = [n for (t, n) in journal.starts if t == task_id]
    return max(attempts) if attempts else None
