"""Use cases of the engine. Each takes its ports (a `Ports` bundle) as an argument.

Flow: `start_run` enqueues the roots → an executor calls `execute_task` → its report
reaches `record_completion`, which records the attempt, counts it in each dependent's
upstream counters (O(out-degree), invariant 4), and enqueues the dependents whose trigger
rule became decidable — exactly once, because only the conditional `decide_task` that moves
a dependent out of pending may enqueue it (invariant 3).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from stratoflow.core.cron import fire_times_between, next_fire_times, recent_fire_times
from stratoflow.core.model import (
    TriggerRule,
    Workflow,
    check_param_names_distinct,
    check_params_size,
)
from stratoflow.core.plan import Plan
from stratoflow.core.records import (
    OUTPUT_TAIL_BYTES,
    AttemptReport,
    CompensationRecord,
    RunRecord,
    TaskMessage,
    TaskRecord,
    WorkflowMeta,
    iso,
    parse_iso,
)
from stratoflow.core.rules import Decision, UpstreamCounts, decide, decided_only_by_last
from stratoflow.core.states import (
    COUNTER_FOR_STATUS,
    RunStatus,
    TaskStatus,
)
from stratoflow.ports import (
    ClaimOutcome,
    Clock,
    CompletionQueue,
    DefinitionStore,
    EventPublisher,
    FinalizeOutcome,
    IdSource,
    LogReader,
    LogText,
    Metrics,
    NoWorkers,
    RunNotRetryable,
    RunStore,
    Settlement,
    TaskQueue,
    Workers,
)

SQS_MAX_DELAY_SECONDS = 900
LEASE_MARGIN_SECONDS = 60.0
"""Extra time past a task's timeout (and kill grace) before its claim counts as abandoned."""
KILL_GRACE_SECONDS = 2.0
SHORT_WAIT_SECONDS = 1.0
DECIDE_BATCH = 100
"""Dependents decided per request: DynamoDB's limit of items in one transaction."""


@dataclass
class Ports:
    """Everything a use case may touch. Built by `stratoflow.bootstrap`."""

    runs: RunStore
    definitions: DefinitionStore
    tasks: TaskQueue
    completions: CompletionQueue
    clock: Clock
    ids: IdSource
    events: EventPublisher
    metrics: Metrics
    workers: Workers = field(default_factory=NoWorkers)
    logs: LogReader = field(default_factory=lambda: _NoLogs())


# --------------------------------------------------------------------------- start a run


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
        logical_date=logical_date or iso(now) or "",
        created_at=iso(now) or "",
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
    _make_ready(ports, plan, run, list(plan.roots))
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


def _start_tasks(ports: Ports, plan: Plan, run: RunRecord, task_ids: list[str], now: str) -> bool:
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
            _make_ready(ports, plan, run, won)
            started = True
    return started


def _make_ready(ports: Ports, plan: Plan, run: RunRecord, task_ids: list[str]) -> None:
    """Send decided-to-run tasks to the queue, through the run's concurrency cap if any."""
    if not task_ids:
        return
    now = iso(ports.clock.now()) or ""
    if run.concurrency is None:
        ordered = sorted(task_ids, key=lambda t: -plan.tasks[t].priority)
        ports.tasks.send_tasks(_task_message(plan, run, t, 1, now) for t in ordered)
        return
    for task_id in task_ids:
        ports.runs.put_waiting(run.run_id, task_id, plan.tasks[task_id].priority, now)
    _pump_waiting(ports, plan, run)


def _pump_waiting(ports: Ports, plan: Plan, run: RunRecord) -> None:
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
        now = iso(ports.clock.now()) or ""
        for key, task_id in waiting:
            if not ports.runs.acquire_slot(run.run_id, cap):
                _send(ports, started)
                return
            if ports.runs.take_waiting(run.run_id, key):
                started.append(_task_message(plan, run, task_id, 1, now))
            else:
                ports.runs.release_slot(run.run_id)
        _send(ports, started)


def _send(ports: Ports, messages: list[TaskMessage]) -> None:
    if messages:
        ports.tasks.send_tasks(messages)


