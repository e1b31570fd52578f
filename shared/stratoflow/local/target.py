"""Connecting the CLI to a running engine: an endpoint (a `stratoflow local up` server,
LocalStack) or the state file that `local up` leaves in STRATOFLOW_HOME."""

from __future__ import annotations

import json
import os
from pathlib import Path

from stratoflow import bootstrap
from stratoflow.aws.clients import AwsClients
from stratoflow.config import Resources, Settings
from stratoflow.local.emulator import LOCAL_CREDENTIALS, LOCAL_REGION
from stratoflow.services import Ports

STATE_FILE = "local.json"


class NoEngine(LookupError):
    """No engine to talk to: no endpoint was given and no local server runs, or the
    endpoint cannot be reached or lacks the engine's resources."""


def home() -> Path:
    return Path(os.environ.get("STRATOFLOW_HOME", ".stratoflow"))


def write_state(endpoint_url: str, prefix: str, api_url: str | None = None) -> Path:
    path = home() / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"endpoint_url": endpoint_url, "prefix": prefix, "pid": os.getpid()}
    if api_url:
        state["api_url"] = api_url
    path.write_text(json.dumps(state))
    return path


def read_state() -> dict[str, object] | None:
    """The running `local up` server's state, or None."""
    try:
        state = json.loads((home() / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def clear_state() -> None:
    (home() / STATE_FILE).unlink(missing_ok=True)


def resolve_endpoint(endpoint_url: str | None) -> tuple[str, str]:
    """(endpoint, prefix): the one given, else the running local server's."""
    if endpoint_url:
        return endpoint_url, "stratoflow"
    state = read_state()
    if state is None or "endpoint_url" not in state:
        raise NoEngine(
            "no engine to talk to: start one with `stratoflow local up`, or pass "
            "--endpoint-url (e.g. http://localhost:4566 for LocalStack)"
        )
    return str(state["endpoint_url"]), str(state.get("prefix", "stratoflow"))


def install(endpoint_url: str | None) -> Ports:
    """Connect, and make this process's handlers (the API's, run in-process) use that
    engine: its ports and the clients they were built on."""
    from stratoflow.handlers.observability import send_logs_to

    ports, clients = _engine(endpoint_url)
    bootstrap.install_defaults(ports, clients)
    home().mkdir(parents=True, exist_ok=True)
    send_logs_to((home() / "handlers.log").open("a", encoding="utf-8"))
    return ports


def connect(endpoint_url: str | None) -> Ports:
    """Ports on the engine's resources at that endpoint (found, not created)."""
    return _engine(endpoint_url)[0]


def _engine(endpoint_url: str | None) -> tuple[Ports, AwsClients]:
    endpoint, prefix = resolve_endpoint(endpoint_url)
    try:
        return _connect(endpoint, prefix)
    except Exception as exc:  # an unreachable endpoint, missing resources
        raise NoEngine(
            f"cannot reach the engine at {endpoint_url or '(local server)'}: {exc}"
        ) from exc


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
