"""What every handler shares: its logger, its tracer, and the per-record context they carry."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Callable, Generator
from contextlib import asynccontextmanager, contextmanager
from typing import IO, Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord


class _NoSegment(BaseSegment):
    """Records nothing."""

    def close(self, end_time: int | None = None) -> None: ...

    def add_subsegment(self, subsegment: Any) -> None: ...

    def remove_subsegment(self, subsegment: Any) -> None: ...

    def put_annotation(self, key: str, value: Any) -> None: ...

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None: ...

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        return None


class _NoTracing(BaseProvider):
    """The tracer's provider where no X-Ray daemon listens (anywhere but Lambda), where
    Powertools disables tracing anyway: it spares loading the X-Ray SDK, which builds a
    botocore client, a seventh of every local command's start-up."""

    @contextmanager
    def in_subsegment(self, name: Any = None, **kwargs: Any) -> Generator[BaseSegment, None, None]:
        yield _NoSegment()

    @asynccontextmanager
    async def in_subsegment_async(
        self, name: Any = None, **kwargs: Any
    ) -> AsyncGenerator[BaseSegment, None]:
        yield _NoSegment()

    def put_annotation(self, key: str, value: Any) -> None: ...

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None: ...

    def patch(self, modules: Any) -> None: ...

    def patch_all(self) -> None: ...


def _in_lambda() -> bool:
    # Powertools' own test for "an X-Ray daemon may listen" (Tracer._is_tracer_disabled).
    return bool(os.getenv("LAMBDA_TASK_ROOT")) and not (
        os.getenv("AWS_SAM_LOCAL") or os.getenv("AWS_CHALICE_CLI_MODE")
    )


logger = Logger(service="stratoflow")
tracer = (
    Tracer(service="stratoflow")
    if _in_lambda()
    else Tracer(service="stratoflow", disabled=True, provider=_NoTracing())
)


def send_logs_to(stream: IO[str]) -> None:
    """Where the handlers' JSON log lines go: stdout is CloudWatch on AWS, but locally it
    is the CLI's own output, so the local runtime and the CLI point them at a file."""
    import logging

    for handler in logging.getLogger("stratoflow").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)


def bind_task(run_id: str, task_id: str, workflow_id: str) -> None:
    """Tag the logs and the X-Ray trace of the record being handled with its task."""
    # thread-safe keys: the local runtime runs handlers in several threads at once
    logger.thread_safe_append_keys(run_id=run_id, task_id=task_id, workflow_id=workflow_id)
    # X-Ray annotations are indexed: one run can be followed across the dispatcher, the
    # executors and the completion handler by filtering on run_id.
    tracer.put_annotation(key="run_id", value=run_id)
    tracer.put_annotation(key="task_id", value=task_id)
    tracer.put_annotation(key="workflow_id", value=workflow_id)


def process_sqs_batch(
    event: dict[str, Any], context: Any, record_handler: Callable[[SQSRecord], None]
) -> dict[str, Any]:
    """Handle each record alone and report the failed ones (ReportBatchItemFailures)."""
    # A processor per invocation: it holds per-batch state, and the local runtime calls
    # the handlers from several threads at once.
    processor = BatchProcessor(event_type=EventType.SQS)
    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )
