"""Acting on a run from outside: `trigger_run` (the API's and the CLI's start), `cancel_run`,
`retry_run` (a redrive), `rerun_task` and `mark_task` (one task of a run, by hand; both
redrive a finished run), `time_out_run` (a run past its `timeout`), and `perform` (the work
they hand to the completion handler)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta

from stratoflow.core.model import TriggerRule
from stratoflow.core.plan import Plan
from stratoflow.core.records import MarkRecord, RunRecord, TaskRecord, iso, parse_iso
from stratoflow.core.rules import Decision, decide
from stratoflow.core.states import FINAL_TASK_STATUSES, GOOD_LEAF_STATUSES, RunStatus, TaskStatus
from stratoflow.ports import RunCommand, RunNotRetryable, Settlement

from .bundle import Ports
from .schedules import _after_scheduled_run, _scheduled, arm_timeout, timeout_text
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
    _stop_tasks(ports, run, "cancelled")
    _after_scheduled_run(ports, run)


def _stop_tasks(ports: Ports, run: RunRecord, why: str) -> None:
    """An ended run's tasks not yet started are marked cancelled (their messages are then
    dropped at claim) and the ECS tasks running its attempts are stopped; attempts running
    elsewhere see the run's end within CANCEL_POLL_SECONDS and stop themselves."""
    now = iso(ports.clock.now())
    tasks = ports.runs.list_tasks(run.run_id)
    unstarted = [t for t, rec in tasks.items() if rec.status in _UNSTARTED]
    # Root tasks are enqueued at the start without an item of their own.
    plan = ports.definitions.get_plan(run.workflow_id, run.version)
    unstarted += [t for t in plan.roots if t not in tasks]
    if unstarted:
        ports.runs.cancel_unstarted(run.run_id, unstarted, now)
    for rec in tasks.values():
        if rec.status is TaskStatus.RUNNING and rec.worker:
            ports.workers.stop(rec.worker, f"stratoflow: run {run.run_id} {why}")


def perform(ports: Ports, command: RunCommand) -> None:
    """Do the work a request handed off (the completion handler calls this)."""
    if command.command == RunCommand.START:
        start_queued_run(ports, command.run_id)
    elif command.command == RunCommand.CANCEL:
        stop_cancelled_run(ports, command.run_id)
    elif command.command == RunCommand.TIMEOUT:
        time_out_run(ports, command.run_id)
    elif command.command == RunCommand.SETTLED:
        end_if_settled(ports, command)
    else:
        raise ValueError(f"unknown run command {command.command!r}")


class ReportPending(Exception):
    """A SETTLED command came before its attempt's report was recorded: to be delivered
    again (the completion handler fails the message, the queue redelivers it)."""


def end_if_settled(ports: Ports, command: RunCommand) -> bool:
    """Finish a redriven run whose every task is final, once the report of the attempt
    named by `command` (a SETTLED command its executor sent after it) has been recorded.
    Only executors of earlier versions send it (kept for their commands at an upgrade);
    a settlement in drive > 0 now reads the run when it may be the last (architecture.md,
    "Redrive"). True if it finished the run."""
    assert command.task_id is not None
    task = ports.runs.get_task(command.run_id, command.task_id)
    if (
        task.status is TaskStatus.RUNNING
        and task.attempt == command.attempt
        and task.drive == command.drive
    ):
        raise ReportPending(
            f"run {command.run_id!r}: the report of {command.task_id!r} attempt "
            f"{command.attempt} is not recorded yet"
        )
    run = ports.runs.get_run(command.run_id)
    if run is None or run.status is not RunStatus.RUNNING or run.final_count < run.n_tasks:
        return False
    _finish_run(ports, ports.definitions.get_plan(run.workflow_id, run.version), run)
    return True


