"""The ports the services need. Adapters in `stratoflow.aws` implement them over AWS APIs.

Every write that changes state is conditional and forward-only (invariant 1), so each
method documents the condition it applies and what it returns when the condition fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from stratoflow.core.model import Workflow
from stratoflow.core.plan import Plan
from stratoflow.core.records import (
    AttemptReport,
    CompensationRecord,
    MarkRecord,
    RunRecord,
    TaskMessage,
    TaskRecord,
    WorkflowMeta,
)
from stratoflow.core.states import GOOD_LEAF_STATUSES, RunStatus, TaskStatus


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware, UTC."""


class IdSource(Protocol):
    def new_id(self) -> str:
        """A fresh unique id (for manually started runs)."""


class ClaimOutcome(StrEnum):
    """Result of claiming a task attempt before running it (invariant 2)."""

    CLAIMED = "claimed"  # this executor owns the attempt: run it
    DUPLICATE = "duplicate"  # the attempt already ran or the task moved on: drop the message
    HELD = "held"  # another executor runs it and its lease is valid: look again later
    EXPIRED = "expired"  # claimed by an executor that died (lease passed): report it lost


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    lease_until: float | None = None
    number: int | None = None
    """The attempt's number counted across redrives (what STRATOFLOW_ATTEMPT shows)."""


class SlotOutcome(StrEnum):
    """Result of starting a waiting task of a run under a concurrency cap."""

    STARTED = "started"  # entry taken, slot counted, task queued: send its message
    FULL = "full"  # the run's cap is reached: the entry stays
    GONE = "gone"  # another caller took the entry (or the task moved on): nothing to do


class FinalizeOutcome(StrEnum):
    APPLIED = "applied"  # this call recorded the final state and propagated it
    ALREADY = "already"  # recorded before (a redelivery): propagation was completed now
    STALE = "stale"  # the task is in another attempt or state: nothing to do
    RUN_ENDED = "run_ended"  # require_running, and the run was not running: nothing written


@dataclass(frozen=True)
class Finalized:
    """What `RunStore.finalize_task` did."""

    outcome: FinalizeOutcome
    waiting: frozenset[str] = frozenset()
    """Guarded dependents (`Settlement.guards`) that were pending and still wait for other
    parents after this count (APPLIED only): none of them can have been decided by it."""


@dataclass(frozen=True)
class Settlement:
    """A task reaching a final state, and what that changes around it."""

    task_id: str
    status: TaskStatus
    children: Sequence[str]
    attempt: int | None  # the attempt that ended; None when decided without running
    is_leaf: bool
    releases_slot: bool
    fields: dict[str, Any] = field(default_factory=dict)  # exit_code, times, output_tail …
    drive: int = 0  # the run's drive the attempt belongs to (see TaskMessage.drive)
    decided: Mapping[str, TaskStatus] = field(default_factory=dict)
    """Dependents decided by this settlement alone (single parent), written with it."""
    require_running: bool = False
    """Apply only while the run is running (FinalizeOutcome.RUN_ENDED otherwise)."""
    guards: Mapping[str, int] = field(default_factory=dict)
    """Dependents this settlement can decide only as the last of their parents (child →
    its number of parents; see `rules.decided_only_by_last`): each is counted on condition
    that it is still pending and this is not its last parent, and reported back as waiting
    when so, which spares reading it back."""

    @property
    def bad_leaf(self) -> bool:
        """Whether this settlement makes the run fail (a leaf that did not succeed or skip)."""
        return self.is_leaf and self.status not in GOOD_LEAF_STATUSES


@dataclass(frozen=True)
class RunDefaults:
    """What recording a run needs of its version: read from the stored definition as it
    is, not compiled into a `Plan` (seconds for tens of thousands of tasks), so that a
    trigger answers in the same short time whatever the workflow's size."""

    params: dict[str, str]
    concurrency: int | None
    n_tasks: int
    timeout: float | None = None
    """The run's limit in seconds (the workflow's `timeout`), if any."""

    @classmethod
    def from_definition(cls, body: str | bytes) -> RunDefaults:
        """From a stored definition's JSON (validated when it was stored)."""
        data = json.loads(body)
        return cls(
            params=dict(data.get("params") or {}),
            concurrency=data.get("concurrency"),
            n_tasks=len(data["tasks"]),
            timeout=data.get("timeout"),
        )


