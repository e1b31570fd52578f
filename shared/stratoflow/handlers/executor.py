"""Executor Lambda: runs one task attempt per SQS record and reports its outcome.

Each record's failure is its own (partial batch response), so a poison message is retried
alone and ends in the dead-letter queue after the queue's maxReceiveCount.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from stratoflow import bootstrap, services
from stratoflow.core.records import TaskMessage
from stratoflow.handlers.observability import bind_task, logger, process_sqs_batch, tracer


def record_handler(record: SQSRecord, wiring: bootstrap.Wiring) -> None:
    msg = TaskMessage.from_json(record.body)
    bind_task(msg.run_id, msg.task_id, msg.workflow_id)
    result = services.execute_task(wiring.ports, msg, wiring.runner)
    logger.info(
        "task message handled",
        extra={"outcome": result.outcome.value, "attempt": msg.attempt, "kind": msg.kind},
    )


def handle(event: dict[str, Any], context: Any, wiring: bootstrap.Wiring) -> dict[str, Any]:
    return process_sqs_batch(event, context, lambda record: record_handler(record, wiring))


@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context, bootstrap.environment())
