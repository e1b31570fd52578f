"""Acting on a run from outside: `trigger_run` (the API's and the CLI's start), `cancel_run`
and `retry_run` (a redrive), and `perform` (the work they hand to the completion handler)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace

from stratoflow.core.model import TriggerRule
from stratoflow.core.records import RunRecord, TaskRecord, iso
from stratoflow.core.rules import Decision, decide
from stratoflow.core.states import RunStatus, TaskStatus
from stratoflow.ports import RunCommand, RunNotRetryable

from .bundle import Ports
from .schedules import _after_scheduled_run, _scheduled
from .settlement import _counts, _decided_settlement, _decided_status, _finish_run, _settle
from .start import _decide_and_enqueue, hand_off, queue_run, start_queued_run


def cancel_run(ports: Ports, run_id: str) -> bool:
    """Cancel a queued or running run: nothing new starts, and what runs is stopped.

    The run turns cancelled (a conditional write: a second cancel, or one racing the run's
    own end, changes nothing and returns False); that is all the caller waits for. The
    per-task work (`stop_cancelled_run`) is handed to the completion handler, so a cancel
    answers at once whatever the run's size; if the hand-off fails it is done here. Running
    attempts see the status within CANCEL_POLL_SECONDS and kill their process tree whether
    or not that work has been done yet.
    """
    run = ports.runs.get_run(run_id)
    if run is None or run.status not in (
        RunStatus.QUEUED,
        RunStatus.RUNNING,
        RunStatus.COMPENSATING,
    ):
        return False
    now = iso(ports.clock.now())
    if not ports.runs.finish_run(
        run_id, RunStatus.CANCELLED, now, release_workflow=_scheduled(run)
    ):
        return False
    ports.metrics.count("RunsCancelled", run.workflow_id)
    ports.events.run_finished(run.with_status(RunStatus.CANCELLED, now), [])
    if not hand_off(ports, RunCommand(RunCommand.CANCEL, run_id), run.workflow_id):
        stop_cancelled_run(ports, run_id)
    return True


def stop_cancelled_run(ports: Ports, run_id: str) -> None:
    """A cancel's per-task work, handed off by `cancel_run`: the tasks not yet started are
    marked cancelled, so their messages are dropped at claim, ECS tasks running attempts
    are stopped, and a held-back slot of a schedule may start. Idempotent (each write is
    conditional, stopping a gone worker is no error); nothing for a run not cancelled."""
    run = ports.runs.get_run(run_id)
    if run is None or run.status is not RunStatus.CANCELLED:
        return
    now = iso(ports.clock.now())
    tasks = ports.runs.list_tasks(run_id)
    unstarted = [t for t, rec in tasks.items() if rec.status in _UNSTARTED]
    # Root tasks are enqueued at the start without an item of their own.
    plan = ports.definitions.get_plan(run.workflow_id, run.version)
    unstarted += [t for t in plan.roots if t not in tasks]
    if unstarted:
        ports.runs.cancel_unstarted(run_id, unstarted, now)
    for rec in tasks.values():
        if rec.status is TaskStatus.RUNNING and rec.worker:
            ports.workers.stop(rec.worker, f"stratoflow: run {run_id} cancelled")
    _after_scheduled_run(ports, run)


def perform(ports: Ports, command: RunCommand) -> None:
    """Do the work a request handed off (the completion handler calls this)."""
    if command.command == RunCommand.START:
        start_queued_run(ports, command.run_id)
    elif command.command == RunCommand.CANCEL:
        stop_cancelled_run(ports, command.run_id)
    else:
        raise ValueError(f"unknown run command {command.command!r}")


_UNSTARTED = frozenset(
    {TaskStatus.QUEUED, TaskStatus.WAITING, TaskStatus.PENDING, TaskStatus.UP_FOR_RETRY}
)
_KEPT_ON_RETRY = frozenset({TaskStatus.SUCCEEDED, TaskStatus.SKIPPED})


def retry_run(ports: Ports, run_id: str) -> RunRecord:
    """Redrive a finished run: run again what did not succeed, keep what did.

    Like Step Functions' redrive: the run keeps its id, its params and the definition
    version it pinned. Every task that did not succeed or skip (failed, upstream_failed,
    cancelled, never started) goes back to pending, and so does every skipped task
    downstream of one (its skip was decided from outcomes that are being redone); each
    reset task's upstream counters are rebuilt from the parents kept, the tasks whose
    parents are all kept are decided at once, and the rest follow as usual. Each reset
    task gets its full retry budget again; attempt logs of earlier drives stay readable.

    Raises LookupError if there is no such run, RunNotRetryable if it cannot be redriven.
    """
    run = ports.runs.get_run(run_id)
    if run is None:
        raise LookupError(f"run {run_id!r} does not exist")
    if run.status is RunStatus.COMPENSATING:
        raise RunNotRetryable(
            f"run {run_id!r} failed and is running its compensations: it cannot be retried"
        )
    if run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
        raise RunNotRetryable(
            f"run {run_id!r} is {run.status.value}: only a finished run can be retried"
        )
    if run.status is RunStatus.SUCCEEDED:
        raise RunNotRetryable(f"run {run_id!r} succeeded: it has nothing to retry")
    if run.compensations:
        raise RunNotRetryable(
            f"run {run_id!r} ran its compensations, which undid the tasks that succeeded; "
            "start a new run instead"
        )
    if _scheduled(run):
        meta = ports.definitions.get_meta(run.workflow_id)
        if meta is not None and meta.active_runs >= meta.max_active_runs:
            # A redriven scheduled run counts against max_active_runs again.
            raise RunNotRetryable(
                f"workflow {run.workflow_id!r} already has {meta.active_runs} scheduled "
                f"run(s) running (max_active_runs {meta.max_active_runs}); retry run "
                f"{run_id!r} when one has ended"
            )
    plan = ports.definitions.get_plan(run.workflow_id, run.version)
    tasks = ports.runs.list_tasks(run_id)
    status = {t: (tasks.get(t) or TaskRecord(task_id=t)).status for t in plan.tasks}
    reset = {t for t, st in status.items() if st not in _KEPT_ON_RETRY}
    for task_id in plan.order:  # topological: a skip below a reset task is reset too
        if status[task_id] is TaskStatus.SKIPPED and any(
            p in reset for p in plan.upstream(task_id)
        ):
            reset.add(task_id)
    counters: dict[str, dict[TaskStatus, int]] = {}
    for task_id in reset:
        c: dict[TaskStatus, int] = {}
        for parent in plan.upstream(task_id):
            if parent not in reset:
                c[status[parent]] = c.get(status[parent], 0) + 1
        counters[task_id] = c
    if not ports.runs.redrive(run, counters, len(plan) - len(reset), _scheduled(run)):
        latest = ports.runs.get_run(run_id)
        raise RunNotRetryable(
            f"run {run_id!r} changed while it was being retried "
            f"(now {latest.status.public if latest else 'gone'}); look at it and try again"
        )
    run = replace(
        run,
        status=RunStatus.RUNNING,
        finished_at=None,
        final_count=len(plan) - len(reset),
        leaf_bad=0,
        active=0,
        drive=run.drive + 1,
    )
    ports.metrics.count("RunsRetried", run.workflow_id)
    frontier = [
        t
        for t in plan.order
        if t in reset
        and (
            plan.tasks[t].trigger_rule is TriggerRule.ALWAYS
            or not any(p in reset for p in plan.upstream(t))
        )
    ]
    now = iso(ports.clock.now())
    to_run: list[str] = []
    for task_id in frontier:
        spec = plan.tasks[task_id]
        record = TaskRecord(task_id=task_id, counters=counters[task_id])
        decision = decide(spec.trigger_rule, _counts(len(spec.depends), record))
        if decision is Decision.RUN:
            to_run.append(task_id)
        elif decision is not Decision.WAIT:
            settled = _decided_status(decision)
            if ports.runs.decide_task(run_id, task_id, settled, now):
                _settle(ports, plan, run_id, _decided_settlement(plan, task_id, settled, now))
    _decide_and_enqueue(ports, plan, run, to_run, now)
    if not reset:
        _finish_run(ports, plan, run)
    return run


def trigger_run(
    ports: Ports,
    workflow_id: str,
    params: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
) -> tuple[RunRecord, bool]:
    """Start a run of the workflow's active version now (the API's and the CLI's trigger):
    the run is recorded queued and its start handed off (`queue_run`), so this takes the
    same short time whatever the workflow's size.

    With an idempotency key the run id is derived from (workflow, key), so the same request
    sent any number of times creates one run; the same key with other params is refused.
    Raises LookupError for an unknown or inactive workflow, ValueError for bad params.
    """
    meta = ports.definitions.get_meta(workflow_id)
    if meta is None:
        raise LookupError(f"workflow {workflow_id!r} is not registered")
    if not meta.active_version:
        raise WorkflowInactive(
            f"workflow {workflow_id!r} has no active version (its file was deleted)"
        )
    version = meta.active_version
    run_id = None
    if idempotency_key is not None:
        digest = hashlib.sha256(f"{workflow_id}\0{idempotency_key}".encode()).hexdigest()
        run_id = f"{workflow_id}@key-{digest[:24]}"
    run, created = queue_run(
        ports, workflow_id, version, params=params, run_id=run_id, trigger="api"
    )
    # The key names a request; the same key with another body is a client mistake.
    merged = {**ports.definitions.run_defaults(workflow_id, version).params, **(params or {})}
    if not created and run.version == version and run.params != merged:
        raise IdempotencyConflict(
            f"Idempotency-Key {idempotency_key!r} was used for run {run.run_id} with other params"
        )
    return run, created


class WorkflowInactive(LookupError):
    """The workflow is registered but has no active version."""


class IdempotencyConflict(ValueError):
    """An idempotency key reused with a different request."""