class DefinitionStore(Protocol):
    def save_version(self, workflow: Workflow, source: str, now: datetime) -> int:
        """Store a new immutable version (or return the existing one with identical content)."""

    def get_plan(self, workflow_id: str, version: int) -> Plan:
        """The compiled definition of one version; raises `DefinitionNotFound`."""

    def get_meta(self, workflow_id: str) -> WorkflowMeta | None: ...

    def run_defaults(self, workflow_id: str, version: int) -> RunDefaults:
        """What a run of this version takes from its definition when it is recorded, read
        without compiling the plan; raises `DefinitionNotFound`."""

    def list_versions(self, workflow_id: str) -> list[dict[str, Any]]:
        """The stored versions (version, created_at, source, hash), oldest first."""

    def list_workflows(self) -> list[WorkflowMeta]: ...

    def activate(self, meta: WorkflowMeta) -> None:
        """Make `meta.active_version` the version new runs use, with its schedule state."""

    def set_paused(self, workflow_id: str, paused: bool) -> bool: ...

    def claim_source_event(self, source: str, event_id: str) -> bool:
        """Remember one S3 event of `source`; False if it was seen before (a replay)."""

    def record_source_error(self, source: str, message: str | None, now: str) -> None:
        """Keep (or, with None, clear) the error of the last upload of `source`."""

    def source_errors(self) -> list[dict[str, str]]:
        """Uploads whose last version was rejected: source, message, at."""

    def link_source(self, source: str, workflow_id: str) -> None:
        """Record which workflow the file at `source` registered."""

    def deactivate_source(self, source: str) -> str | None:
        """The file at `source` is gone: deactivate the workflow it registered, if that file
        is still its active source; returns the workflow id deactivated."""

    def due_workflows(self, now: str, limit: int) -> list[str]:
        """Workflows whose next slot is at or before `now` (active, scheduled, unpaused)."""

    def advance_slot(
        self, workflow_id: str, expected: str, new: str | None, max_active: int
    ) -> bool:
        """next_slot expected → new and one more active run, if still expected and fewer
        than `max_active` scheduled runs are active; True for the one caller that did it."""


