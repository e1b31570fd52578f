"""Dispatcher Lambda: creates runs and enqueues their ready tasks.

Events (EventBridge shape): `Scheduled Event` (the every-minute rule) starts the due slots
of scheduled workflows, reports attempts whose lease ended, hands off again the starts
of triggered runs still queued after START_REHAND_SECONDS (their message was lost), and
hands off the runs past their `timeout`;
`Run Requested` (the local runtime's `stratoflow run`) starts one run of a registered
workflow version in one go.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent

from stratoflow import bootstrap, services
from stratoflow.handlers.observability import logger, tracer

RUN_REQUESTED = "Run Requested"
SCHEDULED_EVENT = "Scheduled Event"
"""What the every-minute EventBridge rule sends: a tick of the scheduler."""


@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context, bootstrap.environment())


def handle(event: dict[str, Any], context: Any, wiring: bootstrap.Wiring) -> dict[str, Any]:
    ev = EventBridgeEvent(event)
    ports = wiring.ports
    if ev.detail_type == SCHEDULED_EVENT:
        started = services.dispatch_due(ports)
        lost = services.reap_expired_attempts(ports)
        rehanded = services.rehand_starts(ports)
        overdue = services.nudge_overdue_runs(ports)
        mended = services.mend_quiet_runs(ports)
        logger.info(
            "tick",
            extra={
                "runs_started": len(started),
                "attempts_lost": len(lost),
                "starts_handed_again": len(rehanded),
                "runs_overdue": len(overdue),
                "runs_mended": len(mended),
            },
        )
        return {
            "started": started,
            "lost": lost,
            "rehanded": rehanded,
            "overdue": overdue,
            "mended": mended,
        }
    if ev.detail_type != RUN_REQUESTED:
        raise ValueError(f"dispatcher: unsupported event detail-type {ev.detail_type!r}")
    detail = ev.detail
    plan = ports.definitions.get_plan(detail["workflow_id"], int(detail["version"]))
    run, created = services.start_run(
        ports,
        plan,
        params=detail.get("params") or {},
        run_id=detail.get("run_id"),
        logical_date=detail.get("logical_date"),
        trigger=detail.get("trigger", "manual"),
        workdir=detail.get("workdir"),
    )
    run = services.arm_timeout(ports, run, plan.workflow.timeout)
    tracer.put_annotation(key="run_id", value=run.run_id)
    tracer.put_annotation(key="workflow_id", value=run.workflow_id)
    logger.info("run requested", extra={"run_id": run.run_id, "new_run": created})
    return {"run_id": run.run_id, "created": created, "status": run.status.public}
