"""The only place that chooses adapters and wires them into `Ports`, and a `Wiring`.

Handlers are handed their wiring: each handler module's `handle(event, context, wiring)`
does the work, and its Lambda entry point `handler(event, context)` hands it
`environment()`, the wiring of this process built from its environment once (a Lambda
execution environment reuses its clients and definition cache across invocations). The
local runtime builds a wiring of its own and calls `handle` with it; tests do the same, so
several engines live side by side in one process and nothing is re-pointed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from stratoflow.aws.clients import AwsClients
from stratoflow.aws.observability import NoMetrics
from stratoflow.config import Settings
from stratoflow.embedded.credentials import LocalCredentials
from stratoflow.embedded.definitions import SqliteDefinitionStore
from stratoflow.embedded.engine import EmbeddedEngine
from stratoflow.embedded.queues import EmbeddedCompletionQueue, EmbeddedTaskQueue
from stratoflow.embedded.runs import SqliteRunStore
from stratoflow.embedded.secrets import LocalSecretSource
from stratoflow.ports import CredentialSource, EventPublisher, Metrics, NoEvents, NoWorkers
from stratoflow.runner.commands import command_runner
from stratoflow.runner.logfiles import FileLogReader
from stratoflow.services import CommandRunner, Ports
from stratoflow.system import RandomIds, SystemClock

Clients = AwsClients | EmbeddedEngine
"""What a handler reaches S3 (and the runtime SQS) through: AWS's clients or the embedded
engine, which answers the same calls."""


def build_ports(
    settings: Settings,
    *,
    clients: AwsClients | None = None,
    events: EventPublisher | None = None,
    metrics: Metrics | None = None,
) -> Ports:
    """Wire the AWS adapters for `settings` (real AWS, LocalStack or the embedded emulator)."""
    # Imported here: they import boto3, which the embedded engine does without.
    from stratoflow.aws.credentials import AssumedRoleCredentials, NoTaskRole, seal_process
    from stratoflow.aws.dynamodb import DynamoDefinitionStore, DynamoRunStore
    from stratoflow.aws.ecs import EcsWorkers, FargateLauncher, RoutingTaskQueue
    from stratoflow.aws.logs import AttemptLogReader
    from stratoflow.aws.observability import EventBridgePublisher, PowertoolsMetrics
    from stratoflow.aws.secrets import AwsSecretSource
    from stratoflow.aws.sqs import SqsCompletionQueue, SqsTaskQueue

    clients = clients or AwsClients(region=settings.region, endpoint_url=settings.endpoint_url)
    # Invariant 12: on Lambda and Fargate a command runs as a task role, never as this
    # process; on a laptop (the emulator, an endpoint) as the user, like the embedded engine.
    on_aws = _in_lambda() or "ECS_CONTAINER_METADATA_URI_V4" in os.environ
    credentials: CredentialSource = LocalCredentials()
    if settings.task_role_arn:
        credentials = AssumedRoleCredentials(clients, settings.task_role_arn, settings.region)
    elif on_aws:
        credentials = NoTaskRole()
    if on_aws:
        seal_process()
    return Ports(
        runs=DynamoRunStore(clients, settings.table),
        definitions=DynamoDefinitionStore(clients, settings.table, settings.bucket or None),
        tasks=RoutingTaskQueue(
            SqsTaskQueue(clients, settings.task_queue_url),
            FargateLauncher(clients, settings.ecs) if settings.ecs else None,
        ),
        completions=SqsCompletionQueue(clients, settings.completion_queue_url),
        clock=SystemClock(),
        ids=RandomIds(),
        events=events or EventBridgePublisher(clients, settings.event_bus),
        metrics=metrics or (PowertoolsMetrics() if _in_lambda() else NoMetrics()),
        workers=EcsWorkers(clients, settings.ecs) if settings.ecs else NoWorkers(),
        logs=AttemptLogReader(clients),
        credentials=credentials,
        secrets=AwsSecretSource(clients),
    )


def build_embedded_ports(
    settings: Settings,
    engine: EmbeddedEngine,
    *,
    events: EventPublisher | None = None,
    metrics: Metrics | None = None,
) -> Ports:
    """Wire the embedded adapters of `engine` (queues named by `settings`)."""
    return Ports(
        runs=SqliteRunStore(engine.db, owner=engine.owner),
        definitions=SqliteDefinitionStore(engine.db),
        tasks=EmbeddedTaskQueue(engine.sqs, settings.task_queue_url),
        completions=EmbeddedCompletionQueue(engine.sqs, settings.completion_queue_url),
        clock=SystemClock(),
        ids=RandomIds(),
        events=events or NoEvents(),
        metrics=metrics or NoMetrics(),
        workers=NoWorkers(),
        logs=FileLogReader(),
        credentials=LocalCredentials(),
        secrets=LocalSecretSource(engine.home),
    )


Uploader = Callable[[str, bytes], str]
"""put(key, body) → the source URI under which the loader registers that file."""


@dataclass
class Wiring:
    """What the handlers of one process work with, handed to each of them: the ports, the
    clients they were built on (S3 for the loader), the executor's command runner and
    where the API puts uploaded workflow files. Built by `from_environment` for an entry
    point (a Lambda function, the Fargate runner), and by the local runtime for its own."""

    ports: Ports
    clients: Clients
    runner: CommandRunner
    bucket: str | None = None
    """The workflows bucket uploads go to (its notification reaches the loader)."""
    uploader: Uploader | None = None
    """Replaces the bucket for uploads: `local up` stores them in its folder too."""

    def upload(self, key: str, body: bytes) -> str:
        """Store an uploaded workflow file; returns the source URI to register it under."""
        if self.uploader is not None:
            return self.uploader(key, body)
        bucket = self.bucket or getattr(self.ports.definitions, "bucket", None)
        if not bucket:
            raise RuntimeError("no workflows bucket is configured: cannot store an upload")
        self.clients.s3.put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"


def from_environment() -> Wiring:
    """The wiring of an entry point, from its environment (Settings.from_env): the AWS
    adapters, or the embedded engine's for a process that engine started (a local
    `executor: fargate` attempt, with STRATOFLOW_ENGINE_HOME)."""
    settings = Settings.from_env()
    runner = command_runner(settings.log_dir)
    if settings.engine_home:
        # A process the engine started: its channel belongs to that engine.
        engine = EmbeddedEngine(settings.engine_home, settings.channel, own_channel=False)
        return Wiring(build_embedded_ports(settings, engine), engine, runner)
    clients = AwsClients(settings.region, settings.endpoint_url)
    return Wiring(build_ports(settings, clients=clients), clients, runner)


@cache
def environment() -> Wiring:
    """`from_environment()`, built on first use and kept for the life of the process: a
    Lambda execution environment reuses its clients and definition cache across
    invocations. Only entry points call this; everything else is handed its wiring."""
    return from_environment()


def _in_lambda() -> bool:
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ
