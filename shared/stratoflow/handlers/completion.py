"""Completion Lambda: records finished attempts and moves their runs forward."""

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
from stratoflow.core.records import AttemptReport

logger = Logger(service="stratoflow")
tracer = Tracer(service="stratoflow")


def record_handler(record: SQSRecord) -> None:
    report = AttemptReport.from_json(record.body)
    logger.thread_safe_append_keys(
        run_id=report.run_id, task_id=report.task_id, workflow_id=report.workflow_id
    )
    _annotate(report.run_id, report.task_id, report.workflow_id)
    services.record_completion(bootstrap.default_ports(), report)


def _annotate(run_id: str, task_id: str, workflow_id: str) -> None:
    # X-Ray annotations are indexed: one run can be followed across the dispatcher, the
    # executors and the completion handler by filtering on run_id.
    tracer.put_annotation(key="run_id", value=run_id)
    tracer.put_annotation(key="task_id", value=task_id)
    tracer.put_annotation(key="workflow_id", value=workflow_id)


@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    processor = BatchProcessor(event_type=EventType.SQS)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
