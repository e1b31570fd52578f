"""Mending quiet runs (`mend_quiet_runs`, run by the dispatcher's tick): a second chance
for a run whose next step was lost, that does not depend on the message that was lost.

A completion handler that dies after its write and before its sends is normally repaired
by the redelivery of its report (`settlement`). When that report fails every handling
and goes to the dead-letter queue, nothing would ever come back to the run: a task
decided but never sent, a dependent never decided, a retry never sent, the run never
finished. So every started run carries its last sign of life (its start, each
settlement, each look by this tick), and a run quiet for `QUIET_SECONDS` is looked at
whole: what a dead handler may have left undone is done again. Everything done here is
safe to do twice, because each step is one the normal path may repeat: a duplicate task
message is dropped at its claim (invariant 2), a decision is conditional (invariant 3),
a settlement applies once (invariant 1).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from stratoflow.core.plan import Plan
from stratoflow.core.records import RunRecord, TaskRecord, iso, parse_iso
from stratoflow.core.rules import UpstreamCounts
from stratoflow.core.states import RunStatus, TaskStatus

from .bundle import Ports
from .settlement import (
    _UPSTREAM_FIELD,
    _compensation_message,
    _decide_pending,
    _decided_settlement,
    _finish_failed,
    _finish_run,
    _send_retry,
    _settle,
)
from .start import _repair_capped, _task_message

QUIET_SECONDS = 600.0
"""A started run that showed no sign of life for this long is looked at whole. Ten
minutes: well past a healthy handler's redelivery (the report queue's visibility timeout
is six times the completion handler's), short enough that a lost step costs minutes."""
QUIET_BATCH = 20
"""Runs looked at by one tick: each look reads the run's tasks."""


def mend_quiet_runs(
    ports: Ports, quiet_for: float | None = None, limit: int = QUIET_BATCH
) -> list[str]:
    """The dispatcher's tick: look at the started runs quiet for longer than `quiet_for`
    seconds (`QUIET_SECONDS`) and mend each. Returns the ids of the runs it had to mend.

    Each run's last sign of life moves to now first, by a compare-and-set, so that
    concurrent ticks look at a run once and a run is looked at again only after another
    quiet spell."""
    now = ports.clock.now()
    age = QUIET_SECONDS if quiet_for is None else quiet_for
    before = iso(now - timedelta(seconds=age))
    mended: list[str] = []
    for run_id, seen in ports.runs.quiet_runs(before, limit):
        if ports.runs.touch_run(run_id, seen, iso(now)) and mend_run(ports, run_id):
            mended.append(run_id)
    return mended


def mend_run(ports: Ports, run_id: str) -> bool:
    """Do again what a dead handler may have left undone in a started run; True if
    anything was (a run that is quiet because its tasks run long needs nothing)."""
    run = ports.runs.get_run(run_id)
    if run is None or run.started_at is None:
        return False
    if run.status not in (RunStatus.RUNNING, RunStatus.COMPENSATING):
        return False
    plan = ports.definitions.get_plan(run.workflow_id, run.version)
    if run.status is RunStatus.COMPENSATING:
        return _mend_compensation(ports, plan, run)
    acted = _propagate_decided(ports, plan, run)
    decided, acted_now = _decide_from_parents(ports, plan, run)
    acted = _resend(ports, plan, run, skip=decided) or acted or acted_now
    latest = ports.runs.get_run(run_id)
    if (
        latest is not None
        and latest.status is RunStatus.RUNNING
        and latest.final_count >= latest.n_tasks
    ):
        # Its last settlement was written by a handler that died before finishing it.
        _finish_run(ports, plan, latest)
        return True
    return acted


def _propagate_decided(ports: Ports, plan: Plan, run: RunRecord) -> bool:
    """Skips and upstream failures decided but never settled (counted in their dependents
    and the run): settled now, with their cascade."""
    stamp = iso(ports.clock.now())
    unsettled = [
        (task_id, rec.status)
        for task_id, rec in ports.runs.list_tasks(run.run_id).items()
        if rec.status in (TaskStatus.SKIPPED, TaskStatus.UPSTREAM_FAILED)
        and rec.attempt == 0
        and not rec.propagated
    ]
    for task_id, status in unsettled:
        _settle(ports, plan, run.run_id, _decided_settlement(plan, task_id, status, stamp))
    return bool(unsettled)