# --------------------------------------------------------------------------- execute


class ExecuteOutcome(StrEnum):
    RAN = "ran"  # the command ran and its report was sent
    DROPPED = "dropped"  # a duplicate of an attempt that already ran or moved on
    DEFERRED = "deferred"  # not due yet, or running elsewhere: re-sent with a delay
    LOST = "lost"  # the attempt's earlier executor died: reported as lost


@dataclass(frozen=True)
class ExecuteResult:
    outcome: ExecuteOutcome
    defer_seconds: float = 0.0
    report: AttemptReport | None = None


@dataclass(frozen=True)
class CommandOutcome:
    """What running a command produced (a runner's result, decoupled from its module)."""

    exit_code: int | None
    timed_out: bool
    cancelled: bool
    output_tail: str
    started_at: str
    finished_at: str
    log_ref: str | None = None


CommandRunner = Callable[..., CommandOutcome]
"""run(command, env=, cwd=, timeout=, log_name=, cancel=) → CommandOutcome. A runner may
have a `log_ref(log_name) -> str` attribute: where that attempt's full output will be."""

CANCEL_POLL_SECONDS = 1.0
"""How often a running attempt looks at its run's status, so that a cancel stops it within
about a second (one strongly consistent read per second per running attempt)."""


def task_environment(
    plan: Plan,
    msg: TaskMessage,
    base_env: Mapping[str, str] | None = None,
    attempt: int | None = None,
) -> dict[str, str]:
    """The environment a task's command sees: the base, STRATOFLOW_* and the task's env.
    `attempt` is the attempt's number across redrives (default: the message's)."""
    task = plan.tasks[msg.task_id]
    env = dict(os.environ if base_env is None else base_env)
    env.update(
        {
            "STRATOFLOW_RUN_ID": msg.run_id,
            "STRATOFLOW_WORKFLOW_ID": msg.workflow_id,
            "STRATOFLOW_TASK_ID": msg.task_id,
            "STRATOFLOW_ATTEMPT": str(attempt or msg.attempt),
            "STRATOFLOW_LOGICAL_DATE": msg.logical_date,
        }
    )
    for name, value in msg.params.items():
        env[f"STRATOFLOW_PARAM_{name.upper()}"] = value
    env.update(task.env)
    return env


