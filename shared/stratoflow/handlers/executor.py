"""Executor Lambda: runs one task attempt per SQS record and reports its outcome.

Each record's failure is its own (partial batch response), so a poison message is retried
alone and ends in the dead-letter queue after the queue's maxReceiveCount.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from stratoflow import bootstrap, services
from stratoflow.core.records import TaskMessage

logger = Logger(service="stratoflow")
tracer = Tracer(service="stratoflow")


def record_handler(record: SQSRecord) -> None:
    msg = TaskMessage.from_json(record.body)
    logger.thread_safe_append_keys(
        run_id=msg.run_id, task_id=msg.task_id, workflow_id=msg.workflow_id
    )
    _annotate(msg.run_id, msg.task_id, msg.workflow_id)
    result = services.execute_task(bootstrap.default_ports(), msg, bootstrap.default_runner())
    logger.info(
        "task message handled",
        extra={"outcome": result.outcome.value, "attempt": msg.attempt, "kind": msg.kind},
    )


def _annotate(run_id: str, task_id: str, workflow_id: str) -> None:
    # X-Ray annotations are indexed: one run can be followed across the dispatcher, the
    # executors and the completion handler by filtering on run_id.
    tracer.put_annotation(key="run_id", value=run_id)
    tracer.put_annotation(key="task_id", value=task_id)
    tracer.put_annotation(key="workflow_id", value=workflow_id)


@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # A processor per invocation: it holds per-batch state, and the local runtime calls
    # this handler from several threads at once.
    processor = BatchProcessor(event_type=EventType.SQS)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
