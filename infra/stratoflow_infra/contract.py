"""Names infra/ uses beyond the resource definitions: re-exported from `stratoflow.config`,
the one place handlers, the local runtime and infra read them from."""

from __future__ import annotations

from stratoflow.config import (  # noqa: F401 - re-exports
    ENV_ECS_ASSIGN_PUBLIC_IP,
    ENV_ECS_CLUSTER,
    ENV_ECS_CONTAINER,
    ENV_ECS_SECURITY_GROUPS,
    ENV_ECS_SUBNETS,
    ENV_ECS_TASK_DEFINITION,
    ENV_RUN_RETENTION_DAYS,
    ENV_TASK_MESSAGE,
    FARGATE_ENV_VARS,
    FARGATE_LAUNCHERS,
    METRIC_QUEUE_LATENCY,
    METRIC_RUNS_FAILED,
    METRIC_RUNS_STARTED,
    METRIC_RUNS_SUCCEEDED,
    METRIC_TASK_DURATION,
    METRIC_TASKS_FAILED,
    METRIC_TASKS_RETRIED,
    METRIC_TASKS_SUCCEEDED,
    METRIC_TASKS_TIMED_OUT,
    METRIC_WORKFLOW_LOAD_FAILED,
    METRICS_NAMESPACE,
    RUN_RETENTION_SETTERS,
    SERVICE_DIMENSION,
    WORKFLOW_DIMENSION,
    WORKFLOW_FILE_SUFFIXES,
)