def execute_task(
    ports: Ports,
    msg: TaskMessage,
    run_command: CommandRunner,
    base_env: Mapping[str, str] | None = None,
    worker: str | None = None,
) -> ExecuteResult:
    """Claim one attempt, run its command, and report the outcome to the completion queue.

    The executor never changes a run's state itself (invariant 10): it reports. While the
    command runs, its run's status is watched: a cancelled run's command is killed at once.
    `worker` names what runs the attempt when it can be stopped from outside (ECS task).
    """
    now = ports.clock.now()
    if msg.not_before is not None and msg.not_before > now.timestamp():
        remaining = msg.not_before - now.timestamp()
        if remaining > SHORT_WAIT_SECONDS:
            return _defer(ports, msg, remaining)
        # SQS delays are whole seconds; a sub-second remainder is waited out here.
        time.sleep(remaining)
        now = ports.clock.now()
    plan = ports.definitions.get_plan(msg.workflow_id, msg.version)
    task = plan.tasks[msg.task_id]
    log_name = attempt_log_name(msg)
    where = getattr(run_command, "log_ref", None)
    log_ref = where(log_name) if callable(where) else ""
    number = msg.attempt
    if msg.kind == "compensate":
        command = task.compensate or "true"
        if not ports.runs.claim_compensation(
            msg.run_id, msg.attempt - 1, msg.task_id, iso(now) or "", log_ref or ""
        ):
            return ExecuteResult(ExecuteOutcome.DROPPED)
    else:
        command = task.command
        lease_until = now.timestamp() + task.timeout + KILL_GRACE_SECONDS + LEASE_MARGIN_SECONDS
        claim = ports.runs.claim_attempt(
            msg.run_id,
            msg.task_id,
            msg.attempt,
            iso(now) or "",
            lease_until,
            now.timestamp(),
            drive=msg.drive,
            log_ref=log_ref or "",
            worker=worker,
        )
        if claim.outcome is ClaimOutcome.DUPLICATE:
            return ExecuteResult(ExecuteOutcome.DROPPED)
        if claim.outcome is ClaimOutcome.HELD:
            # Look again once the holder's lease has passed: by then it has either
            # reported (we drop) or died (we report it lost). Never run a second copy.
            wait = (claim.lease_until or now.timestamp()) - now.timestamp() + 1.0
            return _defer(ports, msg, max(wait, 1.0))
        if claim.outcome is ClaimOutcome.EXPIRED:
            report = _report(msg, lost=True, error="executor lost: the attempt's lease expired")
            ports.completions.send_reports([report])
            return ExecuteResult(ExecuteOutcome.LOST, report=report)
        number = claim.number or msg.attempt
        if msg.enqueued_at:
            queued_for = (now - (parse_iso(msg.enqueued_at) or now)).total_seconds() * 1000
            ports.metrics.timing("QueueLatency", msg.workflow_id, max(queued_for, 0.0))
    result = run_command(
        command,
        env=task_environment(plan, msg, base_env, number),
        cwd=msg.workdir,
        timeout=task.timeout,
        log_name=log_name,
        cancel=RunCancelWatch(ports, msg.run_id),
    )
    report = _report(
        msg,
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        cancelled=result.cancelled,
        started_at=result.started_at,
        finished_at=result.finished_at,
        output_tail=result.output_tail,
        # The reference the claim recorded, which `logs` reads; a runner without one may
        # still say where the output went.
        log_ref=log_ref or result.log_ref,
    )
    ports.completions.send_reports([report])
    return ExecuteResult(ExecuteOutcome.RAN, report=report)


def attempt_log_name(msg: TaskMessage) -> str:
    """The name of an attempt's log: unique per run, task, kind, drive and attempt."""
    drive = f"r{msg.drive}." if msg.drive else ""
    return f"{msg.run_id}/{msg.task_id}.{msg.kind}.{drive}{msg.attempt}.log"


class RunCancelWatch:
    """Set once the attempt's run is cancelled: to the runner it looks like a
    `threading.Event` (it calls `is_set` and `wait` from its own loop, every few tens of
    milliseconds), and the run's status is read at most every CANCEL_POLL_SECONDS there, so
    watching needs no thread of its own (starting one per attempt cost more than the rest
    of an attempt's bookkeeping)."""

    def __init__(self, ports: Ports, run_id: str) -> None:
        self._ports = ports
        self._run_id = run_id
        self._set = threading.Event()
        self._next_look = time.monotonic() + CANCEL_POLL_SECONDS

    def is_set(self) -> bool:
        if self._set.is_set():
            return True
        now = time.monotonic()
        if now >= self._next_look:
            self._next_look = now + CANCEL_POLL_SECONDS
            try:
                run = self._ports.runs.get_run(self._run_id)
            except Exception:  # a throttled read must not end the watch; look again
                return False
            if run is None or run.status is RunStatus.CANCELLED:
                self._set.set()
        return self._set.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        if not self.is_set():
            self._set.wait(timeout)
        return self.is_set()


def _defer(ports: Ports, msg: TaskMessage, seconds: float) -> ExecuteResult:
    # Re-send rather than hold the message invisible: a fresh message starts a fresh
    # receive count, so waiting never pushes it towards the dead-letter queue.
    ports.tasks.send_tasks([msg], delay_seconds=int(min(max(seconds, 0), SQS_MAX_DELAY_SECONDS)))
    return ExecuteResult(ExecuteOutcome.DEFERRED, seconds)


def _report(msg: TaskMessage, **fields: Any) -> AttemptReport:
    return AttemptReport(
        run_id=msg.run_id,
        workflow_id=msg.workflow_id,
        version=msg.version,
        task_id=msg.task_id,
        attempt=msg.attempt,
        kind=msg.kind,
        drive=msg.drive,
        logical_date=msg.logical_date,
        params=dict(msg.params),
        workdir=msg.workdir,
        **fields,
    )


