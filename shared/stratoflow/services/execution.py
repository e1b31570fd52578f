"""Executing one attempt: `execute_task` claims it, runs its command through a
`CommandRunner` while watching for its run's cancel, timeout or a mark of its task
(`RunCancelWatch`), and reports."""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from stratoflow.core.plan import Plan
from stratoflow.core.records import AttemptReport, TaskMessage, iso, parse_iso
from stratoflow.core.states import RunStatus, TaskStatus
from stratoflow.ports import (
    ClaimOutcome,
    CommandIdentity,
    CommandRunner,
    CredentialsUnavailable,
    RunCommand,
    SecretUnavailable,
)

from .bundle import SHORT_WAIT_SECONDS, SQS_MAX_DELAY_SECONDS, Ports

LEASE_MARGIN_SECONDS = 60.0
"""Extra time past a task's timeout (and kill grace) before its claim counts as abandoned."""
KILL_GRACE_SECONDS = 2.0


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


CANCEL_POLL_SECONDS = 1.0
"""How often a running attempt looks at its run's status, so that a cancel stops it within
about a second (one strongly consistent read per second per running attempt)."""


def task_environment(
    plan: Plan,
    msg: TaskMessage,
    base_env: Mapping[str, str] | None = None,
    attempt: int | None = None,
    secrets: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment a task's command sees: the base (the credential source's, on the
    executor path), STRATOFLOW_*, the params, the task's env and its resolved `secrets`.
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
    env.update(secrets or {})
    return env


def role_session_name(msg: TaskMessage, attempt: int) -> str:
    """The STS session name of an attempt's credentials: run, task and attempt, as CloudTrail
    shows them (at most 64 of the characters STS allows; a long one keeps its end and a
    digest of the whole)."""
    kind = "c" if msg.kind == "compensate" else "a"
    name = re.sub(r"[^\w+=,.@-]", "-", f"{msg.run_id}.{msg.task_id}.{kind}{attempt}")
    if len(name) <= MAX_SESSION_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{digest}-{name[-(MAX_SESSION_NAME - len(digest) - 1) :]}"


MAX_SESSION_NAME = 64
"""STS's limit on RoleSessionName."""


def secret_values(plan: Plan, msg: TaskMessage) -> list[str]:
    """The values of the run's `secret: true` params: masked in the command's output."""
    return [msg.params[name] for name in plan.workflow.secret_params if msg.params.get(name)]


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
    The command's environment starts from `ports.credentials` (on AWS: from scratch, with
    the task role's credentials; invariant 12) or, for tests, from `base_env`; its secrets
    come from `ports.secrets` and are masked in its output.
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
    log_ref = run_command.log_ref(log_name)
    number = msg.attempt
    if msg.kind == "compensate":
        command = task.compensate or "true"
        if not ports.runs.claim_compensation(
            msg.run_id, msg.attempt - 1, msg.task_id, iso(now), log_ref or ""
        ):
            return ExecuteResult(ExecuteOutcome.DROPPED)
    else:
        command = task.command
        lease_until = now.timestamp() + task.timeout + KILL_GRACE_SECONDS + LEASE_MARGIN_SECONDS
        claim = ports.runs.claim_attempt(
            msg.run_id,
            msg.task_id,
            msg.attempt,
            iso(now),
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
    identity = CommandIdentity(
        role=task.role,
        session_name=role_session_name(msg, number),
        duration_seconds=math.ceil(task.timeout + KILL_GRACE_SECONDS + LEASE_MARGIN_SECONDS),
    )
    try:
        base = ports.credentials.environment(identity) if base_env is None else dict(base_env)
        secrets = {name: ports.secrets.resolve(name, ref) for name, ref in task.secrets.items()}
    except (CredentialsUnavailable, SecretUnavailable) as err:
        # The command does not run without what it was promised; the attempt fails (and is
        # retried as its `retries` allow: SSM may have been throttled) with the reason,
        # which names the role or the reference and never a value.
        stamp = iso(ports.clock.now())
        report = _report(
            msg,
            error=str(err),
            output_tail=f"stratoflow: {err}",
            started_at=stamp,
            finished_at=stamp,
            log_ref=log_ref or None,
        )
        ports.completions.send_reports([report])
        return ExecuteResult(ExecuteOutcome.RAN, report=report)
    result = run_command(
        command,
        env=task_environment(plan, msg, base, number, secrets),
        cwd=msg.workdir,
        timeout=task.timeout,
        log_name=log_name,
        cancel=RunCancelWatch(ports, msg.run_id, msg),
        mask=[*secrets.values(), *secret_values(plan, msg)],
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
    """Set once the attempt should stop: its run was cancelled, or, for a task's attempt
    (`msg`), the run ended otherwise (it timed out) or the task no longer runs this attempt
    (it was marked by hand). To the runner it looks like a `threading.Event` (it calls
    `is_set` and `wait` from its own loop, every few tens of milliseconds), and the run
    (with the task: one request) is read at most every CANCEL_POLL_SECONDS there, so
    watching needs no thread of its own (starting one per attempt cost more than the rest
    of an attempt's bookkeeping).

    A run seen past its deadline is handed to the completion handler once (a `timeout`
    command; the executor reports, the completion handler decides), so a run's `timeout`
    takes effect within about a second of it while an attempt runs."""

    def __init__(self, ports: Ports, run_id: str, msg: TaskMessage | None = None) -> None:
        self._ports = ports
        self._run_id = run_id
        self._task = msg if msg is not None and msg.kind == "task" else None
        self._set = threading.Event()
        self._next_look = time.monotonic() + CANCEL_POLL_SECONDS
        self._nudged = False

    def is_set(self) -> bool:
        if self._set.is_set():
            return True
        now = time.monotonic()
        if now >= self._next_look:
            self._next_look = now + CANCEL_POLL_SECONDS
            try:
                if self._stopped():
                    self._set.set()
            except Exception:  # a throttled read must not end the watch; look again
                return False
        return self._set.is_set()

    def _stopped(self) -> bool:
        msg = self._task
        if msg is None:
            run = self._ports.runs.get_run(self._run_id)
            return run is None or run.status is RunStatus.CANCELLED
        try:
            run, tasks = self._ports.runs.get_run_and_tasks(self._run_id, [msg.task_id])
        except LookupError:
            return True
        task = tasks[msg.task_id]
        if run.status is not RunStatus.RUNNING:
            return True
        if task.status is not TaskStatus.RUNNING or task.attempt != msg.attempt:
            return True
        if task.drive != msg.drive:
            return True
        deadline = parse_iso(run.deadline)
        if deadline is not None and not self._nudged and deadline <= self._ports.clock.now():
            self._nudged = True
            self._ports.completions.send_commands([RunCommand(RunCommand.TIMEOUT, run.run_id)])
        return False

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
