"""The runs routes: trigger, list, describe, logs, cancel, retry, and one task's rerun and
mark."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from http import HTTPStatus
from typing import Annotated, Any
from urllib.parse import quote

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from stratoflow import services
from stratoflow.core import records
from stratoflow.core.model import check_run_params
from stratoflow.core.records import RunRecord
from stratoflow.core.states import TaskStatus
from stratoflow.handlers.api import wiring
from stratoflow.handlers.api.errors import ApiError, json_response
from stratoflow.handlers.api.schemas import (
    CancelResult,
    ErrorDocument,
    LogsDocument,
    MarkRequest,
    RerunRequest,
    RunDocument,
    RunId,
    RunPage,
    TaskId,
    TriggerRequest,
    WorkflowId,
)
from stratoflow.handlers.observability import logger

MAX_PAGE = 100

router = APIGatewayRouter()


def _run_summary(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "workflow_id": run.workflow_id,
        "version": run.version,
        "status": run.status.public,
        "trigger": run.trigger,
        "logical_date": run.logical_date,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "redrives": run.drive,
    }


def _run_document(run_id: str) -> records.RunDocument:
    doc = services.run_status(wiring.ports(), run_id)
    if doc is None:
        raise LookupError(f"no run {run_id!r}")
    return doc


@contextlib.contextmanager
def _bad_params() -> Iterator[None]:
    """A ValueError of the run params (size, case, with the workflow's defaults) is a 400;
    a reused idempotency key, though a ValueError too, stays a 409 (see errors)."""
    try:
        yield
    except services.IdempotencyConflict:
        raise
    except ValueError as err:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"params: {err}") from err


@router.post(
    "/workflows/<workflow_id>/runs",
    tags=["runs"],
    summary="Start a run now",
    description="Answers at once whatever the workflow's size: the run is recorded with "
    "status `queued` and its start (task records, root tasks enqueued) is handed to the "
    "engine (202, `Location` the run; `GET` it to follow: `queued`, then `running`). A "
    "queued run's document here lists no tasks yet. With an Idempotency-Key header, however "
    "often the request is sent, one run is created (202); repeats return it (200).",
    responses={
        202: {
            "description": "run recorded (status queued), its start handed off",
            "content": {"application/json": {"model": RunDocument}},
        },
        200: {
            "description": "the run this key started before",
            "content": {"application/json": {"model": RunDocument}},
        },
        404: {
            "description": "no such workflow",
            "content": {"application/json": {"model": ErrorDocument}},
        },
        409: {
            "description": "inactive workflow, or key reused",
            "content": {"application/json": {"model": ErrorDocument}},
        },
    },
)
def trigger(
    workflow_id: WorkflowId,
    request: Annotated[TriggerRequest | None, Body()] = None,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> Response[RunDocument]:
    params = request.params if request else {}
    with _bad_params():
        check_run_params(params)
    ports = wiring.ports()
    with _bad_params():
        run, created = services.trigger_run(ports, workflow_id, params, idempotency_key)
    logger.info("run triggered", extra={"run_id": run.run_id, "new_run": created})
    # A run whose start is pending has no tasks yet: its header alone, whatever its size.
    doc = (
        records.run_document(run, {}, [])
        if services.start_pending(run)
        else _run_document(run.run_id)
    )
    response = json_response(HTTPStatus.ACCEPTED if created else HTTPStatus.OK, doc)
    response.headers["Location"] = f"/runs/{quote(run.run_id, safe='@')}"
    return response


@router.get("/workflows/<workflow_id>/runs", tags=["runs"], summary="Runs, newest first")
def list_runs(
    workflow_id: WorkflowId,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    next_token: Annotated[str | None, Query(max_length=600)] = None,
) -> RunPage:
    ports = wiring.ports()
    if ports.definitions.get_meta(workflow_id) is None:
        raise LookupError(f"no registered workflow {workflow_id!r}")
    after = None
    if next_token:
        if not re.fullmatch(r"RUN#[^#]+#.+", next_token):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"next_token {next_token!r} is not one we gave")
        after = next_token
    runs, last = ports.runs.page_runs(workflow_id, limit, after)
    return RunPage.model_validate({"runs": [_run_summary(r) for r in runs], "next_token": last})


@router.get("/runs/<run_id>", tags=["runs"], summary="A run: status of every task")
def get_run(run_id: RunId) -> RunDocument:
    return RunDocument.model_validate(_run_document(run_id))


@router.get(
    "/runs/<run_id>/tasks/<task_id>/logs",
    tags=["runs"],
    summary="An attempt's full output",
)
def get_logs(
    run_id: RunId,
    task_id: TaskId,
    attempt: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    compensation: Annotated[
        bool, Query(description="the output of the task's compensation (a failed saga)")
    ] = False,
) -> LogsDocument:
    doc = services.task_logs(wiring.ports(), run_id, task_id, attempt, compensation)
    return LogsDocument.model_validate(doc)


@router.post(
    "/runs/<run_id>/cancel",
    tags=["runs"],
    summary="Cancel a run: nothing new starts, running attempts are stopped",
    description="Answers at once: the run turns cancelled (`changed`), and marking its "
    "unstarted tasks cancelled and stopping its workers is handed to the engine; running "
    "commands are stopped within about a second.",
    responses={
        409: {
            "description": "the run already ended otherwise",
            "content": {"application/json": {"model": ErrorDocument}},
        },
    },
)
def cancel(run_id: RunId) -> CancelResult:
    ports = wiring.ports()
    changed = services.cancel_run(ports, run_id)
    run = ports.runs.get_run(run_id)
    if run is None:
        raise LookupError(f"no run {run_id!r}")
    if not changed and run.status.public != "cancelled":
        raise ApiError(HTTPStatus.CONFLICT, f"run {run_id!r} already ended: it {run.status.public}")
    return CancelResult(run_id=run_id, status=run.status.public, changed=changed)


@router.post(
    "/runs/<run_id>/retry",
    tags=["runs"],
    summary="Redrive a finished run: rerun what did not succeed, keep what did",
    responses={
        409: {
            "description": "the run cannot be retried",
            "content": {"application/json": {"model": ErrorDocument}},
        },
    },
)
def retry(run_id: RunId) -> RunDocument:
    run = services.retry_run(wiring.ports(), run_id)
    return RunDocument.model_validate(_run_document(run.run_id))


_REDRIVE_CONFLICT: dict[int, OpenAPIResponse] = {
    409: {
        "description": "the run or task is not in a state this applies to",
        "content": {"application/json": {"model": ErrorDocument}},
    },
    404: {
        "description": "no such run, or no such task in its workflow",
        "content": {"application/json": {"model": ErrorDocument}},
    },
}


@router.post(
    "/runs/<run_id>/tasks/<task_id>/rerun",
    tags=["runs"],
    summary="Rerun one task of a finished run (and, with downstream, what depends on it)",
    description="Airflow's clear: the task (with `downstream`, every task depending on it, "
    "transitively) runs again in the run's next drive, the rest keep their outcome; the run "
    "goes back to running and ends as usual. Answers with the run's document.",
    responses=_REDRIVE_CONFLICT,
)
def rerun(
    run_id: RunId, task_id: TaskId, request: Annotated[RerunRequest | None, Body()] = None
) -> RunDocument:
    downstream = request.downstream if request else False
    run = services.rerun_task(wiring.ports(), run_id, task_id, downstream)
    logger.info("task rerun", extra={"run_id": run_id, "task_id": task_id})
    return RunDocument.model_validate(_run_document(run.run_id))


@router.post(
    "/runs/<run_id>/tasks/<task_id>/mark",
    tags=["runs"],
    summary="Set a task's outcome by hand (succeeded or failed)",
    description="Airflow's mark success/failed, recorded in the run's `marks` with the "
    "caller (its IAM ARN) and the reason. In a running run, a task not yet ended is settled "
    "so (a running attempt is stopped) and its dependents move on; in a finished run the "
    "task takes the outcome and what depended on its old one is decided again (a redrive). "
    "Answers with the run's document.",
    responses=_REDRIVE_CONFLICT,
)
def mark(run_id: RunId, task_id: TaskId, request: Annotated[MarkRequest, Body()]) -> RunDocument:
    run = services.mark_task(
        wiring.ports(),
        run_id,
        task_id,
        TaskStatus(request.state),
        by=_caller(),
        reason=request.reason,
    )
    logger.info("task marked", extra={"run_id": run_id, "task_id": task_id, "state": request.state})
    return RunDocument.model_validate(_run_document(run.run_id))


def _caller() -> str:
    """Who sent the request: the IAM ARN API Gateway's IAM auth puts in the request
    context; else (the local API, which answers its owner only, or the CLI's in-process
    API) the OS user this engine runs as."""
    identity = router.current_event.request_context.identity
    if identity.user_arn:
        return identity.user_arn
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        import os

        return f"uid {os.getuid()}"
