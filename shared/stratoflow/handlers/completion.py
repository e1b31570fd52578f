"""Completion Lambda: records finished attempts and moves their runs forward."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from stratoflow import bootstrap, services
from stratoflow.core.records import AttemptReport

logger = Logger(service="stratoflow")


def record_handler(record: SQSRecord) -> None:
    report = AttemptReport.from_json(record.body)
    logger.append_keys(run_id=report.run_id, task_id=report.task_id,
                       workflow_id=report.workflow_id)
    services.record_completion(bootstrap.default_ports(), report)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    processor = BatchProcessor(event_type=EventType.SQS)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
