"""Fargate executor: start one ECS task per attempt of an `executor: fargate` task.

The container runs `python -m stratoflow.runner.fargate`, the same runner the Lambda
executor uses, and reports to the completion queue like any executor (invariant 10).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stratoflow.aws.clients import AwsClients
from stratoflow.config import (
    ENV_ECS_ASSIGN_PUBLIC_IP,
    ENV_ECS_CLUSTER,
    ENV_ECS_CONTAINER,
    ENV_ECS_SECURITY_GROUPS,
    ENV_ECS_SUBNETS,
    ENV_ECS_TASK_DEFINITION,
    ENV_TASK_MESSAGE,
)
from stratoflow.core.records import TaskMessage
from stratoflow.ports import TaskQueue


class FargateStartFailed(RuntimeError):
    """ECS refused to start a task (capacity, limits): the caller's message is retried."""


class FargateLauncher:
    """Starts attempts as Fargate tasks, with the task's cpu/memory as RunTask overrides."""

    def __init__(self, clients: AwsClients, ecs: Mapping[str, str]) -> None:
        self._clients = clients
        self.cluster = ecs[ENV_ECS_CLUSTER]
        self.task_definition = ecs[ENV_ECS_TASK_DEFINITION]
        self.container = ecs.get(ENV_ECS_CONTAINER, "runner")
        self.subnets = [s for s in ecs.get(ENV_ECS_SUBNETS, "").split(",") if s]
        self.security_groups = [s for s in ecs.get(ENV_ECS_SECURITY_GROUPS, "").split(",") if s]
        self.assign_public_ip = ecs.get(ENV_ECS_ASSIGN_PUBLIC_IP, "DISABLED")

    def launch(self, msg: TaskMessage) -> str:
        """Start the attempt; returns the ECS task ARN."""
        resp = self._clients.client("ecs").run_task(**self.run_task_request(msg))
        if resp.get("failures") or not resp.get("tasks"):
            raise FargateStartFailed(f"ecs run_task for {msg.task_id}: {resp.get('failures')}")
        return str(resp["tasks"][0]["taskArn"])

    def run_task_request(self, msg: TaskMessage) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "taskDefinition": self.task_definition,
            "launchType": "FARGATE",
            "count": 1,
            "startedBy": "stratoflow",
            "networkConfiguration": {
                "awsvpcConfiguration": {
                    "subnets": self.subnets,
                    "securityGroups": self.security_groups,
                    "assignPublicIp": self.assign_public_ip,
                }
            },
            "overrides": {
                # Task-level size, plus the container's hard limit raised to match: the
                # task definition's container limit would otherwise cap the task.
                "cpu": str(msg.cpu),
                "memory": str(msg.memory),
                "containerOverrides": [
                    {
                        "name": self.container,
                        "memory": msg.memory,
                        "environment": [{"name": ENV_TASK_MESSAGE, "value": msg.to_json()}],
                    }
                ],
            },
            "tags": [
                {"key": "stratoflow:run", "value": msg.run_id[:256]},
                {"key": "stratoflow:task", "value": msg.task_id[:256]},
            ],
        }


class RoutingTaskQueue:
    """`TaskQueue` that starts Fargate attempts on ECS and sends the rest to SQS.

    A Fargate attempt that must wait (a retry delay) starts at once and its container waits
    out `not_before`: only the functions that enqueue may call RunTask, and the executor
    Lambda that would otherwise receive a delayed message may not.
    """

    def __init__(self, sqs: TaskQueue, launcher: FargateLauncher | None) -> None:
        self._sqs = sqs
        self._launcher = launcher

    def send_tasks(self, messages: Iterable[TaskMessage], delay_seconds: int = 0) -> None:
        via_sqs: list[TaskMessage] = []
        for msg in messages:
            if self._launcher and msg.executor == "fargate":
                self._launcher.launch(msg)
            else:
                via_sqs.append(msg)
        if via_sqs:
            self._sqs.send_tasks(via_sqs, delay_seconds)


class EcsWorkers:
    """`Workers` on ECS: a cancelled run's Fargate attempts are stopped with StopTask."""

    def __init__(self, clients: AwsClients, ecs: Mapping[str, str]) -> None:
        self._clients = clients
        self.cluster = ecs[ENV_ECS_CLUSTER]

    def stop(self, worker: str, reason: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._clients.client("ecs").stop_task(
                cluster=self.cluster, task=worker, reason=reason[:255]
            )
        except ClientError as err:
            # A task that has already stopped (or was never found) is what we wanted.
            if err.response.get("Error", {}).get("Code") not in (
                "InvalidParameterException",
                "ResourceNotFoundException",
            ):
                raise
