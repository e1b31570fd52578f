"""Run notifications (EventBridge) and metrics (CloudWatch EMF through Powertools)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from stratoflow.aws.clients import AwsClients
from stratoflow.config import EVENT_RUN_FINISHED as RUN_FINISHED
from stratoflow.config import EVENT_SOURCE, METRICS_NAMESPACE
from stratoflow.core.records import RunRecord


def run_finished_detail(run: RunRecord, failed_tasks: Sequence[str]) -> dict[str, Any]:
    return {
        "workflow_id": run.workflow_id,
        "run_id": run.run_id,
        "version": run.version,
        "status": run.status.public,
        "logical_date": run.logical_date,
        "finished_at": run.finished_at,
        "failed_tasks": list(failed_tasks),
    }


class EventBridgePublisher:
    """`EventPublisher` that puts a `Run Finished` event on a bus (no-op without a bus)."""

    def __init__(self, clients: AwsClients, bus_name: str) -> None:
        self._clients = clients
        self.bus_name = bus_name

    def run_finished(self, run: RunRecord, failed_tasks: Sequence[str]) -> None:
        if not self.bus_name:
            return
        self._clients.events.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": RUN_FINISHED,
                    "Detail": json.dumps(run_finished_detail(run, failed_tasks)),
                    "EventBusName": self.bus_name,
                }
            ]
        )


class CallbackPublisher:
    """`EventPublisher` for the local runtime: calls back in-process."""

    def __init__(self, callback: Callable[[RunRecord, Sequence[str]], None]) -> None:
        self._callback = callback

    def run_finished(self, run: RunRecord, failed_tasks: Sequence[str]) -> None:
        self._callback(run, failed_tasks)


class PowertoolsMetrics:
    """`Metrics` as CloudWatch EMF. Each metric is emitted twice: per workflow, and once
    without the workflow dimension so that alarms can watch the whole installation."""

    def __init__(self, service: str = "stratoflow") -> None:
        from aws_lambda_powertools import Metrics as _Metrics

        self._service = service
        self._metrics_cls = _Metrics

    def count(self, name: str, workflow_id: str, value: float = 1.0) -> None:
        self._emit(name, "Count", value, workflow_id)

    def timing(self, name: str, workflow_id: str, milliseconds: float) -> None:
        self._emit(name, "Milliseconds", milliseconds, workflow_id)

    def _emit(self, name: str, unit: str, value: float, workflow_id: str) -> None:
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        with single_metric(
            name=name, unit=MetricUnit(unit), value=value, namespace=METRICS_NAMESPACE
        ) as metric:
            metric.add_dimension(name="service", value=self._service)
        with single_metric(
            name=name, unit=MetricUnit(unit), value=value, namespace=METRICS_NAMESPACE
        ) as metric:
            metric.add_dimension(name="service", value=self._service)
            metric.add_dimension(name="workflow", value=workflow_id)


class NoMetrics:
    """`Metrics` that records nothing (local runs, tests)."""

    def count(self, name: str, workflow_id: str, value: float = 1.0) -> None:
        return None

    def timing(self, name: str, workflow_id: str, milliseconds: float) -> None:
        return None
