"""Settings and resource definitions, defined once.

The handlers read their settings from the environment variables named here; the CDK app
(infra/) sets exactly these variables and builds its table and queues from the same
definitions, and the local runtime creates its emulated resources from them too. That is
how local and cloud cannot drift.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# --- environment variable names (the contract between infra/, handlers and local runtime)
ENV_TABLE = "STRATOFLOW_TABLE"
ENV_TASK_QUEUE_URL = "STRATOFLOW_TASK_QUEUE_URL"
ENV_COMPLETION_QUEUE_URL = "STRATOFLOW_COMPLETION_QUEUE_URL"
ENV_BUCKET = "STRATOFLOW_BUCKET"
ENV_EVENT_BUS = "STRATOFLOW_EVENT_BUS"
ENV_LOG_DIR = "STRATOFLOW_LOG_DIR"
ENV_ENDPOINT_URL = "AWS_ENDPOINT_URL"
ENV_REGION = "AWS_REGION"
ENV_ENGINE_HOME = "STRATOFLOW_ENGINE_HOME"
"""Set: the handlers use the embedded engine whose home (its SQLite file) is there."""
ENV_QUEUE_CHANNEL = "STRATOFLOW_QUEUE_CHANNEL"
"""The embedded engine's queue channel of the process that started this one."""
ENV_RUN_RETENTION_DAYS = "STRATOFLOW_RUN_RETENTION_DAYS"
"""Days a finished run's items are kept (DynamoDB TTL on TABLE_TTL_ATTRIBUTE)."""
ENV_TASK_ROLE_ARN = "STRATOFLOW_TASK_ROLE_ARN"
"""The stack's default task role: what an executor on AWS assumes for a command whose task
names no `role` (invariant 12). Unset on AWS, commands are refused."""

# Fargate executor: what the functions that enqueue tasks need to call ECS RunTask.
ENV_ECS_CLUSTER = "STRATOFLOW_ECS_CLUSTER"
ENV_ECS_TASK_DEFINITION = "STRATOFLOW_ECS_TASK_DEFINITION"
ENV_ECS_SUBNETS = "STRATOFLOW_ECS_SUBNETS"
"""Comma-separated subnet ids for the task's awsvpc configuration."""
ENV_ECS_SECURITY_GROUPS = "STRATOFLOW_ECS_SECURITY_GROUPS"
"""Comma-separated security group ids for the task's awsvpc configuration."""
ENV_ECS_CONTAINER = "STRATOFLOW_ECS_CONTAINER"
"""Name of the runner container, for RunTask containerOverrides."""
ENV_ECS_ASSIGN_PUBLIC_IP = "STRATOFLOW_ECS_ASSIGN_PUBLIC_IP"
"""ENABLED or DISABLED: awsvpcConfiguration.assignPublicIp for RunTask."""
ENV_TASK_MESSAGE = "STRATOFLOW_TASK_MESSAGE"
"""The task message (JSON) given to `python -m stratoflow.runner.fargate` by RunTask."""

FARGATE_ENV_VARS = (
    ENV_ECS_CLUSTER,
    ENV_ECS_TASK_DEFINITION,
    ENV_ECS_SUBNETS,
    ENV_ECS_SECURITY_GROUPS,
    ENV_ECS_CONTAINER,
    ENV_ECS_ASSIGN_PUBLIC_IP,
)
FARGATE_LAUNCHERS = ("dispatcher", "completion", "api")
"""Functions that enqueue tasks, hence start `executor: fargate` tasks with RunTask."""
RUN_RETENTION_SETTERS = ("dispatcher", "completion", "api")

_RUN_DRIVERS_ENV = (
    ENV_TABLE,
    ENV_TASK_QUEUE_URL,
    ENV_COMPLETION_QUEUE_URL,
    ENV_BUCKET,
    ENV_EVENT_BUS,
    ENV_RUN_RETENTION_DAYS,
    *FARGATE_ENV_VARS,
)
"""What a function that starts, moves or ends runs needs: it may enqueue tasks (and start
Fargate ones), report lost attempts, and emit Run Finished."""

HANDLER_ENV_VARS: dict[str, tuple[str, ...]] = {
    "dispatcher": _RUN_DRIVERS_ENV,
    "executor": (ENV_TABLE, ENV_COMPLETION_QUEUE_URL, ENV_BUCKET, ENV_TASK_ROLE_ARN),
    "completion": _RUN_DRIVERS_ENV,
    "loader": (ENV_TABLE, ENV_BUCKET),
    # The REST API also starts runs (trigger, retry) and ends them (cancel: StopTask and
    # the Run Finished event); it puts uploaded workflow files under workflows/.
    "api": _RUN_DRIVERS_ENV,
}
"""Which settings each Lambda function needs; infra sets these and a test checks it."""

