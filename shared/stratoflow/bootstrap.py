"""The only place that chooses adapters and wires them into `Ports`.

Handlers call `default_ports()`; it is built on first use and cached for the life of the
Lambda execution environment (or the local process), so clients and the definition cache
are reused across invocations. With STRATOFLOW_ENGINE_HOME set (a process the embedded
engine started, such as a local `executor: fargate` attempt) the ports are the embedded
engine's; otherwise the AWS adapters.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from stratoflow.aws.clients import AwsClients
from stratoflow.aws.observability import NoMetrics
from stratoflow.config import Settings
from stratoflow.core.records import iso
from stratoflow.embedded.definitions import SqliteDefinitionStore
from stratoflow.embedded.engine import EmbeddedEngine
from stratoflow.embedded.queues import EmbeddedCompletionQueue, EmbeddedTaskQueue
from stratoflow.embedded.runs import SqliteRunStore
from stratoflow.ports import EventPublisher, Metrics, NoEvents, NoWorkers
from stratoflow.runner.logfiles import END_MARKER, START_MARKER, FileLogReader
from stratoflow.runner.process import ProcessGuard
from stratoflow.services import CommandOutcome, CommandRunner, Ports
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
    from stratoflow.aws.dynamodb import DynamoDefinitionStore, DynamoRunStore
    from stratoflow.aws.ecs import EcsWorkers, FargateLauncher, RoutingTaskQueue
    from stratoflow.aws.logs import AttemptLogReader
    from stratoflow.aws.observability import EventBridgePublisher, PowertoolsMetrics
    from stratoflow.aws.sqs import SqsCompletionQueue, SqsTaskQueue

    clients = clients or AwsClients(region=settings.region, endpoint_url=settings.endpoint_url)
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


def command_runner(
    log_dir: str | None = None,
    echo_logs: bool | None = None,
    cancel: threading.Event | None = None,
    default_cwd: str | None = None,
    on_command_end: Callable[[], None] | None = None,
    guard: ProcessGuard | None = None,
) -> CommandRunner:
    """The runner the executor uses: full output to a log file per attempt.

    With a `log_dir` (local runs) the files stay there and an attempt's log reference is
    `file:<path>`; without one (Lambda, Fargate) the output is also streamed, as it comes,
    to this process's stdout between markers, i.e. to CloudWatch Logs, and the file removed:
    the reference is then `cwl|<group>|<stream>|<log name>`. `cancel` stops every command
    of this runner (the process is stopping); `on_command_end` is called as soon as each
    command has ended, before its outcome is reported.
    """
    from stratoflow.runner.process import AnyEvent, run_command

    process_cancel = cancel

    echo = (log_dir is None) if echo_logs is None else echo_logs
    base = Path(log_dir) if log_dir else Path(tempfile.gettempdir()) / "stratoflow-logs"

    def log_ref(log_name: str) -> str:
        if echo:
            where = _cloudwatch_stream()
            # From a little before now: the reader need not scan the stream's earlier
            # invocations (a warm Lambda's stream holds many attempts).
            since = int(time.time() * 1000) - LOG_SEARCH_SLACK_MS
            return f"cwl|{where[0]}|{where[1]}|{log_name}|{since}" if where else ""
        return f"file:{base / log_name}"

    def run(
        command: str,
        *,
        env: Mapping[str, str],
        cwd: str | None,
        timeout: float,
        log_name: str,
        cancel: threading.Event | None = None,
    ) -> CommandOutcome:
        log_path = base / log_name
        ref = log_ref(log_name)  # from before the command starts: where its output begins
        scratch = None
        cwd = cwd or default_cwd
        if cwd is None:
            scratch = tempfile.mkdtemp(prefix="stratoflow-")
        stops = [e for e in (cancel, process_cancel) if e is not None]
        echoing = _LiveEcho(log_path, log_name) if echo else None
        try:
            result = run_command(
                command,
                env=env,
                cwd=cwd or scratch,
                timeout=timeout,
                log_path=str(log_path),
                cancel=AnyEvent(*stops) if stops else None,  # type: ignore[arg-type]
                guard=guard,
            )
        except (OSError, ValueError) as exc:
            # The command could not start (its folder is gone, say): a failed attempt with
            # the reason, like a shell's 127, rather than an exception that loops on redelivery.
            stamp = iso(datetime.now(UTC)) or ""
            return CommandOutcome(
                exit_code=127,
                timed_out=False,
                cancelled=False,
                output_tail=f"stratoflow: cannot start the command: {exc}",
                started_at=stamp,
                finished_at=stamp,
                log_ref=None,
            )
        finally:
            if echoing is not None:
                echoing.finish()
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
            if on_command_end is not None:
                on_command_end()
        return CommandOutcome(
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            cancelled=result.cancelled,
            output_tail=result.output_tail,
            started_at=iso(result.started_at) or "",
            finished_at=iso(result.finished_at) or "",
            log_ref=ref or None,
        )

    run.log_ref = log_ref  # type: ignore[attr-defined]
    return run


ECHO_INTERVAL_SECONDS = 0.5
LOG_SEARCH_SLACK_MS = 60_000


class _LiveEcho:
    """Copies an attempt's log file to stdout while the command runs, between markers, so
    CloudWatch Logs has the output as it comes (`stratoflow logs --follow`)."""

    def __init__(self, path: Path, name: str) -> None:
        self._path = path
        self._name = name
        self._done = threading.Event()
        self._offset = 0
        self._last = b"\n"
        sys.stdout.write(f"{START_MARKER.format(name=name)}\n")
        sys.stdout.flush()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(ECHO_INTERVAL_SECONDS):
            self._copy()

    def _copy(self) -> None:
        try:
            with self._path.open("rb") as f:
                f.seek(self._offset)
                while chunk := f.read(256 * 1024):
                    self._offset += len(chunk)
                    self._last = chunk[-1:]
                    sys.stdout.write(chunk.decode("utf-8", "replace"))
        except FileNotFoundError:
            return
        sys.stdout.flush()

    def finish(self) -> None:
        self._done.set()
        self._thread.join()
        self._copy()
        # The end marker needs a line of its own; a newline is added only when the output
        # lacks a final one, since a reader cannot tell an added newline from the command's.
        newline = "" if self._last == b"\n" else "\n"
        sys.stdout.write(f"{newline}{END_MARKER.format(name=self._name)}\n")
        sys.stdout.flush()
        self._path.unlink(missing_ok=True)


def _cloudwatch_stream() -> tuple[str, str] | None:
    """(log group, log stream) this process's stdout goes to, if known: a Lambda function's
    from its environment, a Fargate task's from its awslogs options in the task metadata."""
    group = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
    stream = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
    if group and stream:
        return group, stream
    from stratoflow.runner.metadata import awslogs_stream

    return awslogs_stream()