def time_out_run(ports: Ports, run_id: str) -> bool:
    """Fail a running run that has passed its deadline (the workflow's `timeout`), with
    the reason "run timed out after …", and stop its tasks as a cancel does: unstarted
    ones are marked cancelled, running attempts see the run's end within a second and are
    killed (recorded cancelled). No compensation runs: the run did not fail by a task.
    True if this call ended it. A run not running, or not yet due, is left alone; the
    deadline of a run that has ended is no longer listed (`RunStore.clear_deadline`)."""
    run = ports.runs.get_run(run_id)
    if run is None:
        return False
    now = ports.clock.now()
    deadline = parse_iso(run.deadline)
    ended = False
    if run.status is RunStatus.RUNNING and deadline is not None and deadline <= now:
        limit = ports.definitions.run_defaults(run.workflow_id, run.version).timeout
        reason = f"run timed out after {timeout_text(limit)}" if limit else "run timed out"
        stamp = iso(now)
        if ports.runs.finish_run(
            run_id, RunStatus.FAILED, stamp, release_workflow=_scheduled(run), reason=reason
        ):
            ended = True
            ports.metrics.count("RunsTimedOut", run.workflow_id)
            done = replace(run.with_status(RunStatus.FAILED, stamp), reason=reason)
            ports.events.run_finished(done, [])
            _stop_tasks(ports, done, "timed out")
            _after_scheduled_run(ports, run)
        latest = ports.runs.get_run(run_id)
        if latest is None:
            return ended
        run = latest
    if run.deadline and run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
        ports.runs.clear_deadline(run_id, run.deadline)
    return ended


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
    if run.status is RunStatus.SUCCEEDED:
        raise RunNotRetryable(f"run {run_id!r} succeeded: it has nothing to retry")
    _check_redrivable(ports, run, "retried")
    plan = ports.definitions.get_plan(run.workflow_id, run.version)
    status = _statuses(ports, plan, run_id)
    reset = {t for t, st in status.items() if st not in _KEPT_ON_RETRY}
    for task_id in plan.order:  # topological: a skip below a reset task is reset too
        if status[task_id] is TaskStatus.SKIPPED and any(
            p in reset for p in plan.upstream(task_id)
        ):
            reset.add(task_id)
    ports.metrics.count("RunsRetried", run.workflow_id)
    return _redrive(ports, plan, run, status, reset)


def rerun_task(ports: Ports, run_id: str, task_id: str, downstream: bool = False) -> RunRecord:
    """Run one task of a finished run again (Airflow's "clear"), and with `downstream`
    every task that depends on it, transitively; the rest keep their outcome, whatever it
    was. Without `downstream` its dependents keep theirs too: one that did not run because
    this task failed stays upstream_failed. Tasks that never ended (the run was cancelled
    or timed out around them) are decided again as well, or the run could not end. The
    run goes back to running in its next drive (a redrive, as `retry_run`) and ends as
    usual: failed if a leaf kept or rerun did not succeed or skip.

    Raises LookupError for an unknown run or task, RunNotRetryable if the run is not
    finished or cannot be redriven.
    """
    run, plan = _run_and_plan(ports, run_id, task_id)
    _check_redrivable(ports, run, "rerun")
    status = _statuses(ports, plan, run_id)
    reset = {task_id} | _unended(status)
    if downstream:
        reset |= _descendants(plan, task_id)
    ports.metrics.count("TasksRerun", run.workflow_id)
    return _redrive(ports, plan, run, status, reset)


MARKABLE = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED})


