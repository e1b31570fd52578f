"""Workflows and their schedules: registering a version, the dispatcher's tick (due slots,
expired attempts, runs past their `timeout`), backfills, and the next slot a scheduled
run's end makes room for."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from stratoflow.core.cron import fire_times_between, next_fire_times, recent_fire_times
from stratoflow.core.model import Workflow
from stratoflow.core.records import AttemptReport, RunRecord, WorkflowMeta, iso, parse_iso
from stratoflow.core.states import RunStatus, TaskStatus
from stratoflow.ports import RunCommand

from .bundle import Ports
from .start import start_run

SCHEDULE_TRIGGER = "schedule"
CATCHUP_LIMIT = 100
"""With catchup, at most this many missed slots are kept (the newest): a workflow paused
for a year must not start 8,760 hourly runs."""
DUE_BATCH = 100


def register_workflow(ports: Ports, workflow: Workflow, source: str) -> WorkflowMeta:
    """Store `workflow` as a version (or find its identical one) and make it active.

    A schedule that did not change keeps its place (no slot is skipped or repeated by a
    re-upload); a new or changed schedule starts at its first slot after now.
    """
    now = ports.clock.now()
    version = ports.definitions.save_version(workflow, source, now)
    old = ports.definitions.get_meta(workflow.id)
    next_slot: str | None = None
    if workflow.schedule:
        same = (
            old is not None
            and old.schedule == workflow.schedule
            and old.timezone == workflow.timezone
            and old.next_slot is not None
        )
        if same:
            assert old is not None
            next_slot = old.next_slot
        else:
            first = next_fire_times(workflow.schedule, workflow.timezone, now, 1)
            next_slot = iso(first[0]) if first else None
    meta = WorkflowMeta(
        workflow_id=workflow.id,
        latest_version=version,
        active_version=version,
        paused=old.paused if old else False,
        schedule=workflow.schedule,
        timezone=workflow.timezone,
        catchup=workflow.catchup,
        max_active_runs=workflow.max_active_runs,
        next_slot=next_slot,
        active_runs=old.active_runs if old else 0,
    )
    ports.definitions.activate(meta)
    return meta


def register_source(ports: Ports, workflow: Workflow, source: str) -> WorkflowMeta:
    """Register a workflow file's content as its workflow's active version, remember which
    workflow that file defines (its deletion deactivates it), and clear the file's last
    error."""
    meta = register_workflow(ports, workflow, source)
    ports.definitions.link_source(source, workflow.id)
    ports.definitions.record_source_error(source, None, ports.clock.now().isoformat())
    return meta


def scheduled_run_id(workflow_id: str, slot: datetime) -> str:
    """The run of one (workflow, slot): its id is its idempotency key (invariant 5)."""
    return f"{workflow_id}@{slot.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"


def dispatch_due(ports: Ports) -> list[str]:
    """The dispatcher's tick: start the due slots of every scheduled workflow.

    Safe under duplicated ticks, concurrent dispatchers and skewed clocks: a slot's run id
    is derived from the slot and created conditionally, and a workflow's next slot moves
    forward only by a compare-and-set, so no slot runs twice and none is skipped.
    """
    now = iso(ports.clock.now())
    started: list[str] = []
    for workflow_id in ports.definitions.due_workflows(now, DUE_BATCH):
        started += dispatch_workflow(ports, workflow_id)
    return started


def reap_expired_attempts(ports: Ports, limit: int = 100) -> list[str]:
    """Report as lost the running attempts whose lease has passed (invariant 2).

    A Lambda attempt whose invocation died is found again when SQS redelivers its message;
    a Fargate task that died has no message, so the dispatcher's tick looks for both here.
    A duplicate report is harmless: the completion handler's conditions take one.
    """
    now = ports.clock.now().timestamp()
    reported: list[str] = []
    for run_id, task_id in ports.runs.expired_attempts(now, limit):
        task = ports.runs.get_task(run_id, task_id)
        if task.status is not TaskStatus.RUNNING or (task.lease_until or now) > now:
            continue
        run = ports.runs.get_run(run_id)
        if run is None:
            continue
        ports.completions.send_reports(
            [
                AttemptReport(
                    run_id=run_id,
                    workflow_id=run.workflow_id,
                    version=run.version,
                    task_id=task_id,
                    attempt=task.attempt,
                    lost=True,
                    error="executor lost: the attempt's lease expired",
                )
            ]
        )
        reported.append(f"{run_id}/{task_id}")
    return reported


TIMEOUT_BATCH = 100


def arm_timeout(ports: Ports, run: RunRecord, timeout: float | None) -> RunRecord:
    """Give a new run its deadline, `timeout` seconds after it was created (a workflow's
    run `timeout`); returns the run as it now is. Idempotent: a run that has a deadline,
    or has ended, keeps what it has, so a repeated trigger or tick extends nothing."""
    if not timeout or run.deadline is not None:
        return run
    if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
        return run
    created = parse_iso(run.created_at)
    assert created is not None
    deadline = iso(created + timedelta(seconds=timeout))
    if ports.runs.set_deadline(run.run_id, deadline):
        return replace(run, deadline=deadline)
    return ports.runs.get_run(run.run_id) or run


def nudge_overdue_runs(ports: Ports, limit: int = TIMEOUT_BATCH) -> list[str]:
    """The dispatcher's tick: hand the runs past their deadline to the completion handler
    (`time_out_run`), which fails them and stops their tasks. Returns their ids.

    A running attempt's watch does the same within a second of the deadline
    (`RunCancelWatch`); this finds the runs with no attempt running (waiting for a retry's
    delay, a concurrency slot, or a start), and clears the deadlines of runs that ended."""
    overdue = ports.runs.overdue_runs(iso(ports.clock.now()), limit)
    if overdue:
        ports.completions.send_commands(RunCommand(RunCommand.TIMEOUT, r) for r, _ in overdue)
    return [r for r, _ in overdue]


def timeout_text(seconds: float | None) -> str:
    """A run timeout as its reason shows it: `90s`, `5m`, `1h30m`, `2.5s`."""
    if not seconds:
        return ""
    if seconds < 60:
        return f"{seconds:g}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts)


def dispatch_workflow(ports: Ports, workflow_id: str) -> list[str]:
    """Start this workflow's due slots, oldest first, while max_active_runs allows."""
    started: list[str] = []
    while True:
        now = ports.clock.now()
        meta = ports.definitions.get_meta(workflow_id)
        if (
            meta is None
            or meta.paused
            or not meta.schedule
            or not meta.active_version
            or not meta.next_slot
        ):
            return started
        cursor = parse_iso(meta.next_slot)
        assert cursor is not None
        if cursor > now:
            return started
        if meta.active_runs >= meta.max_active_runs:
            return started  # the slot waits; a finishing run dispatches again
        slot = _slot_to_start(meta, cursor, now)
        plan = ports.definitions.get_plan(workflow_id, meta.active_version)
        # Start first, then advance: a crash in between is repaired by the next tick, which
        # finds the same run id already created and only advances.
        run, _ = start_run(
            ports,
            plan,
            run_id=scheduled_run_id(workflow_id, slot),
            logical_date=iso(slot),
            trigger=SCHEDULE_TRIGGER,
        )
        arm_timeout(ports, run, plan.workflow.timeout)
        following = next_fire_times(meta.schedule, meta.timezone, slot, 1)
        new = iso(following[0]) if following else None
        if ports.definitions.advance_slot(workflow_id, meta.next_slot, new, meta.max_active_runs):
            started.append(scheduled_run_id(workflow_id, slot))


