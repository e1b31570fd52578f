"""Starting a run, and sending tasks decided to run to the queue (through the run's
concurrency cap if any): `start_run` and the helpers the other use cases start tasks with."""

from __future__ import annotations

from collections.abc import Mapping

from stratoflow.core.model import check_param_names_distinct, check_params_size
from stratoflow.core.plan import Plan
from stratoflow.core.records import RunRecord, TaskMessage, iso
from stratoflow.core.states import RunStatus, TaskStatus

from .bundle import Ports

DECIDE_BATCH = 100
"""Dependents decided per request: DynamoDB's limit of items in one transaction."""


def start_run(
    ports: Ports,
    plan: Plan,
    *,
    params: Mapping[str, str] | None = None,
    logical_date: str | None = None,
    run_id: str | None = None,
    trigger: str = "manual",
    workdir: str | None = None,
) -> tuple[RunRecord, bool]:
    """Create a run of `plan` and enqueue its ready tasks. Returns (run, created).

    Idempotent on `run_id`: a second call with the same id returns the existing run.
    """
    now = ports.clock.now()
    all_params = {**plan.workflow.params, **(params or {})}
    check_param_names_distinct(all_params)
    check_params_size(all_params)
    run = RunRecord(
        run_id=run_id or ports.ids.new_id(),
        workflow_id=plan.workflow_id,
        version=plan.version,
        status=RunStatus.RUNNING,
        logical_date=logical_date or iso(now),
        created_at=iso(now),
        started_at=iso(now),
        n_tasks=len(plan),
        params=all_params,
        concurrency=plan.workflow.concurrency,
        workdir=workdir,
        trigger=trigger,
    )
    if not ports.runs.create_run(run):
        existing = ports.runs.get_run(run.run_id)
        assert existing is not None
        return existing, False
    ports.metrics.count("RunsStarted", plan.workflow_id)
    _enqueue(ports, plan, run, list(plan.roots))
    return run, True


def _task_message(plan: Plan, run: RunRecord, task_id: str, attempt: int, now: str) -> TaskMessage:
    spec = plan.tasks[task_id]
    return TaskMessage(
        run_id=run.run_id,
        workflow_id=run.workflow_id,
        version=run.version,
        task_id=task_id,
        attempt=attempt,
        logical_date=run.logical_date,
        params=dict(run.params),
        workdir=run.workdir,
        enqueued_at=now,
        priority=spec.priority,
        executor=spec.executor.value,
        cpu=spec.cpu,
        memory=spec.memory,
        drive=run.drive,
    )


def _decide_and_enqueue(
    ports: Ports, plan: Plan, run: RunRecord, task_ids: list[str], now: str
) -> bool:
    """Decide pending tasks to run and send them; True if any was this call's to start.

    Decided and enqueued batch by batch: a 10,000-wide fan-out must not hold every
    dependent back until the last one is decided."""
    status = TaskStatus.QUEUED if run.concurrency is None else TaskStatus.WAITING
    started = False
    for start in range(0, len(task_ids), DECIDE_BATCH):
        won = ports.runs.decide_tasks(
            run.run_id, task_ids[start : start + DECIDE_BATCH], status, now
        )
        if won:
            _enqueue(ports, plan, run, won)
            started = True
    return started


def _enqueue(ports: Ports, plan: Plan, run: RunRecord, task_ids: list[str]) -> None:
    """Send decided-to-run tasks to the queue, through the run's concurrency cap if any."""
    if not task_ids:
        return
    now = iso(ports.clock.now())
    if run.concurrency is None:
        ordered = sorted(task_ids, key=lambda t: -plan.tasks[t].priority)
        ports.tasks.send_tasks(_task_message(plan, run, t, 1, now) for t in ordered)
        return
    for task_id in task_ids:
        ports.runs.put_waiting(run.run_id, task_id, plan.tasks[task_id].priority, now)
    _enqueue_waiting(ports, plan, run)


def _enqueue_waiting(ports: Ports, plan: Plan, run: RunRecord) -> None:
    """Start waiting tasks while the run has free slots, highest priority first.

    Every party runs this after its own write (a waiter after adding itself, a finisher
    after releasing its slot), and a failed `acquire_slot` means some holder has yet to
    release and pump, so no waiting task is ever stranded (no lost wake-up).
    """
    cap = run.concurrency or 1
    while True:
        waiting = ports.runs.peek_waiting(run.run_id, cap)
        if not waiting:
            return
        started: list[TaskMessage] = []
        now = iso(ports.clock.now())
        for key, task_id in waiting:
            if not ports.runs.acquire_slot(run.run_id, cap):
                _enqueue_messages(ports, started)
                return
            if ports.runs.take_waiting(run.run_id, key):
                started.append(_task_message(plan, run, task_id, 1, now))
            else:
                ports.runs.release_slot(run.run_id)
        _enqueue_messages(ports, started)


def _enqueue_messages(ports: Ports, messages: list[TaskMessage]) -> None:
    if messages:
        ports.tasks.send_tasks(messages)
