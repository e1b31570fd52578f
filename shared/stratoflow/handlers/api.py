"""REST API Lambda: operate workflows and runs (API Gateway REST API, proxy integration).

Routes are Powertools' REST resolver with request validation; the OpenAPI document is
generated from them (`stratoflow.handlers.api.openapi_document`, kept in docs/openapi.json).
Every error is JSON `{"message": ...}` naming what was wrong: 4xx for the caller's
mistakes, never a 5xx for bad input. `stratoflow local up` serves this same handler over
HTTP (stratoflow.local.http), and the CLI talks to either.
"""

from __future__ import annotations

import functools
import json
import re
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from stratoflow import bootstrap, services
from stratoflow.config import WORKFLOWS_PREFIX
from stratoflow.core.loader import WorkflowFileError, load_workflow_text
from stratoflow.core.model import ID_PATTERN, check_run_params
from stratoflow.core.records import RunRecord, WorkflowMeta
from stratoflow.handlers.observability import logger, tracer
from stratoflow.ports import RunNotRetryable

API_TITLE = "stratoflow"
API_VERSION = "1.0.0"
MAX_PAGE = 100
FILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.(json|yaml|yml)$"
MAX_UPLOAD_BYTES = 5 * 1024 * 1024

app = APIGatewayRestResolver(enable_validation=True)

RunId = Annotated[str, Path(min_length=1, max_length=300, description="a run id")]
WorkflowId = Annotated[
    str, Path(pattern=ID_PATTERN, description="a workflow id (the file's `id` field)")
]
TaskId = Annotated[str, Path(pattern=ID_PATTERN, description="a task id of the run's workflow")]


# --------------------------------------------------------------------------- documents


class ErrorDocument(BaseModel):
    message: str = Field(description="what was wrong, in one paragraph")


class TaskState(BaseModel):
    status: str
    attempts: int
    exit_code: int | None
    timed_out: bool
    started_at: str | None
    finished_at: str | None
    output_tail: str


class CompensationState(BaseModel):
    task_id: str
    status: str
    exit_code: int | None
    timed_out: bool
    started_at: str | None
    finished_at: str | None
    output_tail: str


class RunDocument(BaseModel):
    """The same document as `stratoflow run --json` and `stratoflow status --json`."""

    run_id: str
    workflow_id: str
    status: str = Field(description="running, succeeded, failed or cancelled")
    version: int
    trigger: str
    params: dict[str, str]
    redrives: int = Field(description="times the run was retried (redriven) after it ended")
    started_at: str | None
    finished_at: str | None
    tasks: dict[str, TaskState]
    compensations: list[CompensationState]


class RunSummary(BaseModel):
    run_id: str
    workflow_id: str
    version: int
    status: str
    trigger: str
    logical_date: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    redrives: int


class RunPage(BaseModel):
    runs: list[RunSummary]
    next_token: str | None = Field(description="pass as next_token for the next page")


class WorkflowSummary(BaseModel):
    workflow_id: str
    active_version: int | None
    latest_version: int
    paused: bool
    schedule: str | None
    timezone: str
    next_run: str | None
    active_runs: int
    last_run: str | None = Field(description="the newest run's id")
    last_status: str | None = Field(description="the newest run's status")


class LoadError(BaseModel):
    source: str
    message: str
    at: str


class WorkflowList(BaseModel):
    workflows: list[WorkflowSummary]
    load_errors: list[LoadError]


class VersionInfo(BaseModel):
    version: int
    created_at: str | None
    source: str | None
    hash: str | None


class WorkflowDetail(WorkflowSummary):
    definition: dict[str, Any] | None = Field(description="the active version's definition")
    versions: list[VersionInfo]


class UploadResult(BaseModel):
    workflow_id: str
    version: int | None
    key: str


class PauseResult(BaseModel):
    workflow_id: str
    paused: bool


class CancelResult(BaseModel):
    run_id: str
    status: str
    changed: bool = Field(description="false when the run had already ended")


class LogsDocument(BaseModel):
    run_id: str
    task_id: str
    attempt: int
    attempts: int
    status: str
    complete: bool = Field(description="false while the attempt is still running")
    found: bool
    text: str


class TriggerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, str] = Field(
        default_factory=dict, description="run params, over the workflow's defaults"
    )