# Powertools metrics (EMF)
METRICS_NAMESPACE = "Stratoflow"
SERVICE_DIMENSION = "service"
WORKFLOW_DIMENSION = "workflow"
METRIC_RUNS_STARTED = "RunsStarted"
METRIC_RUNS_SUCCEEDED = "RunsSucceeded"
METRIC_RUNS_FAILED = "RunsFailed"
METRIC_TASKS_SUCCEEDED = "TasksSucceeded"
METRIC_TASKS_FAILED = "TasksFailed"
METRIC_TASKS_RETRIED = "TasksRetried"
METRIC_TASKS_TIMED_OUT = "TasksTimedOut"
METRIC_TASK_DURATION = "TaskDuration"
"""Milliseconds from an attempt's start to its end."""
METRIC_QUEUE_LATENCY = "QueueLatency"
"""Milliseconds from enqueue to the attempt's start."""
METRIC_WORKFLOW_LOAD_FAILED = "WorkflowLoadFailed"

WORKFLOW_FILE_SUFFIXES = (".json", ".yaml", ".yml")
"""Only these uploads under workflows/ notify the loader. An error report written beside an
upload must end otherwise (e.g. `etl.yaml.error.txt`), or it would re-trigger the loader."""
DEFAULT_RUN_RETENTION_DAYS = 30

# --- resource definitions
DEFAULT_PREFIX = "stratoflow"
WORKFLOWS_PREFIX = "workflows/"
"""S3 key prefix under which uploaded workflow files are registered."""
DEFINITIONS_PREFIX = "definitions/"
"""S3 key prefix for definitions too large for a DynamoDB item (invariant 7)."""