def _decide_from_parents(ports: Ports, plan: Plan, run: RunRecord) -> tuple[set[str], bool]:
    """Pending tasks that their parents' ends decide, decided now. Counted from the
    parents' own records rather than the task's counters: a settlement of a wide fan-out
    is written in chunks, and a handler that died between two left some counters short.
    Returns the tasks that may have been decided to run (sent by this call) and whether
    anything was done."""
    tasks = ports.runs.list_tasks(run.run_id)
    pending: dict[str, UpstreamCounts] = {}
    for task_id, spec in plan.tasks.items():
        if not spec.depends or _status(tasks, task_id) is not TaskStatus.PENDING:
            continue
        counts: dict[str, int] = {}
        for parent in spec.depends:
            field = _UPSTREAM_FIELD.get(_status(tasks, parent))
            if field is not None:
                counts[field] = counts.get(field, 0) + 1
        pending[task_id] = UpstreamCounts(total=len(spec.depends), **counts)
    stamp = iso(ports.clock.now())
    settled, started = _decide_pending(ports, plan, run, pending, stamp)
    for end in settled:
        _settle(ports, plan, run.run_id, end)
    return set(pending), bool(settled) or started


def _resend(ports: Ports, plan: Plan, run: RunRecord, skip: set[str]) -> bool:
    """Send again what may have been decided and never sent: queued tasks (and, under a
    concurrency cap, waiting tasks never listed, and free slots filled), and retries."""
    tasks = ports.runs.list_tasks(run.run_id)
    now = ports.clock.now()
    stamp = iso(now)
    capped = run.concurrency is not None
    again = [
        _task_message(plan, run, task_id, rec.attempt + 1, stamp)
        for task_id, rec in tasks.items()
        if rec.status is TaskStatus.QUEUED
        and task_id not in skip
        # under a cap, `_repair_capped` sends the never-attempted ones (they hold a slot)
        and not (capped and rec.attempt == 0)
    ]
    if again:
        ports.tasks.send_tasks(again)
    retries = [(task_id, rec) for task_id, rec in tasks.items() if rec.status is _RETRY]
    for task_id, rec in retries:
        _send_retry(ports, plan, run, task_id, rec.attempt + 1, _retry_left(plan, rec, now))
    waiting = any(r.status in (TaskStatus.QUEUED, TaskStatus.WAITING) for r in tasks.values())
    if capped and waiting:
        _repair_capped(ports, plan, run)
    return bool(again or retries) or (capped and waiting)


_RETRY = TaskStatus.UP_FOR_RETRY


def _retry_left(plan: Plan, rec: TaskRecord, now: datetime) -> float:
    """Seconds left of a retry's delay, counted from when its failed attempt settled."""
    settled = parse_iso(rec.settled_at)
    if settled is None:
        return 0.0
    due = settled + timedelta(seconds=plan.tasks[rec.task_id].retry_delay_for(rec.attempt))
    return max(0.0, (due - now).total_seconds())


def _mend_compensation(ports: Ports, plan: Plan, run: RunRecord) -> bool:
    """A failed run's compensations, one at a time: send the next one again, or finish the
    run if the last one was recorded (a duplicate is dropped at its claim)."""
    records = ports.runs.list_compensations(run.run_id)
    if records and records[-1].status == "running":
        return False  # one runs (its executor reports it)
    stamp = iso(ports.clock.now())
    index = len(records)
    if index < len(run.compensations):
        message = _compensation_message(plan, run, run.compensations[index], index, stamp)
        ports.tasks.send_tasks([message])
    else:
        _finish_failed(ports, run, ports.runs.list_tasks(run.run_id), stamp)
    return True


def _status(tasks: dict[str, TaskRecord], task_id: str) -> TaskStatus:
    rec = tasks.get(task_id)
    return TaskStatus.PENDING if rec is None else rec.status