# --------------------------------------------------------------------------- helpers


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(status: HTTPStatus, body: Any) -> Response[Any]:
    return Response(
        status_code=int(status),
        content_type=content_types.APPLICATION_JSON,
        body=body,
    )


def _not_found(message: str) -> ApiError:
    return ApiError(HTTPStatus.NOT_FOUND, message)


def _summary(meta: WorkflowMeta, ports: services.Ports) -> dict[str, Any]:
    # The newest run, looked up here: the CLI's listing would otherwise make one signed
    # request per workflow.
    last = ports.runs.list_runs(meta.workflow_id, 1)
    return {
        "last_run": last[0].run_id if last else None,
        "last_status": last[0].status.public if last else None,
        "workflow_id": meta.workflow_id,
        "active_version": meta.active_version,
        "latest_version": meta.latest_version,
        "paused": meta.paused,
        "schedule": meta.schedule,
        "timezone": meta.timezone,
        "next_run": meta.next_slot if not meta.paused and meta.active_version else None,
        "active_runs": max(meta.active_runs, 0),
    }


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


def _run_document(run_id: str) -> dict[str, Any]:
    doc = services.run_status(bootstrap.default_ports(), run_id)
    if doc is None:
        raise _not_found(f"no run {run_id!r}")
    return doc


# --------------------------------------------------------------------------- errors


@app.exception_handler(ApiError)
def _api_error(err: ApiError) -> Response[Any]:
    return _json(err.status, {"message": err.message})


@app.exception_handler(RequestValidationError)
def _invalid_request(err: RequestValidationError) -> Response[Any]:
    problems = []
    for e in err.errors():
        if e.get("type") == "json_invalid":
            problems.append("body: not valid JSON")
            continue
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body" or len(e["loc"]) == 1)
        problems.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
    return _json(HTTPStatus.BAD_REQUEST, {"message": "invalid request: " + "; ".join(problems)})


# --------------------------------------------------------------------------- workflows


@app.get("/workflows", tags=["workflows"], summary="Registered workflows")
def list_workflows() -> WorkflowList:
    ports = bootstrap.default_ports()
    metas = sorted(ports.definitions.list_workflows(), key=lambda m: m.workflow_id)
    return WorkflowList.model_validate(
        {
            "workflows": [_summary(m, ports) for m in metas],
            "load_errors": ports.definitions.source_errors(),
        }
    )


@app.post(
    "/workflows",
    tags=["workflows"],
    summary="Upload a workflow file (validated, registered, stored under workflows/)",
    responses={
        201: {
            "description": "registered",
            "content": {"application/json": {"model": UploadResult}},
        },
        400: {
            "description": "invalid file",
            "content": {"application/json": {"model": ErrorDocument}},
        },
    },
)
def upload_workflow(
    name: Annotated[str, Query(pattern=FILE_NAME_PATTERN, description="file name, e.g. etl.yaml")],
) -> Response[UploadResult]:
    raw = app.current_event.body or ""
    if app.current_event.is_base64_encoded:
        raise ApiError(HTTPStatus.BAD_REQUEST, "send the workflow file as text, not base64")
    data = raw.encode()
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{name} is over 5 MiB")
    try:
        workflow = load_workflow_text(raw, name)
    except WorkflowFileError as err:
        raise ApiError(HTTPStatus.BAD_REQUEST, err.message) from err
    key = WORKFLOWS_PREFIX + name
    source = bootstrap.default_uploader()(key, data)
    # Registered now, so that a trigger right after the upload runs this version; the
    # upload's own notification later finds the same content and changes nothing.
    meta = services.register_source(bootstrap.default_ports(), workflow, source)
    return _json(
        HTTPStatus.CREATED,
        {"workflow_id": workflow.id, "version": meta.active_version, "key": key},
    )


@app.get("/workflows/<workflow_id>", tags=["workflows"], summary="A workflow and its versions")
def get_workflow(workflow_id: WorkflowId) -> WorkflowDetail:
    ports = bootstrap.default_ports()
    meta = ports.definitions.get_meta(workflow_id)
    if meta is None:
        raise _not_found(f"no registered workflow {workflow_id!r}")
    definition = None
    if meta.active_version:
        plan = ports.definitions.get_plan(workflow_id, meta.active_version)
        definition = plan.workflow.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return WorkflowDetail.model_validate(
        {
            **_summary(meta, ports),
            "definition": definition,
            "versions": [
                {
                    "version": int(v["version"]),
                    "created_at": v.get("created_at"),
                    "source": v.get("source"),
                    "hash": v.get("hash"),
                }
                for v in ports.definitions.list_versions(workflow_id)
            ],
        }
    )