# --------------------------------------------------------------------------- completion


def record_completion(ports: Ports, report: AttemptReport) -> None:
    """Record one finished attempt and move the run forward (the completion handler)."""
    plan = ports.definitions.get_plan(report.workflow_id, report.version)
    if report.kind == "compensate":
        _record_compensation(ports, plan, report)
        return
    task = plan.tasks[report.task_id]
    fields = _attempt_fields(report, iso(ports.clock.now()) or "")
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
                _task_message(plan, run, report.task_id, report.attempt + 1, iso(now) or ""),
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
        now = iso(ports.clock.now()) or ""
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
                _make_ready(ports, plan, context, queued)

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
        made_ready = _start_tasks(ports, plan, run, to_run, now) or made_ready
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
        _make_ready(ports, plan, run, ready)
    elif run.concurrency is not None and first.releases_slot and not made_ready:
        _pump_waiting(ports, plan, run)
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
    now = iso(ports.clock.now()) or ""
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
    now = iso(ports.clock.now()) or ""
    if index + 1 < len(run.compensations):
        # A failed compensation is recorded and the rest still run.
        nxt = _compensation_message(plan, run, run.compensations[index + 1], index + 1, now)
        ports.tasks.send_tasks([nxt])
        return
    _finish_failed(ports, run, ports.runs.list_tasks(run.run_id), now)


def cancel_run(ports: Ports, run_id: str) -> bool:
    """Cancel a running run: nothing new starts, and what runs is stopped.

    The run turns cancelled first (a conditional write: a second cancel, or one racing the
    run's own end, changes nothing and returns False). Then its queued tasks are marked
    cancelled, so their messages are dropped at claim; running attempts see the status
    within CANCEL_POLL_SECONDS and kill their process tree, and ECS tasks are also stopped.
    Each running attempt is recorded cancelled when its report arrives.
    """
    run = ports.runs.get_run(run_id)
    if run is None or run.status not in (RunStatus.RUNNING, RunStatus.COMPENSATING):
        return False
    now = iso(ports.clock.now()) or ""
    if not ports.runs.finish_run(
        run_id, RunStatus.CANCELLED, now, release_workflow=_scheduled(run)
    ):
        return False
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
    ports.metrics.count("RunsCancelled", run.workflow_id)
    ports.events.run_finished(run.with_status(RunStatus.CANCELLED, now), [])
    _after_scheduled_run(ports, run)
    return True


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
    if run.status is RunStatus.RUNNING:
        raise RunNotRetryable(f"run {run_id!r} is running: only a finished run can be retried")
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
    counters: dict[str, dict[str, int]] = {}
    for task_id in reset:
        c: dict[str, int] = {}
        for parent in plan.upstream(task_id):
            if parent not in reset:
                name = COUNTER_FOR_STATUS[status[parent]]
                c[name] = c.get(name, 0) + 1
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
    now = iso(ports.clock.now()) or ""
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
    _start_tasks(ports, plan, run, to_run, now)
    if not reset:
        _finish_run(ports, plan, run)
    return run


