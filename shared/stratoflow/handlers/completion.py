"""Completion Lambda: records finished attempts and moves their runs forward."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from stratoflow import bootstrap, services
from stratoflow.core.records import AttemptReport
from stratoflow.handlers.observability import bind_task, process_sqs_batch, tracer


def record_handler(record: SQSRecord) -> None:
    report = AttemptReport.from_json(record.body)
    bind_task(report.run_id, report.task_id, report.workflow_id)
    services.record_completion(bootstrap.default_ports(), report)


@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_sqs_batch(event, context, record_handler)