def _pause(workflow_id: str, paused: bool) -> PauseResult:
    if not bootstrap.default_ports().definitions.set_paused(workflow_id, paused):
        raise _not_found(f"no registered workflow {workflow_id!r}")
    return PauseResult(workflow_id=workflow_id, paused=paused)


@app.post("/workflows/<workflow_id>/pause", tags=["workflows"], summary="Pause the schedule")
def pause(workflow_id: WorkflowId) -> PauseResult:
    return _pause(workflow_id, True)


@app.post("/workflows/<workflow_id>/unpause", tags=["workflows"], summary="Resume the schedule")
def unpause(workflow_id: WorkflowId) -> PauseResult:
    return _pause(workflow_id, False)


# --------------------------------------------------------------------------- runs


@app.post(
    "/workflows/<workflow_id>/runs",
    tags=["runs"],
    summary="Start a run now",
    description="With an Idempotency-Key header, however often the request is sent, one "
    "run is created (201); repeats return it (200).",
    responses={
        201: {
            "description": "run started",
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
    try:
        check_run_params(params)
    except ValueError as err:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"params: {err}") from err
    ports = bootstrap.default_ports()
    try:
        run, created = services.trigger_run(ports, workflow_id, params, idempotency_key)
    except services.WorkflowInactive as err:
        raise ApiError(HTTPStatus.CONFLICT, str(err)) from err
    except services.IdempotencyConflict as err:
        raise ApiError(HTTPStatus.CONFLICT, str(err)) from err
    except ValueError as err:  # the params with the workflow's defaults (size, case)
        raise ApiError(HTTPStatus.BAD_REQUEST, f"params: {err}") from err
    except LookupError as err:
        raise _not_found(str(err)) from err
    logger.info("run triggered", extra={"run_id": run.run_id, "new_run": created})
    return _json(HTTPStatus.CREATED if created else HTTPStatus.OK, _run_document(run.run_id))


@app.get("/workflows/<workflow_id>/runs", tags=["runs"], summary="Runs, newest first")
def list_runs(
    workflow_id: WorkflowId,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    next_token: Annotated[str | None, Query(max_length=600)] = None,
) -> RunPage:
    ports = bootstrap.default_ports()
    if ports.definitions.get_meta(workflow_id) is None:
        raise _not_found(f"no registered workflow {workflow_id!r}")
    after = None
    if next_token:
        if not re.fullmatch(r"RUN#[^#]+#.+", next_token):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"next_token {next_token!r} is not one we gave")
        after = next_token
    runs, last = ports.runs.page_runs(workflow_id, limit, after)
    return RunPage.model_validate({"runs": [_run_summary(r) for r in runs], "next_token": last})


@app.get("/runs/<run_id>", tags=["runs"], summary="A run: status of every task")
def get_run(run_id: RunId) -> RunDocument:
    return RunDocument.model_validate(_run_document(run_id))


@app.get(
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
    try:
        doc = services.task_logs(bootstrap.default_ports(), run_id, task_id, attempt, compensation)
    except LookupError as err:
        raise _not_found(str(err)) from err
    return LogsDocument.model_validate(doc)


@app.post(
    "/runs/<run_id>/cancel",
    tags=["runs"],
    summary="Cancel a run: nothing new starts, running attempts are stopped",
    responses={
        409: {
            "description": "the run already ended otherwise",
            "content": {"application/json": {"model": ErrorDocument}},
        },
    },
)
def cancel(run_id: RunId) -> CancelResult:
    ports = bootstrap.default_ports()
    changed = services.cancel_run(ports, run_id)
    run = ports.runs.get_run(run_id)
    if run is None:
        raise _not_found(f"no run {run_id!r}")
    if not changed and run.status.public != "cancelled":
        raise ApiError(HTTPStatus.CONFLICT, f"run {run_id!r} already ended: it {run.status.public}")
    return CancelResult(run_id=run_id, status=run.status.public, changed=changed)


@app.post(
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
    try:
        run = services.retry_run(bootstrap.default_ports(), run_id)
    except RunNotRetryable as err:
        raise ApiError(HTTPStatus.CONFLICT, str(err)) from err
    except LookupError as err:
        raise _not_found(str(err)) from err
    return RunDocument.model_validate(_run_document(run.run_id))


@app.exception_handler(Exception)
def _unexpected(err: Exception) -> Response[Any]:
    # The details stay in the function's log; the caller gets the id to find them by.
    logger.exception("unexpected error")
    request_id = app.current_event.request_context.request_id or "unknown"
    return _json(
        HTTPStatus.INTERNAL_SERVER_ERROR,
        {"message": f"internal error (request {request_id}); see the api function's log"},
    )


@app.not_found
def _no_route(_: Exception) -> Response[Any]:
    ev = app.current_event
    allowed = sorted(
        method.upper()
        for pattern, methods in _route_patterns()
        if pattern.fullmatch(ev.path)
        for method in methods
    )
    if allowed:
        return Response(
            status_code=int(HTTPStatus.METHOD_NOT_ALLOWED),
            content_type=content_types.APPLICATION_JSON,
            body={"message": f"{ev.path} takes {', '.join(allowed)}, not {ev.http_method}"},
            headers={"Allow": ", ".join(allowed)},
        )
    return _json(HTTPStatus.NOT_FOUND, {"message": f"no route {ev.http_method} {ev.path}"})


@functools.cache
def _route_patterns() -> list[tuple[re.Pattern[str], list[str]]]:
    return [
        (re.compile(re.sub(r"\{[^}]+\}", "[^/]+", path)), list(methods))
        for path, methods in openapi_document()["paths"].items()
    ]


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of this API, as kept in docs/openapi.json."""
    text = app.get_openapi_json_schema(
        title=API_TITLE,
        version=API_VERSION,
        description="Operate stratoflow workflows and runs. Requests to a deployed stack "
        "are signed with AWS SigV4 (IAM auth); the local server takes them unsigned.",
    )
    doc: dict[str, Any] = json.loads(text)
    error = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDocument"}}}
    }
    # Our validation errors are 400s with an ErrorDocument (see _invalid_request), not
    # Powertools' 422; every operation may also answer 404 for an unknown id or route.
    for operations in doc["paths"].values():
        for operation in operations.values():
            responses = operation["responses"]
            responses.pop("422", None)
            responses.setdefault("400", {"description": "invalid request", **error})
            responses.setdefault("404", {"description": "not found", **error})
            if "requestBody" in operation:
                responses.setdefault("415", {"description": "not JSON", **error})
    # The upload's body is the workflow file itself, read raw by the route.
    doc["paths"]["/workflows"]["post"]["requestBody"] = {
        "required": True,
        "description": "the workflow file (YAML or JSON text)",
        "content": {
            media: {"schema": {"type": "string", "maxLength": MAX_UPLOAD_BYTES}}
            for media in ("application/yaml", "text/plain")
        },
    }
    schemas = doc.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    doc["components"]["securitySchemes"] = {
        "sigv4": {
            "type": "apiKey",
            "name": "Authorization",
            "in": "header",
            "x-amazon-apigateway-authtype": "awsSigv4",
            "description": "AWS SigV4 (IAM). Not needed on the local server.",
        }
    }
    doc["security"] = [{"sigv4": []}]
    return doc


def _media_type_problem(event: dict[str, Any]) -> dict[str, Any] | None:
    """415 for a JSON route's body sent as something else (a form, multipart…), decided
    before the resolver sees it: Powertools parses forms and multipart bodies itself, and a
    malformed one fails there as a 500. The upload route takes its file as any text."""
    if event.get("httpMethod") not in ("POST", "PUT", "PATCH") or not event.get("body"):
        return None
    if event.get("path") == "/workflows":
        return None
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    kind = str(headers.get("content-type") or "").strip()
    if not kind or kind.split(";")[0].strip().lower() == "application/json":
        return None
    return {
        "statusCode": int(HTTPStatus.UNSUPPORTED_MEDIA_TYPE),
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(
            {"message": f"Content-Type {kind!r} is not accepted here: send application/json"}
        ),
        "isBase64Encoded": False,
    }


@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _media_type_problem(event) or app.resolve(event, context)
