"""The workflows routes: list, upload, describe, pause and unpause."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from stratoflow import services
from stratoflow.config import WORKFLOWS_PREFIX
from stratoflow.core.loader import WorkflowFileError, load_workflow_text
from stratoflow.core.records import WorkflowMeta
from stratoflow.handlers.api import wiring
from stratoflow.handlers.api.errors import ApiError, json_response
from stratoflow.handlers.api.openapi import MAX_UPLOAD_BYTES
from stratoflow.handlers.api.schemas import (
    ErrorDocument,
    PauseResult,
    UploadResult,
    WorkflowDetail,
    WorkflowId,
    WorkflowList,
)

FILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.(json|yaml|yml)$"

router = APIGatewayRouter()


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


@router.get("/workflows", tags=["workflows"], summary="Registered workflows")
def list_workflows() -> WorkflowList:
    ports = wiring.ports()
    metas = sorted(ports.definitions.list_workflows(), key=lambda m: m.workflow_id)
    return WorkflowList.model_validate(
        {
            "workflows": [_summary(m, ports) for m in metas],
            "load_errors": ports.definitions.source_errors(),
        }
    )


@router.post(
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
    raw = router.current_event.body or ""
    if router.current_event.is_base64_encoded:
        raise ApiError(HTTPStatus.BAD_REQUEST, "send the workflow file as text, not base64")
    data = raw.encode()
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{name} is over 5 MiB")
    try:
        workflow = load_workflow_text(raw, name)
    except WorkflowFileError as err:
        raise ApiError(HTTPStatus.BAD_REQUEST, err.message) from err
    key = WORKFLOWS_PREFIX + name
    source = wiring.current().upload(key, data)
    # Registered now, so that a trigger right after the upload runs this version; the
    # upload's own notification later finds the same content and changes nothing.
    meta = services.register_source(wiring.ports(), workflow, source)
    return json_response(
        HTTPStatus.CREATED,
        {"workflow_id": workflow.id, "version": meta.active_version, "key": key},
    )


@router.get("/workflows/<workflow_id>", tags=["workflows"], summary="A workflow and its versions")
def get_workflow(workflow_id: WorkflowId) -> WorkflowDetail:
    ports = wiring.ports()
    meta = ports.definitions.get_meta(workflow_id)
    if meta is None:
        raise LookupError(f"no registered workflow {workflow_id!r}")
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
    if not wiring.ports().definitions.set_paused(workflow_id, paused):
        raise LookupError(f"no registered workflow {workflow_id!r}")
    return PauseResult(workflow_id=workflow_id, paused=paused)


@router.post("/workflows/<workflow_id>/pause", tags=["workflows"], summary="Pause the schedule")
def pause(workflow_id: WorkflowId) -> PauseResult:
    return _pause(workflow_id, True)


@router.post("/workflows/<workflow_id>/unpause", tags=["workflows"], summary="Resume the schedule")
def unpause(workflow_id: WorkflowId) -> PauseResult:
    return _pause(workflow_id, False)
