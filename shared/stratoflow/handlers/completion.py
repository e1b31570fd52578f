"""Completion Lambda: records finished attempts and moves their runs forward; also does the
work a request handed off on a whole run (a queued run's start, a cancelled run's tasks)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from stratoflow import bootstrap, services
from stratoflow.core.records import AttemptReport
from stratoflow.handlers.observability import bind_task, logger, process_sqs_batch, tracer
from stratoflow.ports import RunCommand


def record_handler(record: SQSRecord, wiring: bootstrap.Wiring) -> None:
    command = RunCommand.from_body(record.body)
    if command is not None:
        tracer.put_annotation(key="run_id", value=command.run_id)
        logger.info("run command", extra={"run_id": command.run_id, "command": command.command})
        services.perform(wiring.ports, command)
        return
    report = AttemptReport.from_json(record.body)
    bind_task(report.run_id, report.task_id, report.workflow_id)
    services.record_completion(wiring.ports, report)


def handle(event: dict[str, Any], context: Any, wiring: bootstrap.Wiring) -> dict[str, Any]:
    return process_sqs_batch(event, context, lambda record: record_handler(record, wiring))


@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context, bootstrap.environment())
