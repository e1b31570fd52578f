"""The only place that chooses adapters and wires them into `Ports`.

Handlers call `default_ports()`; it is built on first use and cached for the life of the
Lambda execution environment (or the local process), so clients and the definition cache
are reused across invocations. With STRATOFLOW_ENGINE_HOME set (a process the embedded
engine started, such as a local `executor: fargate` attempt) the ports are the embedded
engine's; otherwise the AWS adapters.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

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

_lock = threading.Lock()
_default: Ports | None = None
Clients = AwsClients | EmbeddedEngine
"""What a handler reaches S3 (and the runtime SQS) through: AWS's clients or the embedded
engine, which answers the same calls."""
_default_clients: Clients | None = None
_default_runner: CommandRunner | None = None


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


def default_clients() -> Clients:
    """This process's clients, from the environment; built once."""
    global _default_clients
    if _default_clients is None:
        with _lock:
            if _default_clients is None:
                settings = Settings.from_env()
                if settings.engine_home:
                    # A process the engine started: its channel belongs to that engine.
                    _default_clients = EmbeddedEngine(
                        settings.engine_home, settings.channel, own_channel=False
                    )
                else:
                    _default_clients = AwsClients(settings.region, settings.endpoint_url)
    return _default_clients


def default_ports() -> Ports:
    """Ports for this process, from the environment; built once."""
    global _default
    if _default is None:
        clients = default_clients()
        with _lock:
            if _default is None:
                settings = Settings.from_env()
                if isinstance(clients, EmbeddedEngine):
                    _default = build_embedded_ports(settings, clients)
                else:
                    _default = build_ports(settings, clients=clients)
    return _default


Uploader = Callable[[str, bytes], str]
"""put(key, body) → the source URI under which the loader registers that file."""
_default_uploader: Uploader | None = None
_default_bucket: str | None = None


def default_uploader() -> Uploader:
    """Where the API puts uploaded workflow files: the bucket's workflows/ prefix (whose
    notification also reaches the loader), or what `install_uploader` set (local up)."""
    if _default_uploader is not None:
        return _default_uploader
    clients = default_clients()
    # The bucket of the engine this process uses (installed, or built from the environment).
    bucket = _default_bucket or getattr(default_ports().definitions, "bucket", None)
    if not bucket:
        raise RuntimeError("no workflows bucket is configured: cannot store an upload")

    def put(key: str, body: bytes) -> str:
        clients.s3.put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"

    return put


def install_uploader(uploader: Uploader | None) -> None:
    global _default_uploader
    _default_uploader = uploader


def default_runner() -> CommandRunner:
    """The executor's command runner for this process; logs per STRATOFLOW_LOG_DIR."""
    global _default_runner
    if _default_runner is None:
        with _lock:
            if _default_runner is None:
                _default_runner = command_runner(Settings.from_env().log_dir)
    return _default_runner


def install_defaults(
    ports: Ports | None,
    clients: Clients | None = None,
    runner: CommandRunner | None = None,
    bucket: str | None = None,
) -> None:
    """Make the handlers of this process use these (the local runtime), or reset with None.
    `bucket`: where uploaded workflow files go (the engine's workflows bucket)."""
    global _default, _default_clients, _default_runner, _default_bucket
    with _lock:
        _default, _default_clients, _default_runner = ports, clients, runner
        _default_bucket = bucket


def _in_lambda() -> bool:
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ
