"""Recording a finished attempt (`record_completion`): retry it, or settle the task, decide
its dependents, cascade skips, finish the run, and run a failed run's compensations."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from stratoflow.core.plan import Plan
from stratoflow.core.records import (
    OUTPUT_TAIL_BYTES,
    AttemptReport,
    CompensationRecord,
    RunRecord,
    TaskMessage,
    TaskRecord,
    iso,
    parse_iso,
)
from stratoflow.core.rules import Decision, UpstreamCounts, decide, decided_only_by_last
from stratoflow.core.states import RunStatus, TaskStatus
from stratoflow.ports import FinalizeOutcome, Settlement

from .bundle import SHORT_WAIT_SECONDS, SQS_MAX_DELAY_SECONDS, Ports
from .schedules import _after_scheduled_run, _scheduled
from .start import (
    _decide_and_enqueue,
    _enqueue,
    _enqueue_waiting,
    _repair_capped,
    _task_message,
)


def record_completion(ports: Ports, report: AttemptReport) -> None:
    """Record one finished attempt and move the run forward (the completion handler)."""
    plan = ports.definitions.get_plan(report.workflow_id, report.version)
    if report.kind == "compensate":
        _record_compensation(ports, plan, report)
        return
    task = plan.tasks[report.task_id]
    fields = _attempt_fields(report, iso(ports.clock.now()))
    wf = report.workflow_id
    if report.timed_out:
        ports.metrics.count("TasksTimedOut", wf)
    cancelled = report.cancelled
    run: RunRecord | None = None
    if not report.succeeded and not cancelled:
        # An attempt that failed or was lost because its run was cancelled under it (a
        # Fargate task stopped, say) ends cancelled, not retried.
        run = ports.runs.get_run(report.run_id)
        cancelled = run is not None and run.status is RunStatus.CANCELLED
    if not report.succeeded and not cancelled and report.attempt <= task.retries:
        if ports.runs.retry_attempt(
            report.run_id, report.task_id, report.attempt, fields, report.drive
        ):
            if run is None or run.status is not RunStatus.RUNNING:
                return
            delay = task.retry_delay_for(report.attempt)
            _send_retry(ports, plan, run, report.task_id, report.attempt + 1, delay)
            ports.metrics.count("TasksRetried", wf)
        return
    if report.succeeded:
        status = TaskStatus.SUCCEEDED
    elif cancelled:
        status = TaskStatus.CANCELLED
    else:
        status = TaskStatus.FAILED
    ports.metrics.count("TasksSucceeded" if report.succeeded else "TasksFailed", wf)
    started, finished = parse_iso(report.started_at), parse_iso(report.finished_at)
    if started and finished:
        ports.metrics.timing("TaskDuration", wf, (finished - started).total_seconds() * 1000)
    settlement = Settlement(
        task_id=report.task_id,
        status=status,
        children=plan.downstream[report.task_id],
        attempt=report.attempt,
        is_leaf=report.task_id in plan.leaves,
        releases_slot=plan.workflow.concurrency is not None,
        fields=fields,
        drive=report.drive,
    )
    _settle(ports, plan, report.run_id, settlement, _context(plan, report))


def _send_retry(
    ports: Ports, plan: Plan, run: RunRecord, task_id: str, attempt: int, delay: float
) -> None:
    """Send a task's next attempt, to start `delay` seconds from now."""
    now = ports.clock.now()
    msg = replace(
        _task_message(plan, run, task_id, attempt, iso(now)),
        not_before=(now + timedelta(seconds=delay)).timestamp() if delay else None,
    )
    # The queue's delay covers whole seconds; the executor waits out the last one (SQS
    # delays are coarse, and a receiver need not notice a delayed message at once).
    queue_delay = max(0.0, delay - SHORT_WAIT_SECONDS)
    ports.tasks.send_tasks([msg], delay_seconds=int(min(queue_delay, SQS_MAX_DELAY_SECONDS)))


def _context(plan: Plan, report: AttemptReport) -> RunRecord | None:
    """The run as far as the report tells it (enough to make its tasks' messages)."""
    if report.logical_date is None or report.params is None:
        return None
    return RunRecord(
        run_id=report.run_id,
        workflow_id=report.workflow_id,
        version=report.version,
        status=RunStatus.RUNNING,
        logical_date=report.logical_date,
        created_at="",
        n_tasks=len(plan),
        params=dict(report.params),
        concurrency=plan.workflow.concurrency,
        workdir=report.workdir,
        drive=report.drive,
    )


def _attempt_fields(report: AttemptReport, now: str) -> dict[str, Any]:
    tail = report.output_tail.encode("utf-8")[-OUTPUT_TAIL_BYTES:].decode("utf-8", "ignore")
    return {
        "settled_at": now,
        "exit_code": report.exit_code,
        "timed_out": report.timed_out,
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "output_tail": tail,
        "log_ref": report.log_ref,
        "error": report.error,
    }


@dataclass(frozen=True)
class _Progress:
    """What settling a task (one step) or a whole cascade of them (steps combined with
    `then`) found out: the values `_settle`'s steps hand each other."""

    run: RunRecord | None = None
    read: bool = False
    """`run` was read after the latest settlement was written: its counters are current."""
    settled: tuple[Settlement, ...] = ()
    """Dependents this step settled without running (skipped, upstream_failed): to propagate."""
    started: bool = False
    """Some dependent was enqueued."""
    may_end_run: bool = False
    """A folded settlement (not read back) may have been the run's last."""
    lost: tuple[str, ...] = ()
    """Dependents found queued on a redelivery: their message may have been lost in a crash."""
    redelivered: bool = False
    """Some settlement had been applied before: a handler may have died after writing it."""

    def then(self, step: _Progress) -> _Progress:
        """This progress followed by `step` (its `settled` are the caller's to propagate)."""
        return _Progress(
            run=step.run if step.read else (self.run or step.run),
            read=step.read,
            started=self.started or step.started,
            may_end_run=self.may_end_run or step.may_end_run,
            lost=self.lost + step.lost,
            redelivered=self.redelivered or step.redelivered,
        )


def _settle(
    ports: Ports, plan: Plan, run_id: str, first: Settlement, context: RunRecord | None = None
) -> None:
    """Finalize a task, decide its dependents, cascade skips, and finish the run if done.

    With the run's `context` (echoed in the attempt's report) and no concurrency cap, the
    dependents that have this task as their only parent are decided inside the settlement's
    own transaction, conditioned on the run still running: a chain or a fan-out then moves
    on without reading the run or its tasks back. Dependents with several parents are read
    (BatchGetItem) and decided from their counters, as is everything after a redelivery.
    """
    fold = context if plan.workflow.concurrency is None else None
    progress = _Progress()
    worklist = [first]
    while worklist:
        step = _settle_one(ports, plan, run_id, worklist.pop(), fold)
        if step is not None:
            worklist.extend(step.settled)
            progress = progress.then(step)
    _move_run_on(ports, plan, run_id, first, progress)


def _settle_one(
    ports: Ports, plan: Plan, run_id: str, settlement: Settlement, context: RunRecord | None
) -> _Progress | None:
    """Write one task's end and decide its dependents. None: a stale (superseded) report."""
    now = iso(ports.clock.now())
    if context is not None:
        settlement = _fold(plan, settlement)
    decided = settlement.decided
    settlement = replace(settlement, guards=_guards(plan, settlement, decided))
    start = _starter(ports, plan, context, decided) if decided else None
    result = ports.runs.finalize_task(run_id, settlement, start)
    if result.outcome is FinalizeOutcome.RUN_ENDED:
        # Cancelled meanwhile: record this task's end, start nothing.
        ports.runs.finalize_task(run_id, replace(settlement, decided={}, require_running=False))
        return _Progress(run=ports.runs.get_run(run_id), read=True)
    if result.outcome is FinalizeOutcome.STALE:
        return None
    if result.outcome is FinalizeOutcome.ALREADY:
        read = _decide_read(ports, plan, run_id, settlement.children, now, redelivered=True)
        return replace(read, redelivered=True)
    # Dependents still waiting for other parents cannot have been decided by this count.
    to_read = [c for c in settlement.children if c not in decided and c not in result.waiting]
    folded = _Progress()
    if context is not None:
        folded = _Progress(
            run=context,
            settled=tuple(
                _decided_settlement(plan, child_id, status, now)
                for child_id, status in decided.items()
                if status is not TaskStatus.QUEUED
            ),
            # The queued ones were started by `start`, chunk by chunk.
            started=TaskStatus.QUEUED in decided.values(),
            # A dependent left pending means the run goes on: only otherwise may this
            # settlement have been the run's last. In a redriven run (drive > 0) its
            # dependents may be final already, kept from an earlier drive.
            may_end_run=not result.waiting
            and (settlement.task_id in plan.may_end_run or context.drive > 0),
        )
        if not to_read:
            return folded
    read = _decide_read(ports, plan, run_id, to_read, now, redelivered=False)
    return replace(folded.then(read), settled=folded.settled + read.settled)


def _fold(plan: Plan, settlement: Settlement) -> Settlement:
    """Decide in the settlement's own write the dependents it alone decides (one parent);
    conditioned on the run still running."""
    decided = {
        child_id: _decided_status(
            decide(plan.tasks[child_id].trigger_rule, _single_parent(settlement))
        )
        for child_id in settlement.children
        if plan.foldable(child_id)
    }
    # Written (and started) chunk by chunk: the highest priorities first.
    children = sorted(settlement.children, key=lambda c: -plan.tasks[c].priority)
    return replace(settlement, children=tuple(children), decided=decided, require_running=True)


def _starter(
    ports: Ports, plan: Plan, context: RunRecord | None, decided: Mapping[str, TaskStatus]
) -> Callable[[Sequence[str]], None]:
    """Enqueues each chunk of a wide fan-out as soon as the store has written it."""

    def start(children: Sequence[str]) -> None:
        assert context is not None
        queued = [c for c in children if decided.get(c) is TaskStatus.QUEUED]
        if queued:
            _enqueue(ports, plan, context, queued)

    return start


def _decide_read(
    ports: Ports, plan: Plan, run_id: str, children: Sequence[str], now: str, *, redelivered: bool
) -> _Progress:
    """Read the run and these dependents and decide each from its counters; on a
    redelivery, also repair what a crash between deciding and acting may have left."""
    run, records = ports.runs.get_run_and_tasks(run_id, children)
    if run.status is not RunStatus.RUNNING:
        # Cancelled: its remaining tasks stay as they are, nothing new starts.
        return _Progress(run=run, read=True)
    settled: list[Settlement] = []
    lost: list[str] = []
    pending: dict[str, UpstreamCounts] = {}
    for child_id in children:
        child = records[child_id]
        if child.status is TaskStatus.PENDING:
            pending[child_id] = _counts(len(plan.tasks[child_id].depends), child)
        elif redelivered and child.attempt == 0:
            if child.status is TaskStatus.QUEUED:
                # A duplicate message is harmless (the executor's claim drops it), a lost
                # one is not.
                lost.append(child_id)
            elif child.status in (TaskStatus.SKIPPED, TaskStatus.UPSTREAM_FAILED):
                # Propagate its end again: a settlement already propagated comes back
                # ALREADY and only repeats these repairs below it.
                settled.append(_decided_settlement(plan, child_id, child.status, now))
    decided, started = _decide_pending(ports, plan, run, pending, now)
    return _Progress(
        run=run, read=True, settled=(*settled, *decided), started=started, lost=tuple(lost)
    )


def _decide_pending(
    ports: Ports, plan: Plan, run: RunRecord, pending: Mapping[str, UpstreamCounts], now: str
) -> tuple[list[Settlement], bool]:
    """Decide pending tasks from their upstream counts: the ones to run are decided and
    enqueued; returns the ones this call decided not to run (skipped, upstream_failed),
    whose ends are the caller's to propagate, and whether any was enqueued."""
    settled: list[Settlement] = []
    to_run: list[str] = []
    for task_id, counts in pending.items():
        decision = decide(plan.tasks[task_id].trigger_rule, counts)
        if decision is Decision.WAIT:
            continue
        if decision is Decision.RUN:
            to_run.append(task_id)
            continue
        status = _decided_status(decision)
        if ports.runs.decide_task(run.run_id, task_id, status, now):
            settled.append(_decided_settlement(plan, task_id, status, now))
    return settled, _decide_and_enqueue(ports, plan, run, to_run, now)


def _move_run_on(
    ports: Ports, plan: Plan, run_id: str, first: Settlement, progress: _Progress
) -> None:
    """After the cascade: enqueue what a crash may have lost, fill a freed concurrency
    slot, and finish the run if that was its last task."""
    run, read = progress.run, progress.read
    if run is None:
        return
    if progress.may_end_run and not read:
        # A folded settlement may have ended the run: read its counters.
        run, read = ports.runs.get_run(run_id), True
        if run is None:
            return
    if run.status is not RunStatus.RUNNING:
        return  # cancelled (or finished): nothing new starts
    if run.concurrency is not None and progress.redelivered:
        # Under a cap, what a dead handler left is mended from the run's tasks.
        _repair_capped(ports, plan, run)
    elif progress.lost:
        _enqueue(ports, plan, run, list(progress.lost))
    elif run.concurrency is not None and first.releases_slot and not progress.started:
        _enqueue_waiting(ports, plan, run)
    if read and run.final_count >= run.n_tasks:
        _finish_run(ports, plan, run)


def _guards(
    plan: Plan, settlement: Settlement, decided: Mapping[str, TaskStatus]
) -> dict[str, int]:
    """The dependents this settlement can decide only as their last parent (all_success
    and a success): counted on that condition, the ones it leaves waiting need no read."""
    field = _UPSTREAM_FIELD[settlement.status]
    guards: dict[str, int] = {}
    for child_id in settlement.children:
        spec = plan.tasks[child_id]
        parents = len(spec.depends)
        if (
            parents > 1
            and child_id not in decided
            and decided_only_by_last(spec.trigger_rule, field)
        ):
            guards[child_id] = parents
    return guards


_UPSTREAM_FIELD = {
    TaskStatus.SUCCEEDED: "succeeded",
    TaskStatus.FAILED: "failed",
    TaskStatus.UPSTREAM_FAILED: "upstream_failed",
    TaskStatus.SKIPPED: "skipped",
    TaskStatus.CANCELLED: "cancelled",
}


def _single_parent(settlement: Settlement) -> UpstreamCounts:
    """The upstream counts of a dependent whose only parent is the settled task."""
    return UpstreamCounts(total=1, **{_UPSTREAM_FIELD[settlement.status]: 1})


def _decided_status(decision: Decision) -> TaskStatus:
    """The status a decision gives a dependent (all parents final, so never WAIT)."""
    return {
        Decision.RUN: TaskStatus.QUEUED,
        Decision.SKIP: TaskStatus.SKIPPED,
        Decision.UPSTREAM_FAILED: TaskStatus.UPSTREAM_FAILED,
    }[decision]


def _decided_settlement(plan: Plan, task_id: str, status: TaskStatus, now: str) -> Settlement:
    """A dependent settled without running (skipped, upstream_failed), to propagate."""
    return Settlement(
        task_id=task_id,
        status=status,
        children=plan.downstream[task_id],
        attempt=None,
        is_leaf=task_id in plan.leaves,
        releases_slot=False,
        fields={"settled_at": now},
    )