class RunStore(Protocol):
    def create_run(self, run: RunRecord) -> bool:
        """Create the run unless a run with its id exists; True if this call created it."""

    def get_run(self, run_id: str) -> RunRecord | None: ...

    def begin_run(self, run_id: str) -> bool:
        """queued → running (a queued run's start has begun); True for the one caller that
        did it. The run's start stays pending (see `pending_starts`) until `finish_start`."""

    def finish_start(self, run_id: str, now: str) -> bool:
        """Record that a running run's start is complete (its roots were sent): sets
        `started_at` if not set; True for the one caller that set it."""

    def pending_starts(self, before: str, limit: int) -> list[str]:
        """Ids of runs created before `before` whose start is not complete: queued, or
        running without `started_at` (a start that died midway), oldest first."""

    def quiet_runs(self, before: str, limit: int) -> list[tuple[str, str]]:
        """(run id, last sign of life) of started runs, running or compensating, that have
        shown none since `before`, oldest first. A sign of life is the run's start, each
        settlement of one of its tasks, and `touch_run`."""

    def touch_run(self, run_id: str, seen: str, now: str) -> bool:
        """Move a quiet run's last sign of life from `seen` to `now`; True for the one
        caller that moved it (False if the run moved on, or ended, meanwhile)."""

    def page_runs(
        self, workflow_id: str, limit: int, after: str | None = None
    ) -> tuple[list[RunRecord], str | None]:
        """A page of the workflow's runs, newest first, and the cursor of the next page."""

    def cancel_unstarted(self, run_id: str, task_ids: Sequence[str], now: str) -> list[str]:
        """Mark cancelled those of `task_ids` still queued, waiting or up for retry."""

    def redrive(
        self,
        run: RunRecord,
        resets: dict[str, dict[TaskStatus, int]],
        final_count: int,
        release_workflow: str | None,
        *,
        leaf_bad: int = 0,
        marks: Sequence[MarkRecord] = (),
        deadline: str | None = None,
    ) -> bool:
        """Reset `resets` to pending (with these upstream counters) in the run's next drive
        and put the run back to running with `final_count` tasks final and `leaf_bad` of
        them leaves that did not succeed or skip (the tasks kept); False if the run changed
        meanwhile (its status or drive is not `run`'s). Each of `marks` sets its task's
        final status in the new drive (kept: counted in `final_count`) and is added to the
        run's marks; `deadline` replaces the run's (see `set_deadline`)."""

    def mark_task(
        self, run_id: str, task_id: str, expected: TaskStatus, mark: MarkRecord, drive: int
    ) -> bool:
        """A running run's task set to `mark.status` by hand: if the run is running in
        `drive` and the task is still `expected` (pending: no item), its status becomes
        final, not yet propagated (as a decided task's: `finalize_task` with no attempt
        then counts it), its lease is ended, and `mark` is added to the run's marks. True
        for the one caller that did it."""

    def set_deadline(self, run_id: str, deadline: str) -> bool:
        """Give a queued or running run without one its `deadline` (UTC ISO), and list it
        for `overdue_runs`; True if this call set it."""

    def overdue_runs(self, now: str, limit: int) -> list[tuple[str, str]]:
        """(run id, deadline) of runs listed with a deadline at or before `now`, oldest
        first. A run that ended may still be listed until `clear_deadline`."""

    def clear_deadline(self, run_id: str, deadline: str) -> None:
        """Stop listing the run for `overdue_runs`, if it is listed with `deadline` (a
        redrive may have listed it with another since)."""

    def list_runs(self, workflow_id: str, limit: int) -> list[RunRecord]:
        """The workflow's runs, newest first."""

    def get_run_and_tasks(
        self, run_id: str, task_ids: Sequence[str]
    ) -> tuple[RunRecord, dict[str, TaskRecord]]:
        """Strongly consistent read of the run and some of its tasks (absent → pending)."""

    def list_tasks(self, run_id: str) -> dict[str, TaskRecord]:
        """Every task item of a run (not for the hot path)."""

    def claim_attempt(
        self,
        run_id: str,
        task_id: str,
        attempt: int,
        started_at: str,
        lease_until: float,
        now: float,
        *,
        drive: int = 0,
        log_ref: str = "",
        worker: str | None = None,
    ) -> Claim:
        """Move the task to running for `attempt` of `drive` if it is ready for exactly that
        attempt, recording where its log goes and what runs it."""

    def expired_attempts(self, now: float, limit: int) -> list[tuple[str, str]]:
        """(run id, task id) of running attempts whose lease ended before `now`."""

    def get_task(self, run_id: str, task_id: str) -> TaskRecord: ...

    def retry_attempt(
        self, run_id: str, task_id: str, attempt: int, fields: dict[str, Any], drive: int = 0
    ) -> bool:
        """running(attempt) → up_for_retry; True also when a redelivery finds it done already."""

    def finalize_task(
        self,
        run_id: str,
        settlement: Settlement,
        on_chunk: Callable[[Sequence[str]], None] | None = None,
    ) -> Finalized:
        """Record the final state and, atomically with it, count it in each child's upstream
        counters and in the run's counters. Idempotent under redelivery. A wide fan-out is
        written in several transactions; on the first application `on_chunk` gets the
        children of each as soon as it is written (so their work can start at once)."""

    def decide_task(self, run_id: str, task_id: str, status: TaskStatus, now: str) -> bool:
        """pending → status; True only for the one caller that made the decision."""

    def decide_tasks(
        self, run_id: str, task_ids: Sequence[str], status: TaskStatus, now: str
    ) -> list[str]:
        """`decide_task` for several tasks at once; returns the ones this call decided."""

    def put_waiting(self, run_id: str, task_id: str, priority: int, now: str) -> None: ...

    def peek_waiting(self, run_id: str, limit: int) -> list[tuple[str, str]]:
        """(entry key, task id) of waiting tasks, highest priority first, then first come."""

    def start_waiting(self, run_id: str, key: str, task_id: str, cap: int) -> SlotOutcome:
        """All or nothing: take the waiting entry `key` of `task_id`, count one more active
        task if fewer than `cap` are, and move the task waiting → queued. The queued status
        says it holds a slot, so a task whose message was lost after this can be sent again
        without a second slot. An entry whose task is no longer waiting is removed (GONE)."""

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        now: str,
        compensations: Sequence[str] = (),
        release_workflow: str | None = None,
        reason: str | None = None,
    ) -> bool:
        """running|compensating → status (forward only), and queued → cancelled; True for
        the one caller that did it. With `release_workflow`, atomically count one scheduled
        run of it as no longer active; `reason` is kept as the run's (why it ended)."""

    def claim_compensation(
        self, run_id: str, index: int, task_id: str, started_at: str, log_ref: str = ""
    ) -> bool: ...

    def record_compensation(self, run_id: str, record: CompensationRecord) -> bool: ...

    def list_compensations(self, run_id: str) -> list[CompensationRecord]: ...


