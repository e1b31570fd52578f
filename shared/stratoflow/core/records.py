"""The engine's records: what is stored about runs and tasks, and the messages between steps.

Plain dataclasses with JSON round-trips; no I/O. Times are aware UTC datetimes in memory and
ISO 8601 text on the wire and in storage (invariant 9).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Self, TypedDict, overload

from stratoflow.core.states import FINAL_RUN_STATUSES, RunStatus, TaskStatus

OUTPUT_TAIL_BYTES = 4096


@overload
def iso(ts: datetime) -> str: ...


@overload
def iso(ts: None) -> None: ...


def iso(ts: datetime | None) -> str | None:
    """ISO 8601 UTC text with a Z suffix (None for None)."""
    if ts is None:
        return None
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


class _Wire:
    """JSON (de)serialisation shared by the records below."""

    def to_json(self) -> str:
        # Shallow: the records' fields are plain values and flat str → str maps, and
        # dataclasses.asdict's deep copy was a tenth of a task message's cost.
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        return json.dumps(values, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class TaskMessage(_Wire):
    """A request to run one attempt of a task (or one compensation): the task queue's body."""

    run_id: str
    workflow_id: str
    version: int
    task_id: str
    attempt: int
    logical_date: str
    params: dict[str, str] = field(default_factory=dict)
    kind: str = "task"  # "task" | "compensate"
    workdir: str | None = None
    not_before: float | None = None  # epoch seconds; for retry delays beyond SQS's 15 minutes
    enqueued_at: str | None = None
    priority: int = 0
    executor: str = "lambda"  # "lambda" | "fargate": where the attempt runs on AWS
    cpu: int = 256
    memory: int = 512
    drive: int = 0
    """How many times the run was redriven before this attempt was sent: a report of an
    earlier drive must not settle the task of a later one."""


@dataclass(frozen=True)
class AttemptReport(_Wire):
    """What an executor observed of one attempt: the completion queue's body (invariant 10)."""

    run_id: str
    workflow_id: str
    version: int
    task_id: str
    attempt: int
    kind: str = "task"
    exit_code: int | None = None
    timed_out: bool = False
    cancelled: bool = False
    lost: bool = False  # the executor died; detected through the attempt's lease
    started_at: str | None = None
    finished_at: str | None = None
    output_tail: str = ""
    log_ref: str | None = None
    error: str | None = None
    drive: int = 0
    # The run's context, echoed from the task message: the completion handler makes its
    # dependents' messages from these without reading the run (None: read it).
    logical_date: str | None = None
    params: dict[str, str] | None = None
    workdir: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.cancelled or self.lost)


