"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from stratoflow import services
from stratoflow.core.model import Workflow
from stratoflow.local.runtime import LocalRuntime

_ids = count()


def unique_id(stem: str) -> str:
    """A workflow id no other test in this process uses."""
    return f"{stem}-{os.getpid()}-{next(_ids)}"


def run_workflow(
    rt: LocalRuntime,
    spec: dict[str, Any],
    workdir: Path,
    params: dict[str, str] | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """Register `spec` (id made unique), run it to the end, return the run document."""
    spec = {**spec, "id": unique_id(spec.get("id", "wf"))}
    wf = Workflow.model_validate(spec)
    version = rt.register(wf, "test")
    run_id = rt.request_run(wf.id, version, params=params, workdir=str(workdir))
    rt.wait(run_id, timeout=timeout)
    assert rt.ports is not None
    doc = services.run_status(rt.ports, run_id)
    assert doc is not None
    return doc


def statuses(doc: dict[str, Any]) -> dict[str, str]:
    return {tid: t["status"] for tid, t in doc["tasks"].items()}


ROOT = Path(__file__).resolve().parents[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """The predicate's first truthy value, looked at every 0.1 s (for processes this test
    does not control: a server, a CLI in another process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    """Whether process `pid` is still running (a zombie has exited; only its parent has yet
    to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def json_payload(body: Any, text: str | None) -> str | None:
    """A request body: `text` as it is if given, else `body` as JSON (None for no body)."""
    return text if text is not None else (None if body is None else json.dumps(body))


_TOKENS: dict[str, str] = {}


def remember_token(api_url: str, token: str) -> str:
    """Have `http_json` send `token` to the local API at `api_url` (it answers its owner
    only); returns the URL."""
    _TOKENS[api_url.rstrip("/")] = token
    return api_url


def local_api(state: dict[str, Any]) -> str:
    """The API URL in a `local up` state file (local.json), its token remembered."""
    return remember_token(str(state["api_url"]), str(state["token"]))


def http_json(
    base: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    text: str | None = None,
    headers: dict[str, str] | None = None,
    query: list[tuple[str, str]] | None = None,
    timeout: float = 30,
) -> tuple[int, Any]:
    """`METHOD base+path?query` with a JSON (or raw `text`) body; (status, the parsed JSON
    reply), error statuses included. A local API's remembered token is sent."""
    payload = json_payload(body, text)
    token = _TOKENS.get(base.rstrip("/"))
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(
        base + path + ("?" + urlencode(query) if query else ""),
        data=payload.encode() if payload is not None else None,
        method=method,
        headers={"Content-Type": "application/json", **auth, **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def cli_env(home: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "shared"), "STRATOFLOW_HOME": str(home)}


def cli(home: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`stratoflow ARGS` in a new process, with STRATOFLOW_HOME=home."""
    return subprocess.run(
        [sys.executable, "-m", "stratoflow.cli", *args],
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class LocalUp:
    """A `stratoflow local up` process; after the block, how it ended."""

    proc: subprocess.Popen[str]
    home: Path
    api: str = ""
    stderr: str = ""


@contextlib.contextmanager
def local_up(folder: Path, home: Path, *extra: str) -> Iterator[LocalUp]:
    """`stratoflow local up --dir FOLDER` on a free API port; Ctrl-C (SIGINT) at the end."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "stratoflow.cli", "local", "up", "--dir", str(folder)),
            *("--port", "0", "--grace", "1", *extra),
        ],
        env=cli_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    up = LocalUp(proc, home)

    def state() -> dict[str, Any] | None:
        try:
            found = json.loads((home / "local.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return found if found.get("api_url") else None

    try:
        up.api = local_api(wait_until(state, 60, "local up's state file"))
        yield up
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, up.stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, up.stderr = proc.communicate()
