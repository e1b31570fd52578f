"""Between Python values and DynamoDB's attribute values, and items to records."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from stratoflow.core.records import MarkRecord, RunRecord, TaskRecord
from stratoflow.core.states import RunStatus, TaskStatus

from .keys import COUNTER_ATTRIBUTE

_SER = TypeSerializer()
_DE = TypeDeserializer()

_COUNTERS = tuple(COUNTER_ATTRIBUTE.values())


def _ser(value: Any) -> dict[str, Any]:
    if isinstance(value, float):
        value = Decimal(repr(value))
    return _SER.serialize(value)


def _item(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser(v) for k, v in data.items() if v is not None}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    out = {k: _DE.deserialize(v) for k, v in item.items()}
    return {k: _undecimal(v) for k, v in out.items()}


def _undecimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _undecimal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_undecimal(v) for v in value]
    return value


def _run_from(item: dict[str, Any]) -> RunRecord:
    d = _plain(item)
    return RunRecord(
        run_id=d["run_id"],
        workflow_id=d["workflow_id"],
        version=int(d["version"]),
        status=RunStatus(d["status"]),
        logical_date=d["logical_date"],
        created_at=d["created_at"],
        n_tasks=int(d["n_tasks"]),
        params=d.get("params") or {},
        concurrency=d.get("concurrency"),
        workdir=d.get("workdir"),
        trigger=d.get("trigger", "manual"),
        started_at=d.get("started_at"),
        finished_at=d.get("finished_at"),
        final_count=int(d.get("final_count", 0)),
        leaf_bad=int(d.get("leaf_bad", 0)),
        active=int(d.get("active", 0)),
        compensations=tuple(d.get("compensations") or ()),
        drive=int(d.get("drive", 0)),
        deadline=d.get("deadline"),
        reason=d.get("reason"),
        marks=tuple(MarkRecord.from_dict(m) for m in d.get("marks") or ()),
    )


def _task_from(task_id: str, item: dict[str, Any] | None) -> TaskRecord:
    if not item:
        return TaskRecord(task_id=task_id)
    d = _plain(item)
    return TaskRecord(
        task_id=task_id,
        status=TaskStatus(d.get("status", TaskStatus.PENDING)),
        attempt=int(d.get("attempt", 0)),
        exit_code=d.get("exit_code"),
        timed_out=bool(d.get("timed_out", False)),
        started_at=d.get("started_at"),
        finished_at=d.get("finished_at"),
        settled_at=d.get("settled_at"),
        output_tail=d.get("output_tail", ""),
        lease_until=d.get("lease_until"),
        log_ref=d.get("log_ref"),
        error=d.get("error"),
        counters={s: int(d[c]) for s, c in COUNTER_ATTRIBUTE.items() if d.get(c)},
        logs=tuple(d.get("logs") or ()),
        worker=d.get("worker"),
        drive=int(d.get("drive", 0)),
        propagated=bool(d.get("propagated", False)),
    )


def _set_fields(
    fields: dict[str, Any],
) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    """`#f_name = :f_name` clauses for the non-None fields (names escaped: `status` is reserved)."""
    sets: list[str] = []
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            continue
        sets.append(f"#f_{name} = :f_{name}")
        names[f"#f_{name}"] = name
        values[f":f_{name}"] = _ser(value)
    return sets, names, values
