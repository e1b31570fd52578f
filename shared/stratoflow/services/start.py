"""Starting a run, and sending tasks decided to run to the queue (through the run's
concurrency cap if any): `start_run` (the dispatcher's, in one go), `queue_run` and
`start_queued_run` (a trigger's: recorded at once, started by the completion handler), and
the helpers the other use cases start tasks with."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from stratoflow.core.model import check_param_names_distinct, check_params_size
from stratoflow.core.plan import Plan
from stratoflow.core.records import RunRecord, TaskMessage, iso
from stratoflow.core.states import RunStatus, TaskStatus
from stratoflow.ports import RunCommand, RunDefaults, SlotOutcome

from .bundle import Ports

DECIDE_BATCH = 100
"""Dependents decided per request: DynamoDB's limit of items in one transaction."""
START_REHAND_SECONDS = 300
"""A run whose start is not complete this long after it was recorded has its start handed
off again by the dispatcher's tick: longer than a completion handler may take (60 s) and
than SQS hides a message it is working on, so a start under way is rarely handed twice (and
twice is harmless)."""
REHAND_LIMIT = 100


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
    """Create a run of `plan` and start it: its roots decided and sent, then its start
    recorded complete. Returns (run, created).

    Idempotent on `run_id`: a second call with the same id returns the existing run, and
    finishes its start if the first call died before it was complete (a dispatcher that
    timed out between creating the run and sending its roots, retried by EventBridge).
    Until then the run is also among the `pending_starts` the tick hands off again.
    """
    defaults = RunDefaults(plan.workflow.params, plan.workflow.concurrency, len(plan))
    run = _new_run(
        ports,
        (plan.workflow_id, plan.version, defaults),
        params,
        logical_date,
        run_id,
        trigger,
        workdir,
        queued=False,
    )
    created = ports.runs.create_run(run)
    if not created:
        existing = ports.runs.get_run(run.run_id)
        assert existing is not None
        run = existing
    if run.status is RunStatus.RUNNING and run.started_at is None:
        _start_roots(ports, plan, run)
    return run, created


def _new_run(
    ports: Ports,
    version: tuple[str, int, RunDefaults],
    params: Mapping[str, str] | None,
    logical_date: str | None,
    run_id: str | None,
    trigger: str,
    workdir: str | None,
    *,
    queued: bool,
) -> RunRecord:
    workflow_id, number, defaults = version
    now = ports.clock.now()
    all_params = {**defaults.params, **(params or {})}
    check_param_names_distinct(all_params)
    check_params_size(all_params)
    return RunRecord(
        run_id=run_id or ports.ids.new_id(),
        workflow_id=workflow_id,
        version=number,
        status=RunStatus.QUEUED if queued else RunStatus.RUNNING,
        logical_date=logical_date or iso(now),
        created_at=iso(now),
        # A run's start is complete when this is set (`RunStore.finish_start`).
        started_at=None,
        n_tasks=defaults.n_tasks,
        params=all_params,
        concurrency=defaults.concurrency,
        workdir=workdir,
        trigger=trigger,
    )


def queue_run(
    ports: Ports,
    workflow_id: str,
    version: int,
    *,
    params: Mapping[str, str] | None = None,
    run_id: str | None = None,
    trigger: str = "manual",
) -> tuple[RunRecord, bool]:
    """Record a run of the workflow's `version` as queued and hand its start to the
    completion handler (`start_queued_run`): a read of the definition (not compiled), one
    conditional write and one message, whatever the run's size. Returns (run, created).
    Raises ValueError for params that, with the workflow's, are not valid.

    Idempotent on `run_id`: a second call returns the existing run, and hands its start off
    again while it is not complete (a lost message is then repaired by the caller's retry).
    """
    defaults = ports.definitions.run_defaults(workflow_id, version)
    run = _new_run(
        ports, (workflow_id, version, defaults), params, None, run_id, trigger, None, queued=True
    )
    created = ports.runs.create_run(run)
    if not created:
        existing = ports.runs.get_run(run.run_id)
        assert existing is not None
        run = existing
    if start_pending(run):
        hand_off(ports, RunCommand(RunCommand.START, run.run_id), run.workflow_id)
    return run, created


def start_pending(run: RunRecord) -> bool:
    """Whether the run's start is still to do (or to finish): queued, or running without
    `started_at` (a start that died midway)."""
    return run.status is RunStatus.QUEUED or (
        run.status is RunStatus.RUNNING and run.started_at is None
    )


def hand_off(ports: Ports, command: RunCommand, workflow_id: str) -> bool:
    """Send `command` to the completion handler; False if it could not be sent.

    The run is already recorded when this is called, so a failed send must not fail the
    request that recorded it: a start is handed off again by the dispatcher's tick
    (`rehand_starts`), and a cancel's caller does the work itself."""
    try:
        ports.completions.send_commands([command])
    except Exception:  # any transport error: the fallbacks above cover it
        ports.metrics.count("HandOffsFailed", workflow_id)
        return False
    return True