def backfill(ports: Ports, workflow_id: str, start: datetime, end: datetime) -> list[str]:
    """One run per slot in [start, end], with the active version. Idempotent: a slot's run
    id is the scheduler's own, so a second backfill (or the schedule) adds nothing."""
    meta = ports.definitions.get_meta(workflow_id)
    if meta is None or not meta.active_version or not meta.schedule:
        raise LookupError(f"workflow {workflow_id!r} is not registered with a schedule")
    plan = ports.definitions.get_plan(workflow_id, meta.active_version)
    slots = fire_times_between(
        meta.schedule, meta.timezone, start - timedelta(microseconds=1), end, BACKFILL_LIMIT
    )
    created = []
    for slot in slots:
        run, new = start_run(
            ports,
            plan,
            run_id=scheduled_run_id(workflow_id, slot),
            logical_date=iso(slot),
            trigger="backfill",
        )
        arm_timeout(ports, run, plan.workflow.timeout)
        if new:
            created.append(run.run_id)
    return created


BACKFILL_LIMIT = 10_000


def _slot_to_start(meta: WorkflowMeta, cursor: datetime, now: datetime) -> datetime:
    """The slot to start now: the oldest one missed with catchup (at most CATCHUP_LIMIT
    back), else the latest one due. `cursor` is the oldest slot not started."""
    assert meta.schedule
    limit = CATCHUP_LIMIT if meta.catchup else 1
    recent = recent_fire_times(meta.schedule, meta.timezone, now, limit)
    if not recent:
        return cursor
    if meta.catchup:
        return max(cursor, recent[-1])
    return max(cursor, recent[0])


def _scheduled(run: RunRecord) -> str | None:
    return run.workflow_id if run.trigger == SCHEDULE_TRIGGER else None


def _after_scheduled_run(ports: Ports, run: RunRecord) -> None:
    # A slot held back by max_active_runs starts as soon as a run makes room, in order.
    if run.trigger == SCHEDULE_TRIGGER:
        dispatch_workflow(ports, run.workflow_id)
