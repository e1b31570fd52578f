"""Settings and resource definitions, defined once.

The handlers read their settings from the environment variables named here; the CDK app
(infra/) sets exactly these variables and builds its table and queues from the same
definitions, and the local runtime creates its emulated resources from them too. That is
how local and cloud cannot drift.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

# --- environment variable names (the contract between infra/, handlers and local runtime)
ENV_TABLE = "STRATOFLOW_TABLE"
ENV_TASK_QUEUE_URL = "STRATOFLOW_TASK_QUEUE_URL"
ENV_COMPLETION_QUEUE_URL = "STRATOFLOW_COMPLETION_QUEUE_URL"
ENV_BUCKET = "STRATOFLOW_BUCKET"
ENV_EVENT_BUS = "STRATOFLOW_EVENT_BUS"
ENV_LOG_DIR = "STRATOFLOW_LOG_DIR"
ENV_ENDPOINT_URL = "AWS_ENDPOINT_URL"
ENV_REGION = "AWS_REGION"

HANDLER_ENV_VARS: dict[str, tuple[str, ...]] = {
    "dispatcher": (ENV_TABLE, ENV_TASK_QUEUE_URL, ENV_BUCKET),
    "executor": (ENV_TABLE, ENV_COMPLETION_QUEUE_URL, ENV_BUCKET),
    "completion": (ENV_TABLE, ENV_TASK_QUEUE_URL, ENV_COMPLETION_QUEUE_URL, ENV_BUCKET),
    "loader": (ENV_TABLE, ENV_BUCKET),
}
"""Which settings each Lambda function needs; infra sets these and a test checks it."""

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
TABLE_ATTRIBUTES: list[dict[str, str]] = [
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
]
TABLE_TTL_ATTRIBUTE = "expires_at"

# Visibility of a task message must exceed the longest task a Lambda executor may run
# (15 min) so that a running attempt's message is not handed to a second executor.
EXECUTOR_TIMEOUT_SECONDS = 900
COMPLETION_TIMEOUT_SECONDS = 60
DISPATCHER_TIMEOUT_SECONDS = 60
LOADER_TIMEOUT_SECONDS = 60
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
    extra: dict[str, Any] = field(default_factory=dict)

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
        return env