class TaskQueue(Protocol):
    def send_tasks(self, messages: Iterable[TaskMessage], delay_seconds: int = 0) -> None:
        """Enqueue task attempts (batched)."""


class CompletionQueue(Protocol):
    def send_reports(self, reports: Iterable[AttemptReport]) -> None:
        """Report finished attempts to the completion handler (batched)."""

    def send_commands(self, commands: Iterable[RunCommand]) -> None:
        """Hand work on a run to the completion handler (a queued run's start, a cancelled
        run's per-task work), as messages of the same queue."""


@dataclass(frozen=True)
class RunCommand:
    """Work on a whole run handed from a request to the completion handler, so that the
    request answers at once whatever the run's size. Only a nudge: the handler acts on what
    the run store says (a `start` of a run that is not queued, or whose start is complete,
    does nothing), so a duplicate or a forged command changes nothing."""

    command: str  # START, CANCEL, TIMEOUT or SETTLED
    run_id: str
    task_id: str | None = None
    """SETTLED: the task whose attempt (`attempt` of `drive`) reported."""
    attempt: int | None = None
    drive: int | None = None

    START = "start"
    CANCEL = "cancel"
    TIMEOUT = "timeout"
    """The run may have passed its deadline (the tick, or an attempt's watch, saw it)."""
    SETTLED = "settled"
    """An attempt of a redriven run has reported: once its report is recorded, see whether
    that ended the run (a task kept from an earlier drive does not tell it)."""
    COMMANDS = (START, CANCEL, TIMEOUT, SETTLED)

    def to_json(self) -> str:
        body: dict[str, Any] = {"command": self.command, "run_id": self.run_id}
        if self.task_id is not None:
            body.update(task_id=self.task_id, attempt=self.attempt, drive=self.drive)
        return json.dumps(body, sort_keys=True)

    @classmethod
    def from_body(cls, body: str) -> RunCommand | None:
        """The command in a completion-queue body, or None if the body is a report."""
        data = json.loads(body)
        if not isinstance(data, dict) or "command" not in data:
            return None
        command, run_id = data["command"], data.get("run_id")
        if command not in cls.COMMANDS or not isinstance(run_id, str):
            raise ValueError(f"not a run command: {body[:200]!r}")
        task_id, attempt, drive = data.get("task_id"), data.get("attempt"), data.get("drive")
        if command == cls.SETTLED and not (
            isinstance(task_id, str) and isinstance(attempt, int) and isinstance(drive, int)
        ):
            raise ValueError(f"not a run command: {body[:200]!r}")
        return cls(command=command, run_id=run_id, task_id=task_id, attempt=attempt, drive=drive)


class EventPublisher(Protocol):
    def run_finished(self, run: RunRecord, failed_tasks: Sequence[str]) -> None:
        """Announce a finished run (EventBridge `Run Finished` on AWS)."""


class NoEvents:
    """Announces nothing (a process that only runs attempts has nothing to announce)."""

    def run_finished(self, run: RunRecord, failed_tasks: Sequence[str]) -> None:
        return None