def start_queued_run(ports: Ports, run_id: str) -> bool:
    """A queued run's start, handed off by `queue_run`: the run moves to running, its roots
    are decided (pending → queued, or waiting under a concurrency cap) and sent, and then
    its start is recorded complete. True if this call completed it.

    Idempotent: a start of a run that is not queued, cancelled, or already started does
    nothing; a start that died midway (the run running without `started_at`) is resumed:
    the roots not yet decided are decided and sent, and the ones an earlier start decided
    and may not have sent are sent again if still queued and never attempted (a duplicate
    is dropped at its claim, invariant 2; a lost one would stall the run).
    """
    run = ports.runs.get_run(run_id)
    if run is not None and run.status is RunStatus.QUEUED and not ports.runs.begin_run(run_id):
        run = ports.runs.get_run(run_id)  # another start (or a cancel) came first
    if run is None or run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
        return False
    if run.started_at is not None:
        return False
    run = run.with_status(RunStatus.RUNNING)
    return _start_roots(ports, ports.definitions.get_plan(run.workflow_id, run.version), run)


def _start_roots(ports: Ports, plan: Plan, run: RunRecord) -> bool:
    """Decide a running run's roots (pending → queued, or waiting under a concurrency cap)
    and send them, then record its start complete; True if this call completed it. Resumes
    a start that died midway: the roots an earlier start decided and may not have sent are
    sent again if never attempted (a duplicate is dropped at its claim)."""
    run_id = run.run_id
    now = iso(ports.clock.now())
    status = TaskStatus.QUEUED if run.concurrency is None else TaskStatus.WAITING
    roots = list(plan.roots)
    decided_before: list[str] = []
    for start in range(0, len(roots), DECIDE_BATCH):
        if start:
            latest = ports.runs.get_run(run_id)
            if latest is None or latest.status is not RunStatus.RUNNING:
                return False  # cancelled meanwhile: send nothing more
        batch = roots[start : start + DECIDE_BATCH]
        won = ports.runs.decide_tasks(run_id, batch, status, now)
        _enqueue(ports, plan, run, won)
        if len(won) < len(batch):
            mine = set(won)
            decided_before += [t for t in batch if t not in mine]
    if decided_before:
        _, records = ports.runs.get_run_and_tasks(run_id, decided_before)
        again = [
            t
            for t in decided_before
            if records[t].status is TaskStatus.QUEUED and records[t].attempt == 0
        ]
        if again and run.concurrency is None:
            _enqueue(ports, plan, run, again)
        if run.concurrency is not None:
            _repair_capped(ports, plan, run)
    if not ports.runs.finish_start(run_id, now):
        return False
    ports.metrics.count("RunsStarted", run.workflow_id)
    return True


def rehand_starts(
    ports: Ports, older_than: float | None = None, limit: int = REHAND_LIMIT
) -> list[str]:
    """The dispatcher's tick: hand off again the starts of runs recorded more than
    `older_than` seconds ago (START_REHAND_SECONDS) and still not started (their message
    was lost, or the start died midway and its message went to the dead-letter queue).
    Returns their ids."""
    age = START_REHAND_SECONDS if older_than is None else older_than
    before = iso(ports.clock.now() - timedelta(seconds=age))
    run_ids = ports.runs.pending_starts(before, limit)
    if run_ids:
        ports.completions.send_commands(RunCommand(RunCommand.START, r) for r in run_ids)
    return run_ids


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
            outcome = ports.runs.start_waiting(run.run_id, key, task_id, cap)
            if outcome is SlotOutcome.FULL:
                _enqueue_messages(ports, started)
                return
            if outcome is SlotOutcome.STARTED:
                started.append(_task_message(plan, run, task_id, 1, now))
        _enqueue_messages(ports, started)


def _repair_capped(ports: Ports, plan: Plan, run: RunRecord) -> None:
    """Mend what a handler that died midway leaves in a run under a concurrency cap: tasks
    that hold a slot (queued, never attempted) but whose message may be lost are sent again
    (a duplicate is dropped at its claim, and it takes no second slot), and tasks decided
    waiting but never listed get their entry; then free slots are filled. Run on a
    redelivery only: it reads the run's tasks, which the normal path never does."""
    tasks = ports.runs.list_tasks(run.run_id)
    listed = {t for _, t in ports.runs.peek_waiting(run.run_id, len(plan) + 1)}
    now = iso(ports.clock.now())
    holding = [t for t, r in tasks.items() if r.status is TaskStatus.QUEUED and r.attempt == 0]
    _enqueue_messages(ports, [_task_message(plan, run, t, 1, now) for t in holding])
    for task_id, rec in tasks.items():
        if rec.status is TaskStatus.WAITING and task_id not in listed:
            ports.runs.put_waiting(run.run_id, task_id, plan.tasks[task_id].priority, now)
    _enqueue_waiting(ports, plan, run)


def _enqueue_messages(ports: Ports, messages: list[TaskMessage]) -> None:
    if messages:
        ports.tasks.send_tasks(messages)
