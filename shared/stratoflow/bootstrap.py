"""The only place that chooses adapters and wires them into `Ports`.

Handlers call `default_ports()`; it is built on first use and cached for the life of the
Lambda execution environment (or the local process), so clients and the definition cache
are reused across invocations.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from stratoflow.aws.clients import AwsClients
from stratoflow.aws.dynamodb import DynamoDefinitionStore, DynamoRunStore
from stratoflow.aws.ecs import FargateLauncher, RoutingTaskQueue
from stratoflow.aws.observability import EventBridgePublisher, NoMetrics, PowertoolsMetrics
from stratoflow.aws.sqs import SqsCompletionQueue, SqsTaskQueue
from stratoflow.config import Settings
from stratoflow.core.records import iso
from stratoflow.ports import EventPublisher, Metrics
from stratoflow.services import CommandOutcome, CommandRunner, Ports, RandomIds, SystemClock

_lock = threading.Lock()
_default: Ports | None = None
_default_clients: AwsClients | None = None
_default_runner: CommandRunner | None = None


def build_ports(
    settings: Settings,
    *,
    clients: AwsClients | None = None,
    events: EventPublisher | None = None,
    metrics: Metrics | None = None,
) -> Ports:
    """Wire the AWS adapters for `settings` (real AWS, LocalStack or the embedded emulator)."""
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
    )


def default_clients() -> AwsClients:
    """AWS clients for this process, from the environment; built once."""
    global _default_clients
    if _default_clients is None:
        with _lock:
            if _default_clients is None:
                settings = Settings.from_env()
                _default_clients = AwsClients(settings.region, settings.endpoint_url)
    return _default_clients


def default_ports() -> Ports:
    """Ports for this process, from the environment; built once."""
    global _default
    if _default is None:
        clients = default_clients()
        with _lock:
            if _default is None:
                _default = build_ports(Settings.from_env(), clients=clients)
    return _default


def default_runner() -> CommandRunner:
    """The executor's command runner for this process; logs per STRATOFLOW_LOG_DIR."""
    global _default_runner
    if _default_runner is None:
        with _lock:
            if _default_runner is None:
                _default_runner = command_runner(Settings.from_env().log_dir)
    return _default_runner


def install_defaults(
    ports: Ports | None, clients: AwsClients | None = None, runner: CommandRunner | None = None
) -> None:
    """Make the handlers of this process use these (the local runtime), or reset with None."""
    global _default, _default_clients, _default_runner
    with _lock:
        _default, _default_clients, _default_runner = ports, clients, runner


def _in_lambda() -> bool:
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ


def command_runner(
    log_dir: str | None = None,
    echo_logs: bool | None = None,
    cancel: threading.Event | None = None,
    default_cwd: str | None = None,
) -> CommandRunner:
    """The runner the executor uses: full output to a log file per attempt.

    With a `log_dir` (local runs) the files stay there; without one (Lambda, Fargate) the
    output is written to this process's stdout, i.e. CloudWatch Logs, and the file removed.
    """
    from stratoflow.runner.process import run_command

    echo = (log_dir is None) if echo_logs is None else echo_logs
    base = Path(log_dir) if log_dir else Path(tempfile.gettempdir()) / "stratoflow-logs"

    def run(
        command: str, *, env: Mapping[str, str], cwd: str | None, timeout: float, log_name: str
    ) -> CommandOutcome:
        log_path = base / log_name
        scratch = None
        cwd = cwd or default_cwd
        if cwd is None:
            scratch = tempfile.mkdtemp(prefix="stratoflow-")
        try:
            result = run_command(
                command,
                env=env,
                cwd=cwd or scratch,
                timeout=timeout,
                log_path=str(log_path),
                cancel=cancel,
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
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
        log_ref: str | None = str(log_path)
        if echo:
            _echo_log(log_path, log_name)
            log_ref = _cloudwatch_ref()
        return CommandOutcome(
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            cancelled=result.cancelled,
            output_tail=result.output_tail,
            started_at=iso(result.started_at) or "",
            finished_at=iso(result.finished_at) or "",
            log_ref=log_ref,
        )

    return run


def _echo_log(path: Path, name: str) -> None:
    out = sys.stdout
    out.write(f"----- stratoflow output {name} -----\n")
    try:
        with path.open("rb") as f:
            while chunk := f.read(256 * 1024):
                out.write(chunk.decode("utf-8", "replace"))
    except FileNotFoundError:
        pass
    out.write(f"\n----- end of output {name} -----\n")
    out.flush()
    path.unlink(missing_ok=True)


def _cloudwatch_ref() -> str | None:
    group = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
    stream = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
    return f"{group}:{stream}" if group and stream else None