def trigger_run(
    ports: Ports,
    workflow_id: str,
    params: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
) -> tuple[RunRecord, bool]:
    """Start a run of the workflow's active version now (the API's and the CLI's trigger).

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
    plan = ports.definitions.get_plan(workflow_id, meta.active_version)
    run_id = None
    if idempotency_key is not None:
        digest = hashlib.sha256(f"{workflow_id}\0{idempotency_key}".encode()).hexdigest()
        run_id = f"{workflow_id}@key-{digest[:24]}"
    run, created = start_run(ports, plan, params=params, run_id=run_id, trigger="api")
    # The key names a request; the same key with another body is a client mistake.
    merged = {**plan.workflow.params, **(params or {})}
    if not created and run.version == plan.version and run.params != merged:
        raise IdempotencyConflict(
            f"Idempotency-Key {idempotency_key!r} was used for run {run.run_id} with other params"
        )
    return run, created


def _compensation_logs(ports: Ports, run: RunRecord, task_id: str) -> dict[str, Any]:
    found = [c for c in ports.runs.list_compensations(run.run_id) if c.task_id == task_id]
    if not found:
        raise LookupError(f"task {task_id!r} of run {run.run_id!r} has not been compensated")
    record = found[-1]
    running = record.status == "running"
    text = ports.logs.read(record.log_ref) if record.log_ref else LogText(text="", found=False)
    return {
        "run_id": run.run_id,
        "task_id": task_id,
        "attempt": 1,
        "attempts": 1,
        "status": record.status,
        "complete": not running,
        "found": text.found,
        "text": text.text if text.found else record.output_tail,
    }


class WorkflowInactive(LookupError):
    """The workflow is registered but has no active version."""


class IdempotencyConflict(ValueError):
    """An idempotency key reused with a different request."""


def task_logs(
    ports: Ports,
    run_id: str,
    task_id: str,
    attempt: int | None = None,
    compensation: bool = False,
) -> dict[str, Any]:
    """The full output of one attempt of a task (the last one by default), or of the task's
    compensation in a failed run.

    Attempts are numbered from 1 across retries and redrives. Raises LookupError for an
    unknown run, task or attempt.
    """
    run = ports.runs.get_run(run_id)
    if run is None:
        raise LookupError(f"run {run_id!r} does not exist")
    plan = ports.definitions.get_plan(run.workflow_id, run.version)
    if task_id not in plan.tasks:
        raise LookupError(f"run {run_id!r} has no task {task_id!r}")
    if compensation:
        return _compensation_logs(ports, run, task_id)
    rec = ports.runs.get_task(run_id, task_id)
    count = len(rec.logs)
    if count == 0:
        raise LookupError(f"task {task_id!r} of run {run_id!r} has not started an attempt")
    number = count if attempt is None else attempt
    if not 1 <= number <= count:
        raise LookupError(
            f"task {task_id!r} of run {run_id!r} has {count} attempt(s), "
            f"so there is no attempt {number}"
        )
    ref = rec.logs[number - 1]
    running = number == count and rec.status is TaskStatus.RUNNING
    text = ports.logs.read(ref) if ref else LogText(text="", found=False)
    return {
        "run_id": run_id,
        "task_id": task_id,
        "attempt": number,
        "attempts": count,
        "status": rec.status.value if number == count else "finished",
        "complete": not running,
        "found": text.found,
        # Without the full log (expired, or never written) the last attempt's stored tail
        # is all there is.
        "text": text.text if text.found else (rec.output_tail if number == count else ""),
    }


# --------------------------------------------------------------------------- schedules

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
    now = iso(ports.clock.now()) or ""
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
        start_run(
            ports,
            plan,
            run_id=scheduled_run_id(workflow_id, slot),
            logical_date=iso(slot),
            trigger=SCHEDULE_TRIGGER,
        )
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


# --------------------------------------------------------------------------- queries


def run_status(ports: Ports, run_id: str) -> dict[str, Any] | None:
    """The run document (`stratoflow status --json`), or None if there is no such run."""
    from stratoflow.core.records import run_document

    run = ports.runs.get_run(run_id)
    if run is None:
        return None
    plan = ports.definitions.get_plan(run.workflow_id, run.version)
    tasks = ports.runs.list_tasks(run_id)
    comps = ports.runs.list_compensations(run_id) if run.compensations else []
    return run_document(run, tasks, list(plan.tasks), comps)


class _NoLogs:
    def read(self, ref: str) -> LogText:
        return LogText(text="", found=False)


@dataclass
class SystemClock:
    """The real clock, for production wiring."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class RandomIds:
    """Sortable unique ids: a millisecond timestamp then random hex."""

    prefix: str = ""
    _rand: Callable[[int], bytes] = field(default=os.urandom)

    def new_id(self) -> str:
        return f"{self.prefix}{int(time.time() * 1000):013d}-{self._rand(6).hex()}"
