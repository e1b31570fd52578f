"""Rows of the embedded run store: the column lists of `runs` and `tasks`, their decoding
into `RunRecord`/`TaskRecord`, and the small predicates and keys the store's methods share
(`stratoflow.embedded.attempts`, `stratoflow.embedded.runs`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from stratoflow.core.model import MAX_PRIORITY
from stratoflow.core.records import MarkRecord, RunRecord, TaskRecord
from stratoflow.core.states import RunStatus, TaskStatus
from stratoflow.embedded.db import COUNTER_COLUMN

_COUNTERS = tuple(COUNTER_COLUMN.values())
_TASK_COLUMNS = (
    "task_id, status, attempt, drive, exit_code, timed_out, started_at, finished_at, "
    "settled_at, output_tail, lease_until, log_ref, error, logs, worker, propagated, "
    + ", ".join(_COUNTERS)
)
_RUN_COLUMNS = (
    "run_id, workflow_id, created_at, status, drive, final_count, leaf_bad, active, "
    "finished_at, compensations, doc"
)
_CLAIMABLE = frozenset(
    {TaskStatus.QUEUED, TaskStatus.WAITING, TaskStatus.PENDING, TaskStatus.UP_FOR_RETRY}
)
_UNSTARTED = _CLAIMABLE
_SETTLED_BY_DECISION = frozenset(
    {TaskStatus.SKIPPED, TaskStatus.UPSTREAM_FAILED, TaskStatus.CANCELLED}
)
# Attempt fields a settlement or retry may carry (`services.settlement._attempt_fields`).
_ATTEMPT_FIELDS = (
    "settled_at",
    "exit_code",
    "timed_out",
    "started_at",
    "finished_at",
    "output_tail",
    "log_ref",
    "error",
)


def _task_from(row: Sequence[Any] | None, task_id: str) -> TaskRecord:
    if row is None:
        return TaskRecord(task_id=task_id)
    counters = {s: row[16 + i] for i, s in enumerate(COUNTER_COLUMN) if row[16 + i]}
    return TaskRecord(
        task_id=row[0],
        status=TaskStatus(row[1]) if row[1] else TaskStatus.PENDING,
        attempt=row[2] or 0,
        drive=row[3] or 0,
        exit_code=row[4],
        timed_out=bool(row[5]),
        started_at=row[6],
        finished_at=row[7],
        settled_at=row[8],
        output_tail=row[9] or "",
        lease_until=row[10],
        log_ref=row[11],
        error=row[12],
        logs=tuple(json.loads(row[13])) if row[13] else (),
        worker=row[14],
        propagated=bool(row[15]),
        counters=counters,
    )


def _run_from(row: Sequence[Any]) -> RunRecord:
    doc = json.loads(row[10])
    return RunRecord(
        run_id=row[0],
        workflow_id=row[1],
        created_at=row[2],
        status=RunStatus(row[3]),
        drive=row[4],
        final_count=row[5],
        leaf_bad=row[6],
        active=row[7],
        finished_at=row[8],
        compensations=tuple(json.loads(row[9])) if row[9] else (),
        version=doc["version"],
        logical_date=doc["logical_date"],
        n_tasks=doc["n_tasks"],
        params=doc.get("params") or {},
        concurrency=doc.get("concurrency"),
        workdir=doc.get("workdir"),
        trigger=doc.get("trigger", "manual"),
        started_at=doc.get("started_at"),
        deadline=doc.get("deadline"),
        reason=doc.get("reason"),
        marks=tuple(MarkRecord.from_dict(m) for m in doc.get("marks") or ()),
    )


def _same_drive(row: Sequence[Any] | None, drive: int) -> bool:
    """The task's stored drive is this one (or none was ever written: any drive matches)."""
    return row is None or row[3] is None or row[3] == drive


def _runs_attempt(row: Sequence[Any] | None, rec: TaskRecord, attempt: int, drive: int) -> bool:
    """Whether the task runs exactly this attempt of this drive."""
    return rec.status is TaskStatus.RUNNING and rec.attempt == attempt and _same_drive(row, drive)


def _waiting_key(priority: int, now: str, task_id: str) -> str:
    # Sorts ascending by (−priority, arrival): highest priority first, then first come.
    return f"{MAX_PRIORITY * 2 - (priority + MAX_PRIORITY):07d}#{now}#{task_id}"


def _attempt_values(fields: dict[str, Any]) -> dict[str, Any]:
    """The attempt fields given (None means "leave as it is", as DynamoDB's SET of
    present values does)."""
    return {k: fields[k] for k in _ATTEMPT_FIELDS if fields.get(k) is not None}
