"""Read-only use cases: a run's document (`run_status`) and an attempt's logs (`task_logs`)."""

from __future__ import annotations

from typing import TypedDict

from stratoflow.core.records import RunDocument, RunRecord
from stratoflow.core.states import TaskStatus
from stratoflow.ports import LogText

from .bundle import Ports


class LogsDocument(TypedDict):
    """An attempt's output as `GET /runs/{id}/tasks/{task}/logs` and `stratoflow logs`
    give it."""

    run_id: str
    task_id: str
    attempt: int
    attempts: int
    status: str
    complete: bool
    """False while the attempt still runs: more output may come."""
    found: bool
    """False when the full log is gone (or was never written): `text` is the stored tail."""
    text: str


def run_status(ports: Ports, run_id: str) -> RunDocument | None:
    """The run document (`stratoflow status --json`), or None if there is no such run."""
    from stratoflow.core.records import run_document

    run = ports.runs.get_run(run_id)
    if run is None:
        return None
    plan = ports.definitions.get_plan(run.workflow_id, run.version)
    tasks = ports.runs.list_tasks(run_id)
    comps = ports.runs.list_compensations(run_id) if run.compensations else []
    doc = run_document(run, tasks, list(plan.tasks), comps)
    doc["params"] = shown_params(doc["params"], plan.workflow.secret_params)
    return doc


SECRET_SHOWN_AS = "***"


def shown_params(params: dict[str, str], secret: list[str]) -> dict[str, str]:
    """Params as every answer after the trigger shows them: `secret: true` ones as ***
    (their value is still what the commands get)."""
    return {name: SECRET_SHOWN_AS if name in secret else value for name, value in params.items()}


def _compensation_logs(ports: Ports, run: RunRecord, task_id: str) -> LogsDocument:
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


def task_logs(
    ports: Ports,
    run_id: str,
    task_id: str,
    attempt: int | None = None,
    compensation: bool = False,
) -> LogsDocument:
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