TABLE_KEY_SCHEMA: list[dict[str, str]] = [
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
]
DUE_INDEX = "due"
"""Sparse index of the workflows whose schedule is active, by their next slot: the
dispatcher's tick queries it instead of scanning every workflow."""
DUE_INDEX_PARTITION = "due_pk"
DUE_INDEX_SORT = "due_at"
LEASE_INDEX = "leases"
"""Sparse index of the running attempts by the end of their lease: the dispatcher's tick
finds attempts whose executor died (a Fargate task has no queue message to redeliver)."""
LEASE_INDEX_PARTITION = "lease_pk"
LEASE_INDEX_SORT = "lease_at"
TABLE_ATTRIBUTES: list[dict[str, str]] = [
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
    {"AttributeName": DUE_INDEX_PARTITION, "AttributeType": "S"},
    {"AttributeName": DUE_INDEX_SORT, "AttributeType": "S"},
    {"AttributeName": LEASE_INDEX_PARTITION, "AttributeType": "S"},
    {"AttributeName": LEASE_INDEX_SORT, "AttributeType": "S"},
]
TABLE_INDEXES: list[dict[str, object]] = [
    {
        "IndexName": DUE_INDEX,
        "KeySchema": [
            {"AttributeName": DUE_INDEX_PARTITION, "KeyType": "HASH"},
            {"AttributeName": DUE_INDEX_SORT, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "KEYS_ONLY"},
    },
    {
        "IndexName": LEASE_INDEX,
        "KeySchema": [
            {"AttributeName": LEASE_INDEX_PARTITION, "KeyType": "HASH"},
            {"AttributeName": LEASE_INDEX_SORT, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "KEYS_ONLY"},
    },
]
TABLE_TTL_ATTRIBUTE = "expires_at"

# Visibility of a task message must exceed the longest task a Lambda executor may run
# (15 min) so that a running attempt's message is not handed to a second executor.
EXECUTOR_TIMEOUT_SECONDS = 900
COMPLETION_TIMEOUT_SECONDS = 60
DISPATCHER_TIMEOUT_SECONDS = 60
LOADER_TIMEOUT_SECONDS = 60
API_TIMEOUT_SECONDS = 29
"""API Gateway's integration timeout: a longer function would only be cut off by it."""
EVENT_SOURCE = "stratoflow"
EVENT_RUN_FINISHED = "Run Finished"
"""EventBridge detail-type of the event every finished run emits (source EVENT_SOURCE)."""

API_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/workflows"),
    ("POST", "/workflows"),
    ("GET", "/workflows/{workflow_id}"),
    ("GET", "/workflows/{workflow_id}/versions/{version}"),
    ("GET", "/workflows/{workflow_id}/versions/{version}/graph"),
    ("POST", "/workflows/{workflow_id}/pause"),
    ("POST", "/workflows/{workflow_id}/unpause"),
    ("GET", "/workflows/{workflow_id}/runs"),
    ("POST", "/workflows/{workflow_id}/runs"),
    ("GET", "/runs/{run_id}"),
    ("GET", "/runs/{run_id}/tasks/{task_id}/logs"),
    ("GET", "/runs/{run_id}/tasks/{task_id}/logs/page"),
    ("POST", "/runs/{run_id}/cancel"),
    ("POST", "/runs/{run_id}/retry"),
    ("POST", "/runs/{run_id}/tasks/{task_id}/rerun"),
    ("POST", "/runs/{run_id}/tasks/{task_id}/mark"),
)
"""The REST API's methods: served by the `api` function (its OpenAPI document is checked
against this), declared one by one in API Gateway by infra/."""

# Stack outputs the CLI reads with `--stack NAME` (CloudFormation DescribeStacks).
OUTPUT_API_URL = "ApiUrl"
OUTPUT_BUCKET = "WorkflowsBucketName"
OUTPUT_EVENT_BUS = "EventBusName"
MAX_RECEIVE_COUNT = 5
"""Deliveries of one message before SQS moves it to the dead-letter queue."""

MAX_TASKS_PER_WORKFLOW = 20_000


@dataclass(frozen=True)
class QueueSpec:
    """One SQS queue with its dead-letter queue."""

    name: str
    dlq_name: str
    visibility_timeout: int
    max_receive_count: int = MAX_RECEIVE_COUNT

    def attributes(self) -> dict[str, str]:
        """Attributes for CreateQueue (the redrive policy is added once the DLQ exists)."""
        return {
            "VisibilityTimeout": str(self.visibility_timeout),
            "MessageRetentionPeriod": str(4 * 24 * 3600),
        }


@dataclass(frozen=True)
class Resources:
    """Names of the AWS resources one stratoflow installation uses."""

    table: str
    task_queue: QueueSpec
    completion_queue: QueueSpec
    bucket: str

    @classmethod
    def named(cls, prefix: str = DEFAULT_PREFIX, account: str = "000000000000") -> Resources:
        """Resource names for a given prefix: the local runtime's (and LocalStack's) layout."""
        return cls(
            table=prefix,
            task_queue=QueueSpec(
                name=f"{prefix}-tasks",
                dlq_name=f"{prefix}-tasks-dlq",
                visibility_timeout=6 * EXECUTOR_TIMEOUT_SECONDS,
            ),
            completion_queue=QueueSpec(
                name=f"{prefix}-completions",
                dlq_name=f"{prefix}-completions-dlq",
                visibility_timeout=6 * COMPLETION_TIMEOUT_SECONDS,
            ),
            bucket=f"{prefix}-workflows-{account}",
        )


@dataclass(frozen=True)
class Settings:
    """What a handler needs to reach its resources; read from the environment by default."""

    table: str
    task_queue_url: str = ""
    completion_queue_url: str = ""
    bucket: str = ""
    event_bus: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    log_dir: str | None = None
    run_retention_days: int = DEFAULT_RUN_RETENTION_DAYS
    ecs: dict[str, str] = field(default_factory=dict)
    """The Fargate settings (FARGATE_ENV_VARS) when this function may start Fargate tasks."""
    engine_home: str | None = None
    """The embedded engine's home, when the handlers run on it instead of AWS."""
    channel: str = ""
    task_role_arn: str = ""
    """The default task role an executor on AWS runs commands as (ENV_TASK_ROLE_ARN)."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            table=env.get(ENV_TABLE, DEFAULT_PREFIX),
            task_queue_url=env.get(ENV_TASK_QUEUE_URL, ""),
            completion_queue_url=env.get(ENV_COMPLETION_QUEUE_URL, ""),
            bucket=env.get(ENV_BUCKET, ""),
            event_bus=env.get(ENV_EVENT_BUS, ""),
            endpoint_url=env.get(ENV_ENDPOINT_URL) or None,
            region=env.get(ENV_REGION) or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            log_dir=env.get(ENV_LOG_DIR) or None,
            run_retention_days=int(env.get(ENV_RUN_RETENTION_DAYS) or DEFAULT_RUN_RETENTION_DAYS),
            ecs={name: env[name] for name in FARGATE_ENV_VARS if env.get(name)},
            engine_home=env.get(ENV_ENGINE_HOME) or None,
            channel=env.get(ENV_QUEUE_CHANNEL, ""),
            task_role_arn=env.get(ENV_TASK_ROLE_ARN, ""),
        )

    def as_env(self) -> dict[str, str]:
        """The environment that makes `from_env` return these settings."""
        env = {
            ENV_TABLE: self.table,
            ENV_TASK_QUEUE_URL: self.task_queue_url,
            ENV_COMPLETION_QUEUE_URL: self.completion_queue_url,
            ENV_BUCKET: self.bucket,
            ENV_REGION: self.region,
        }
        if self.event_bus:
            env[ENV_EVENT_BUS] = self.event_bus
        if self.endpoint_url:
            env[ENV_ENDPOINT_URL] = self.endpoint_url
        if self.log_dir:
            env[ENV_LOG_DIR] = self.log_dir
        env[ENV_RUN_RETENTION_DAYS] = str(self.run_retention_days)
        if self.engine_home:
            env[ENV_ENGINE_HOME] = self.engine_home
            env[ENV_QUEUE_CHANNEL] = self.channel
        if self.task_role_arn:
            env[ENV_TASK_ROLE_ARN] = self.task_role_arn
        env.update(self.ecs)
        return env
