"""What every handler shares: its logger, its tracer, and the per-record context they carry."""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

logger = Logger(service="stratoflow")
tracer = Tracer(service="stratoflow")


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
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
