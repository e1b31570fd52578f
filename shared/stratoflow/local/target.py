"""Connecting the CLI to an engine: the embedded engine in STRATOFLOW_HOME (the default;
its state is on disk, so it is reachable whether or not `stratoflow local up` runs), an AWS
endpoint (LocalStack, `local up --emulator`), and the state file `local up` leaves behind.

One `local up` serves a home at a time: it holds an exclusive lock on `engine.lock` there
for its whole life, so a second one refuses, and a state file whose engine died (SIGKILL)
is recognised as stale because nobody holds that lock any more.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import IO, Any

from stratoflow import bootstrap
from stratoflow.aws.clients import AwsClients
from stratoflow.config import Resources, Settings
from stratoflow.embedded.engine import EmbeddedEngine
from stratoflow.local.emulator import LOCAL_CREDENTIALS, LOCAL_REGION
from stratoflow.services import Ports

STATE_FILE = "local.json"
LOCK_FILE = "engine.lock"


class NoEngine(LookupError):
    """No engine to talk to: the endpoint given cannot be reached or lacks the engine's
    resources."""


class EngineBusy(RuntimeError):
    """Another `stratoflow local up` serves this home."""


def home() -> Path:
    return Path(os.environ.get("STRATOFLOW_HOME", ".stratoflow"))


class EngineLock:
    """The exclusive lock a `local up` holds on its home (released by the kernel however
    the process ends, so a killed engine never leaves it behind)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.path = (folder or home()) / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> EngineLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            state = _read_state_file(self.path.parent) or {}
            where = f" (pid {state['pid']}, API at {state.get('api_url')})" if state else ""
            raise EngineBusy(
                f"another stratoflow engine serves {self.path.parent}{where}: stop it first, "
                "or give this one another home with STRATOFLOW_HOME"
            ) from None
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def engine_running(folder: Path | None = None) -> bool:
    """Whether a `local up` holds the lock on this home now."""
    path = (folder or home()) / LOCK_FILE
    try:
        f = path.open("r")
    except FileNotFoundError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def write_state(
    api_url: str | None,
    endpoint_url: str | None = None,
    prefix: str = "",
    token: str | None = None,
) -> Path:
    """Record where the running `local up` answers and the token its API takes. The file
    is created readable and writable by this user only (mode 0600, never wider, not even
    for an instant): whoever reads the token can run commands as this user."""
    path = home() / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"pid": os.getpid(), "engine": "embedded"}
    if endpoint_url:
        state.update(engine="emulator", endpoint_url=endpoint_url, prefix=prefix)
    if api_url:
        state["api_url"] = api_url
    if token:
        state["token"] = token
    tmp = path.with_name(f".{STATE_FILE}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover could have other permissions: start afresh
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(state))
    tmp.replace(path)
    return path


def _read_state_file(folder: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def read_state() -> dict[str, Any] | None:
    """The running `local up`'s state, or None (also when its engine died and left its
    state file behind: nobody holds the engine lock then)."""
    state = _read_state_file(home())
    if state is None or not engine_running():
        return None
    return state


def clear_state() -> None:
    (home() / STATE_FILE).unlink(missing_ok=True)


def wire(endpoint_url: str | None) -> bootstrap.Wiring:
    """Connect: the wiring the API's handler, run in this process, answers the CLI with
    (the engine's ports, the clients they were built on, where uploads go)."""
    from stratoflow.handlers.observability import send_logs_to
    from stratoflow.runner.commands import command_runner

    ports, clients, bucket = _engine(endpoint_url)
    home().mkdir(parents=True, exist_ok=True)
    send_logs_to((home() / "handlers.log").open("a", encoding="utf-8"))
    # The API runs no command; a runner completes the wiring all the same.
    return bootstrap.Wiring(ports, clients, command_runner(None), bucket=bucket)


def connect(endpoint_url: str | None) -> Ports:
    """Ports on the engine at that endpoint, or on the embedded engine of this home (or the
    emulator a running `local up --emulator` serves)."""
    return _engine(endpoint_url)[0]


def _engine(endpoint_url: str | None) -> tuple[Ports, AwsClients | EmbeddedEngine, str]:
    prefix = "stratoflow"
    if endpoint_url is None:
        state = read_state()
        if state and state.get("endpoint_url"):
            endpoint_url, prefix = str(state["endpoint_url"]), str(state.get("prefix", prefix))
    if endpoint_url is None:
        engine = EmbeddedEngine(home())
        resources = Resources.named(prefix)
        settings = engine.provision(resources, str((home() / "runs").resolve()))
        return bootstrap.build_embedded_ports(settings, engine), engine, resources.bucket
    try:
        ports, clients = _connect(endpoint_url, prefix)
    except Exception as exc:  # an unreachable endpoint, missing resources
        raise NoEngine(f"cannot reach the engine at {endpoint_url}: {exc}") from exc
    return ports, clients, Resources.named(prefix).bucket


def _connect(endpoint: str, prefix: str) -> tuple[Ports, AwsClients]:
    for name, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    clients = AwsClients(os.environ.get("AWS_REGION", LOCAL_REGION), endpoint)
    resources = Resources.named(prefix)
    sqs = clients.sqs
    settings = Settings(
        table=resources.table,
        task_queue_url=sqs.get_queue_url(QueueName=resources.task_queue.name)["QueueUrl"],
        completion_queue_url=sqs.get_queue_url(QueueName=resources.completion_queue.name)[
            "QueueUrl"
        ],
        bucket=resources.bucket,
        endpoint_url=endpoint,
        region=clients.region,
    )
    return bootstrap.build_ports(settings, clients=clients), clients
