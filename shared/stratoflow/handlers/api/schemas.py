"""The API's documents: the pydantic models of its responses and request bodies (they
become the OpenAPI document's schemas), and the path parameters' constraints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler.openapi.params import Path
from pydantic import BaseModel, ConfigDict, Field

from stratoflow.core.model import ID_PATTERN

RunId = Annotated[str, Path(min_length=1, max_length=300, description="a run id")]
WorkflowId = Annotated[
    str, Path(pattern=ID_PATTERN, description="a workflow id (the file's `id` field)")
]
TaskId = Annotated[str, Path(pattern=ID_PATTERN, description="a task id of the run's workflow")]


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


class MarkState(BaseModel):
    task_id: str
    status: str = Field(description="the outcome set: succeeded or failed")
    by: str = Field(description="who set it: the caller's IAM ARN, or locally the OS user")
    at: str
    reason: str


class RunDocument(BaseModel):
    """The same document as `stratoflow run --json` and `stratoflow status --json`."""

    run_id: str
    workflow_id: str
    status: str = Field(
        description="queued (recorded, its start pending), running, succeeded, failed or cancelled"
    )
    version: int
    trigger: str
    params: dict[str, str]
    redrives: int = Field(description="times the run was retried (redriven) after it ended")
    started_at: str | None
    finished_at: str | None
    tasks: dict[str, TaskState]
    compensations: list[CompensationState]
    reason: str | None = Field(
        description="why the engine ended the run, when it did (a timeout: "
        '"run timed out after 2s"); null otherwise'
    )
    marks: list[MarkState] = Field(
        description="task outcomes set by hand (`stratoflow mark`), oldest first"
    )


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


class MarkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal["succeeded", "failed"] = Field(description="the task's outcome")
    reason: str = Field(
        default="", max_length=1000, description="why, kept with the run (who: the caller)"
    )


class RerunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    downstream: bool = Field(
        default=False, description="rerun every task that depends on it too, transitively"
    )
