"""The log page route: a window of an attempt's output, for following a log as it grows
(the web console asks for what came after the last page once a second) and for showing
the end of a long one without sending all of it."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from pydantic import BaseModel, Field

from stratoflow import services
from stratoflow.handlers.api import wiring
from stratoflow.handlers.api.schemas import RunId, TaskId

DEFAULT_PAGE = 256 * 1024
MAX_PAGE = 1024 * 1024

router = APIGatewayRouter()


class LogPage(BaseModel):
    run_id: str
    task_id: str
    attempt: int
    attempts: int
    status: str
    complete: bool = Field(description="false while the attempt is still running")
    found: bool
    size: int = Field(description="characters in the log so far")
    offset: int = Field(description="where `text` starts in the log")
    next_offset: int = Field(description="where `text` ends: the offset to ask for next")
    text: str


@router.get(
    "/runs/<run_id>/tasks/<task_id>/logs/page",
    tags=["runs"],
    summary="A window of an attempt's output (to follow it, or to read the end of a long one)",
)
def get_log_page(
    run_id: RunId,
    task_id: TaskId,
    attempt: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    offset: Annotated[
        int,
        Query(
            ge=-(2**53),
            le=2**53,
            description="the first character; negative: that many from the end",
        ),
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="characters at most")] = (
        DEFAULT_PAGE
    ),
    compensation: Annotated[
        bool, Query(description="the output of the task's compensation (a failed saga)")
    ] = False,
) -> LogPage:
    doc = services.task_logs(wiring.ports(), run_id, task_id, attempt, compensation)
    text = doc["text"]
    size = len(text)
    start = max(0, size + offset) if offset < 0 else min(offset, size)
    window = text[start : start + limit]
    return LogPage(
        run_id=doc["run_id"],
        task_id=doc["task_id"],
        attempt=doc["attempt"],
        attempts=doc["attempts"],
        status=doc["status"],
        complete=doc["complete"],
        found=doc["found"],
        size=size,
        offset=start,
        next_offset=start + len(window),
        text=window,
    )