def _counts(total: int, rec: TaskRecord) -> UpstreamCounts:
    c = rec.counters
    return UpstreamCounts(
        total=total,
        succeeded=c.get(TaskStatus.SUCCEEDED, 0),
        failed=c.get(TaskStatus.FAILED, 0),
        upstream_failed=c.get(TaskStatus.UPSTREAM_FAILED, 0),
        skipped=c.get(TaskStatus.SKIPPED, 0),
        cancelled=c.get(TaskStatus.CANCELLED, 0),
    )


def _finish_run(ports: Ports, plan: Plan, run: RunRecord) -> None:
    """Every task is final: the run succeeds if no leaf ended badly; a failure compensates."""
    now = iso(ports.clock.now())
    if run.leaf_bad == 0:
        if ports.runs.finish_run(
            run.run_id, RunStatus.SUCCEEDED, now, release_workflow=_scheduled(run)
        ):
            ports.metrics.count("RunsSucceeded", run.workflow_id)
            ports.events.run_finished(run.with_status(RunStatus.SUCCEEDED, now), [])
            _after_scheduled_run(ports, run)
        return
    tasks = ports.runs.list_tasks(run.run_id)
    to_compensate = _compensation_order(plan, tasks)
    if to_compensate:
        if ports.runs.finish_run(
            run.run_id, RunStatus.COMPENSATING, now, compensations=to_compensate
        ):
            ports.tasks.send_tasks([_compensation_message(plan, run, to_compensate[0], 0, now)])
        return
    _finish_failed(ports, run, tasks, now)


def _finish_failed(ports: Ports, run: RunRecord, tasks: dict[str, TaskRecord], now: str) -> None:
    if ports.runs.finish_run(run.run_id, RunStatus.FAILED, now, release_workflow=_scheduled(run)):
        failed = sorted(t for t, r in tasks.items() if r.status is TaskStatus.FAILED)
        ports.metrics.count("RunsFailed", run.workflow_id)
        ports.events.run_finished(run.with_status(RunStatus.FAILED, now), failed)
        _after_scheduled_run(ports, run)


def _compensation_order(plan: Plan, tasks: dict[str, TaskRecord]) -> list[str]:
    """Succeeded tasks that have a compensation, most recently completed first (a saga)."""
    done = [
        rec
        for tid, rec in tasks.items()
        if rec.status is TaskStatus.SUCCEEDED and tid in plan.tasks and plan.tasks[tid].compensate
    ]
    done.sort(key=lambda r: (r.settled_at or r.finished_at or "", r.task_id), reverse=True)
    return [r.task_id for r in done]


def _compensation_message(
    plan: Plan, run: RunRecord, task_id: str, index: int, now: str
) -> TaskMessage:
    return TaskMessage(
        run_id=run.run_id,
        workflow_id=run.workflow_id,
        version=run.version,
        task_id=task_id,
        attempt=index + 1,
        logical_date=run.logical_date,
        params=dict(run.params),
        kind="compensate",
        workdir=run.workdir,
        enqueued_at=now,
        executor=plan.tasks[task_id].executor.value,
        cpu=plan.tasks[task_id].cpu,
        memory=plan.tasks[task_id].memory,
    )


def _record_compensation(ports: Ports, plan: Plan, report: AttemptReport) -> None:
    index = report.attempt - 1
    record = CompensationRecord(
        index=index,
        task_id=report.task_id,
        status="succeeded" if report.succeeded else "failed",
        exit_code=report.exit_code,
        timed_out=report.timed_out,
        started_at=report.started_at,
        finished_at=report.finished_at,
        output_tail=report.output_tail,
    )
    ports.runs.record_compensation(report.run_id, record)
    run = ports.runs.get_run(report.run_id)
    if run is None or run.status is not RunStatus.COMPENSATING:
        return
    now = iso(ports.clock.now())
    if index + 1 < len(run.compensations):
        # A failed compensation is recorded and the rest still run.
        nxt = _compensation_message(plan, run, run.compensations[index + 1], index + 1, now)
        ports.tasks.send_tasks([nxt])
        return
    _finish_failed(ports, run, ports.runs.list_tasks(run.run_id), now)