def mark_task(
    ports: Ports,
    run_id: str,
    task_id: str,
    status: TaskStatus,
    *,
    by: str,
    reason: str = "",
) -> RunRecord:
    """Set a task's outcome by hand (Airflow's "mark success/failed"), recorded in the
    run's marks with who (`by`), when and why (`reason`); the run's outcome follows.

    - In a running run, a task not yet ended (pending, waiting, queued, running, up for
      retry) is settled with `status` as if its attempt had ended so: its dependents are
      decided from it as usual, a running attempt is stopped (its command is killed within
      CANCEL_POLL_SECONDS, an ECS task is stopped) and its report is then ignored. A task
      that has ended is refused while the run runs.
    - In a finished run the task takes `status` and the run is redriven: the tasks below
      it whose state came from its old outcome (each dependent that did not succeed,
      transitively, skips included) are decided again from the new one, as a retry does
      for that subtree; tasks that succeeded are kept, and so is everything not below it.
      The run then ends as usual: succeeded if every leaf succeeded or skipped. A run
      whose compensations ran is refused, as for a retry.

    Raises LookupError for an unknown run or task, ValueError for a status other than
    succeeded or failed, RunNotRetryable when the task or run cannot be marked.
    """
    if status not in MARKABLE:
        raise ValueError(f"a task can be marked succeeded or failed, not {status.value!r}")
    run, plan = _run_and_plan(ports, run_id, task_id)
    now = iso(ports.clock.now())
    mark = MarkRecord(task_id=task_id, status=status.value, by=by, at=now, reason=reason)
    if run.status is RunStatus.RUNNING:
        _mark_while_running(ports, plan, run, mark)
        latest = ports.runs.get_run(run_id)
        assert latest is not None
        return latest
    _check_redrivable(ports, run, "marked")
    statuses = _statuses(ports, plan, run_id)
    if statuses[task_id] is status:
        raise RunNotRetryable(
            f"task {task_id!r} of run {run_id!r} already {status.value}: nothing to mark"
        )
    statuses[task_id] = status
    reset = _unended(statuses) - {task_id}
    for child in plan.order:  # topological: what its new outcome decides, transitively
        if child == task_id or statuses[child] is TaskStatus.SUCCEEDED:
            continue
        if any(p == task_id or p in reset for p in plan.upstream(child)):
            reset.add(child)
    ports.metrics.count("TasksMarked", run.workflow_id)
    return _redrive(ports, plan, run, statuses, reset, marks=[mark])


def _mark_while_running(ports: Ports, plan: Plan, run: RunRecord, mark: MarkRecord) -> None:
    task = ports.runs.get_task(run.run_id, mark.task_id)
    if task.status in FINAL_TASK_STATUSES:
        raise RunNotRetryable(
            f"task {mark.task_id!r} of run {run.run_id!r} already {task.status.value} and "
            "the run is still running: mark it once the run has ended"
        )
    if not ports.runs.mark_task(run.run_id, mark.task_id, task.status, mark, run.drive):
        raise RunNotRetryable(
            f"task {mark.task_id!r} of run {run.run_id!r} changed while it was being "
            "marked; look at it and try again"
        )
    ports.metrics.count("TasksMarked", run.workflow_id)
    if task.status is TaskStatus.RUNNING and task.worker:
        ports.workers.stop(
            task.worker, f"stratoflow: task {mark.task_id} marked {mark.status} by {mark.by}"
        )
    status = TaskStatus(mark.status)
    settlement = Settlement(
        task_id=mark.task_id,
        status=status,
        children=plan.downstream[mark.task_id],
        attempt=None,
        is_leaf=mark.task_id in plan.leaves,
        # Under a cap, a queued, running or retrying task holds one of the run's slots.
        releases_slot=run.concurrency is not None and task.status in _HOLDS_SLOT,
        fields={"settled_at": mark.at},
        drive=run.drive,
    )
    _settle(ports, plan, run.run_id, settlement)


_HOLDS_SLOT = frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.UP_FOR_RETRY})


def _run_and_plan(ports: Ports, run_id: str, task_id: str) -> tuple[RunRecord, Plan]:
    run = ports.runs.get_run(run_id)
    if run is None:
        raise LookupError(f"run {run_id!r} does not exist")
    plan = ports.definitions.get_plan(run.workflow_id, run.version)
    if task_id not in plan.tasks:
        raise LookupError(
            f"run {run_id!r} (workflow {run.workflow_id!r} v{run.version}) has no task {task_id!r}"
        )
    return run, plan