class Metrics(Protocol):
    def count(self, name: str, workflow_id: str, value: float = 1.0) -> None: ...

    def timing(self, name: str, workflow_id: str, milliseconds: float) -> None: ...


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


class Cancel(Protocol):
    """What the runner watches to stop a command: a `threading.Event`, or anything that
    answers like one (`services.execution.RunCancelWatch`)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class CommandRunner(Protocol):
    """Runs an attempt's command (`stratoflow.runner.commands.AttemptRunner`)."""

    def __call__(
        self,
        command: str,
        *,
        env: Mapping[str, str],
        cwd: str | None,
        timeout: float,
        log_name: str,
        cancel: Cancel | None = None,
        mask: Sequence[str] = (),
    ) -> CommandOutcome:
        """Run `command` with `sh -c`: its whole process tree killed at `timeout` or on
        `cancel`, its full output to where `log_ref(log_name)` says, every value in `mask`
        written as `***` there and in the tail."""

    def log_ref(self, log_name: str) -> str:
        """Where the attempt logged as `log_name` writes its full output (a `LogReader`
        reference), known before the command starts; "" if nowhere it can be read back."""


class DefinitionNotFound(LookupError):
    """No stored definition for the (workflow, version) asked for."""


class Workers(Protocol):
    """What runs attempts outside this process and can be stopped from outside."""

    def stop(self, worker: str, reason: str) -> None:
        """Stop the worker running an attempt (an ECS task); a gone worker is not an error."""


class NoWorkers:
    """No external workers (Lambda and local attempts stop themselves on a cancel)."""

    def stop(self, worker: str, reason: str) -> None:
        return None


@dataclass(frozen=True)
class LogText:
    """An attempt's output as far as it is available."""

    text: str
    found: bool  # False: nothing was written where the attempt logs (yet, or it expired)


class LogReader(Protocol):
    def read(self, ref: str) -> LogText:
        """The output of the attempt whose log reference is `ref` (see the runner)."""


class RunNotRetryable(Exception):
    """A redrive asked of a run that cannot be redriven (still running, say)."""


@dataclass(frozen=True)
class CommandIdentity:
    """Who one attempt's command runs as (invariant 12: never as the engine)."""

    role: str | None
    """The task's `role` (an IAM role ARN or name); None: the installation's default."""
    session_name: str
    """Names the run, task and attempt: what CloudTrail shows for the command's calls."""
    duration_seconds: int
    """How long the attempt may run (its timeout and kill grace): the credentials' lifetime,
    within what the credential source can give."""


class CredentialsUnavailable(Exception):
    """The command's credentials could not be had (the role cannot be assumed). The message
    names the role and the reason, never a credential: it becomes the attempt's output."""


class CredentialSource(Protocol):
    """The environment an attempt's command starts from, credentials included."""

    def environment(self, identity: CommandIdentity) -> dict[str, str]:
        """On AWS: an environment built from scratch (nothing of the executor's own AWS_*,
        container-credential or Lambda variables) with the task role's temporary
        credentials; locally: the user's own environment. Raises CredentialsUnavailable."""


class ProcessEnvironment:
    """`CredentialSource` giving commands this process's environment as it is: what a
    `Ports` built without one uses (tests, tools). The engines choose theirs in bootstrap."""

    def environment(self, identity: CommandIdentity) -> dict[str, str]:
        import os

        return dict(os.environ)


class SecretUnavailable(Exception):
    """A secret could not be resolved. The message names the variable, the reference and
    the reason, never a value: it becomes the attempt's output."""


class SecretSource(Protocol):
    """Resolves the secrets a task declares (`secrets:`), when its attempt starts."""

    def resolve(self, name: str, reference: str) -> str:
        """The value of `reference` ("ssm:/path", "secretsmanager:id[#key]") that the task
        sets as environment variable `name`. Raises SecretUnavailable."""


class NoSecrets:
    """`SecretSource` that resolves nothing (a `Ports` built without one)."""

    def resolve(self, name: str, reference: str) -> str:
        raise SecretUnavailable(
            f"secret {name} ({reference}): this engine has no secret source configured"
        )
