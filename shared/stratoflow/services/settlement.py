"""Recording a finished attempt (`record_completion`): retry it, or settle the task, decide
its dependents, cascade skips, finish the run, and run a failed run's compensations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
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
from stratoflow.core.states import COUNTER_FOR_STATUS, RunStatus, TaskStatus
from stratoflow.ports import FinalizeOutcome, Settlement

from .bundle import SHORT_WAIT_SECONDS, SQS_MAX_DELAY_SECONDS, Ports
from .schedules import _after_scheduled_run, _scheduled
from .start import _decide_and_enqueue, _enqueue, _enqueue_waiting, _task_message


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
            delay = task.retry_delay_for(report.attempt)
            now = ports.clock.now()
            if run is None or run.status is not RunStatus.RUNNING:
                return
            msg = replace(
                _task_message(plan, run, report.task_id, report.attempt + 1, iso(now)),
                not_before=(now + timedelta(seconds=delay)).timestamp() if delay else None,
            )
            # The queue's delay covers whole seconds; the executor waits out the last one
            # (SQS delays are coarse, and a receiver need not notice a delayed message at once).
            queue_delay = max(0.0, delay - SHORT_WAIT_SECONDS)
            ports.tasks.send_tasks(
                [msg], delay_seconds=int(min(queue_delay, SQS_MAX_DELAY_SECONDS))
            )
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
    worklist = [first]
    ready: list[str] = []
    made_ready = False
    run: RunRecord | None = None
    check_end = False  # a folded settlement may have been the run's last
    fresh = False  # `run` was read after the latest settlement was written
    fold = context is not None and plan.workflow.concurrency is None
    while worklist:
        settlement = worklist.pop()
        now = iso(ports.clock.now())
        decided: dict[str, TaskStatus] = {}
        if fold:
            for child_id in settlement.children:
                if plan.foldable(child_id):
                    decided[child_id] = _decided_status(
                        decide(plan.tasks[child_id].trigger_rule, _single_parent(settlement))
                    )
            # Written (and started) chunk by chunk: the highest priorities first.
            children = sorted(settlement.children, key=lambda c: -plan.tasks[c].priority)
            settlement = replace(
                settlement, children=tuple(children), decided=decided, require_running=True
            )
        settlement = replace(settlement, guards=_guards(plan, settlement, decided))

        def start_decided(
            children: Sequence[str], decided: dict[str, TaskStatus] = decided
        ) -> None:
            # Each chunk of a wide fan-out starts as soon as it is written.
            assert context is not None
            queued = [c for c in children if decided.get(c) is TaskStatus.QUEUED]
            if queued:
                _enqueue(ports, plan, context, queued)

        result = ports.runs.finalize_task(run_id, settlement, start_decided if decided else None)
        if result.outcome is FinalizeOutcome.RUN_ENDED:
            # Cancelled meanwhile: record this task's end, start nothing.
            ports.runs.finalize_task(run_id, replace(settlement, decided={}, require_running=False))
            run = ports.runs.get_run(run_id)
            fresh = True
            continue
        if result.outcome is FinalizeOutcome.STALE:
            continue
        fresh = False
        redelivered = result.outcome is FinalizeOutcome.ALREADY
        # Dependents still waiting for other parents cannot have been decided by this count.
        to_read = [c for c in settlement.children if c not in decided and c not in result.waiting]
        if fold and not redelivered:
            assert context is not None
            run = run or context
            for child_id, status in decided.items():
                if status is TaskStatus.QUEUED:
                    made_ready = True  # started by start_decided, chunk by chunk
                else:
                    worklist.append(_decided_settlement(plan, child_id, status, now))
            # A dependent left pending means the run goes on: only otherwise may this
            # settlement have been the run's last.
            if not result.waiting:
                check_end = check_end or settlement.task_id in plan.may_end_run
            if not to_read:
                continue
        elif redelivered:
            to_read = list(settlement.children)
        run, records = ports.runs.get_run_and_tasks(run_id, to_read)
        fresh = True
        if run.status is not RunStatus.RUNNING:
            continue  # cancelled: its remaining tasks stay as they are, nothing new starts
        to_run = []
        for child_id in to_read:
            child = records[child_id]
            if child.status is not TaskStatus.PENDING:
                if redelivered and child.attempt == 0:
                    # We may have crashed between deciding a dependent and acting on it.
                    if child.status is TaskStatus.QUEUED:
                        # A duplicate message is harmless (the executor's claim drops it),
                        # a lost one is not.
                        ready.append(child_id)
                    elif child.status in (TaskStatus.SKIPPED, TaskStatus.UPSTREAM_FAILED):
                        # Propagate its end again: a settlement already propagated comes
                        # back ALREADY and only repeats these repairs below it.
                        worklist.append(_decided_settlement(plan, child_id, child.status, now))
                continue
            spec = plan.tasks[child_id]
            decision = decide(spec.trigger_rule, _counts(len(spec.depends), child))
            if decision is Decision.WAIT:
                continue
            if decision is Decision.RUN:
                to_run.append(child_id)
                continue
            settled = _decided_status(decision)
            if ports.runs.decide_task(run_id, child_id, settled, now):
                worklist.append(_decided_settlement(plan, child_id, settled, now))
        made_ready = _decide_and_enqueue(ports, plan, run, to_run, now) or made_ready
    if run is None:
        return
    if check_end and not fresh:
        # A folded settlement may have ended the run: read its counters.
        run = ports.runs.get_run(run_id)
        if run is None:
            return
        fresh = True
    if run.status is not RunStatus.RUNNING:
        return  # cancelled (or finished): nothing new starts
    if ready:
        _enqueue(ports, plan, run, ready)
    elif run.concurrency is not None and first.releases_slot and not made_ready:
        _enqueue_waiting(ports, plan, run)
    if fresh and run.final_count >= run.n_tasks:
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
        succeeded=c.get(COUNTER_FOR_STATUS[TaskStatus.SUCCEEDED], 0),
        failed=c.get(COUNTER_FOR_STATUS[TaskStatus.FAILED], 0),
        upstream_failed=c.get(COUNTER_FOR_STATUS[TaskStatus.UPSTREAM_FAILED], 0),
        skipped=c.get(COUNTER_FOR_STATUS[TaskStatus.SKIPPED], 0),
        cancelled=c.get(COUNTER_FOR_STATUS[TaskStatus.CANCELLED], 0),
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