def _check_redrivable(ports: Ports, run: RunRecord, done: str) -> None:
    """Refuse to redrive a run that has not finished, ran its compensations, or would
    exceed its schedule's max_active_runs (`done`: "retried", "rerun", "marked")."""
    what = "it" if done == "retried" else "a task of it"
    if run.status is RunStatus.COMPENSATING:
        raise RunNotRetryable(
            f"run {run.run_id!r} failed and is running its compensations: {what} cannot be {done}"
        )
    if run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
        raise RunNotRetryable(
            f"run {run.run_id!r} is {run.status.value}: only a finished run can be {done}"
        )
    if run.compensations:
        raise RunNotRetryable(
            f"run {run.run_id!r} ran its compensations, which undid the tasks that "
            "succeeded; start a new run instead"
        )
    if _scheduled(run):
        meta = ports.definitions.get_meta(run.workflow_id)
        if meta is not None and meta.active_runs >= meta.max_active_runs:
            # A redriven scheduled run counts against max_active_runs again.
            raise RunNotRetryable(
                f"workflow {run.workflow_id!r} already has {meta.active_runs} scheduled "
                f"run(s) running (max_active_runs {meta.max_active_runs}); try run "
                f"{run.run_id!r} again when one has ended"
            )


def _statuses(ports: Ports, plan: Plan, run_id: str) -> dict[str, TaskStatus]:
    tasks = ports.runs.list_tasks(run_id)
    return {t: (tasks.get(t) or TaskRecord(task_id=t)).status for t in plan.tasks}


def _unended(status: Mapping[str, TaskStatus]) -> set[str]:
    """Tasks a finished run left without an end (it was cancelled or timed out around
    them): kept as they are, they could never be counted, and the run could not end."""
    return {t for t, st in status.items() if st not in FINAL_TASK_STATUSES}


def _descendants(plan: Plan, task_id: str) -> set[str]:
    found: set[str] = set()
    todo = list(plan.downstream[task_id])
    while todo:
        child = todo.pop()
        if child not in found:
            found.add(child)
            todo.extend(plan.downstream[child])
    return found


def _redrive(
    ports: Ports,
    plan: Plan,
    run: RunRecord,
    status: Mapping[str, TaskStatus],
    reset: set[str],
    marks: Sequence[MarkRecord] = (),
) -> RunRecord:
    """Put the run back to running in its next drive with `reset` pending again, their
    upstream counters rebuilt from the parents kept (with `status`, marks applied), and
    decide those whose parents are all kept. The tasks kept keep their outcome: a leaf
    among them that did not succeed or skip still fails the run."""
    run_id = run.run_id
    counters: dict[str, dict[TaskStatus, int]] = {}
    for task_id in reset:
        c: dict[TaskStatus, int] = {}
        for parent in plan.upstream(task_id):
            if parent not in reset:
                c[status[parent]] = c.get(status[parent], 0) + 1
        counters[task_id] = c
    leaf_bad = sum(1 for t in plan.leaves if t not in reset and status[t] not in GOOD_LEAF_STATUSES)
    timeout = plan.workflow.timeout
    deadline = iso(ports.clock.now() + timedelta(seconds=timeout)) if timeout else None
    if not ports.runs.redrive(
        run,
        counters,
        len(plan) - len(reset),
        _scheduled(run),
        leaf_bad=leaf_bad,
        marks=marks,
        deadline=deadline,
    ):
        latest = ports.runs.get_run(run_id)
        raise RunNotRetryable(
            f"run {run_id!r} changed while it was being redriven "
            f"(now {latest.status.public if latest else 'gone'}); look at it and try again"
        )
    run = replace(
        run,
        status=RunStatus.RUNNING,
        finished_at=None,
        final_count=len(plan) - len(reset),
        leaf_bad=leaf_bad,
        active=0,
        drive=run.drive + 1,
        deadline=deadline or run.deadline,
        reason=None,
        marks=run.marks + tuple(marks),
    )
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
    defaults = ports.definitions.run_defaults(workflow_id, version)
    run = arm_timeout(ports, run, defaults.timeout)
    # The key names a request; the same key with another body is a client mistake.
    merged = {**defaults.params, **(params or {})}
    if not created and run.version == version and run.params != merged:
        raise IdempotencyConflict(
            f"Idempotency-Key {idempotency_key!r} was used for run {run.run_id} with other params"
        )
    return run, created


class WorkflowInactive(LookupError):
    """The workflow is registered but has no active version."""


class IdempotencyConflict(ValueError):
    """An idempotency key reused with a different request."""