@dataclass(frozen=True)
class MarkRecord:
    """A task's outcome set by hand (`stratoflow mark`): who did it, when and why."""

    task_id: str
    status: str  # "succeeded" | "failed"
    by: str
    at: str
    reason: str = ""

    def to_dict(self) -> MarkDocument:
        return {
            "task_id": self.task_id,
            "status": self.status,
            "by": self.by,
            "at": self.at,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MarkRecord:
        return cls(
            task_id=str(data["task_id"]),
            status=str(data["status"]),
            by=str(data.get("by", "")),
            at=str(data.get("at", "")),
            reason=str(data.get("reason") or ""),
        )


@dataclass(frozen=True)
class RunRecord:
    """One run of one workflow version."""

    run_id: str
    workflow_id: str
    version: int
    status: RunStatus
    logical_date: str
    created_at: str
    n_tasks: int
    params: dict[str, str] = field(default_factory=dict)
    concurrency: int | None = None
    workdir: str | None = None
    trigger: str = "manual"
    started_at: str | None = None
    finished_at: str | None = None
    final_count: int = 0
    leaf_bad: int = 0
    active: int = 0
    compensations: tuple[str, ...] = ()
    drive: int = 0  # times the run was redriven (`stratoflow retry`)
    deadline: str | None = None
    """When the run fails if it is still running (the workflow's `timeout`; UTC ISO)."""
    reason: str | None = None
    """Why the run ended as it did, when the engine ended it (a timeout)."""
    marks: tuple[MarkRecord, ...] = ()
    """The outcomes set by hand (`stratoflow mark`), oldest first."""

    def with_status(self, status: RunStatus, finished_at: str | None = None) -> RunRecord:
        return replace(self, status=status, finished_at=finished_at or self.finished_at)


@dataclass(frozen=True)
class TaskRecord:
    """A task's state within a run. An absent item reads as a pending task, never attempted."""

    task_id: str
    status: TaskStatus = TaskStatus.PENDING
    attempt: int = 0
    exit_code: int | None = None
    timed_out: bool = False
    started_at: str | None = None
    finished_at: str | None = None
    settled_at: str | None = None
    output_tail: str = ""
    lease_until: float | None = None
    log_ref: str | None = None
    error: str | None = None
    counters: dict[TaskStatus, int] = field(default_factory=dict)
    """Upstream counters: how many of its parents ended in each final status."""
    logs: tuple[str, ...] = ()
    """Where each attempt's full output is, in attempt order across redrives (log refs)."""
    worker: str | None = None
    """What runs the current attempt when it can be stopped from outside (an ECS task ARN)."""
    drive: int = 0
    propagated: bool = False
    """Its end is counted in its dependents' counters and the run's (its settlement applied)."""


@dataclass(frozen=True)
class WorkflowMeta:
    """A registered workflow: its active version and the state of its schedule."""

    workflow_id: str
    latest_version: int
    active_version: int | None = None
    paused: bool = False
    schedule: str | None = None
    timezone: str = "UTC"
    catchup: bool = False
    max_active_runs: int = 1
    next_slot: str | None = None  # the oldest slot not started yet (UTC ISO)
    active_runs: int = 0  # scheduled runs started and not finished


@dataclass(frozen=True)
class CompensationRecord:
    """The outcome of one compensation command of a failed run."""

    index: int
    task_id: str
    status: str  # "succeeded" | "failed"
    exit_code: int | None
    timed_out: bool
    started_at: str | None
    finished_at: str | None
    output_tail: str
    log_ref: str | None = None


class TaskDocument(TypedDict):
    """One task in a run document."""

    status: str
    attempts: int
    exit_code: int | None
    timed_out: bool
    started_at: str | None
    finished_at: str | None
    output_tail: str


class CompensationDocument(TypedDict):
    """One compensation of a failed run, in its document."""

    task_id: str
    status: str
    exit_code: int | None
    timed_out: bool
    started_at: str | None
    finished_at: str | None
    output_tail: str


class MarkDocument(TypedDict):
    """A task's outcome set by hand, in its run's document."""

    task_id: str
    status: str
    by: str
    at: str
    reason: str


class RunDocument(TypedDict):
    """The JSON document `stratoflow run --json`, `status --json` and `GET /runs/{id}`
    give (a user contract; the API's response model mirrors it)."""

    run_id: str
    workflow_id: str
    status: str
    version: int
    trigger: str
    params: dict[str, str]
    redrives: int
    started_at: str
    finished_at: str | None
    tasks: dict[str, TaskDocument]
    compensations: list[CompensationDocument]
    reason: str | None
    marks: list[MarkDocument]


def run_document(
    run: RunRecord,
    tasks: dict[str, TaskRecord],
    task_order: list[str],
    compensations: list[CompensationRecord] | None = None,
) -> RunDocument:
    """The JSON document `stratoflow run --json` and `status --json` print (a user contract)."""
    out_tasks: dict[str, TaskDocument] = {}
    for tid in task_order:
        rec = tasks.get(tid) or TaskRecord(task_id=tid)
        status = rec.status
        # Anything not final when the run ended was never started because the run was
        # cancelled or failed around it; the contract only knows final states.
        if run.status in FINAL_RUN_STATUSES and status not in _PUBLIC_TASK_STATUSES:
            status = TaskStatus.CANCELLED
        out_tasks[tid] = {
            "status": status.value,
            "attempts": max(rec.attempt, len(rec.logs)),
            "exit_code": rec.exit_code,
            "timed_out": rec.timed_out,
            "started_at": rec.started_at if rec.attempt else None,
            "finished_at": rec.finished_at if rec.attempt else None,
            "output_tail": rec.output_tail,
        }
    return {
        "run_id": run.run_id,
        "workflow_id": run.workflow_id,
        "status": run.status.public,
        "version": run.version,
        "trigger": run.trigger,
        "params": dict(run.params),
        "redrives": run.drive,
        "started_at": run.started_at or run.created_at,
        "finished_at": run.finished_at,
        "tasks": out_tasks,
        "compensations": [
            {
                "task_id": c.task_id,
                "status": c.status,
                "exit_code": c.exit_code,
                "timed_out": c.timed_out,
                "started_at": c.started_at,
                "finished_at": c.finished_at,
                "output_tail": c.output_tail,
            }
            for c in (compensations or [])
        ],
        "reason": run.reason,
        "marks": [m.to_dict() for m in run.marks],
    }


_PUBLIC_TASK_STATUSES = frozenset(
    {
        TaskStatus.SUCCEEDED,
        TaskStatus.FAILED,
        TaskStatus.UPSTREAM_FAILED,
        TaskStatus.SKIPPED,
        TaskStatus.CANCELLED,
    }
)
