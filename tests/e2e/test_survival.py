"""Every loop of the local engine survives a hiccup, on both engines: an injected
`sqlite3.OperationalError` (the embedded engine: a database locked beyond its busy
timeout) or `botocore.exceptions.ConnectionClosedError` (the AWS adapters on the moto
emulator: the error a probe saw escape `local up`'s minute tick) is logged, backed off
and tried again, and the engine goes on to finish a run afterwards. Only a failure the
engine cannot recover from stops it, cleanly.

Loops: the task pump and the completion pump (receives), the deleter, `stratoflow run`'s
wait for its run, and `local up`'s folder scan, scheduler tick (due workflows and the
lease sweep) and adoption of dead processes' work (embedded only).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError

from stratoflow.local.failures import EngineFailed, unrecoverable
from stratoflow.local.runtime import LocalRuntime
from stratoflow.local.server import AcceleratedClock, FolderServer
from tests.support import alive, cli, cli_env, run_workflow, wait_until

ENGINES = ["embedded", "emulator"]
CHAIN = {
    "tasks": [
        {"id": "a", "command": "true"},
        {"id": "b", "command": "true", "depends": ["a"]},
        {"id": "c", "command": "true", "depends": ["b"]},
    ]
}


def _hiccup(engine: str) -> BaseException:
    if engine == "embedded":
        return sqlite3.OperationalError("database is locked")
    return ConnectionClosedError(endpoint_url="http://127.0.0.1:1/")


class Flaky:
    """Wraps a callable: its first `failures` calls (of each queue, or of each call that
    `when` selects) raise `error`; the rest pass through."""

    def __init__(
        self,
        call: Callable[..., Any],
        failures: int,
        error: BaseException,
        when: Callable[[dict[str, Any]], bool] = lambda kwargs: True,
    ) -> None:
        self._call = call
        self._failures = failures
        self._error = error
        self._when = when
        self._lock = threading.Lock()
        self.raised: Counter[str] = Counter()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = str(kwargs.get("QueueUrl", ""))
        with self._lock:
            fail = self._when(kwargs) and self.raised[key] < self._failures
            if fail:
                self.raised[key] += 1
        if fail:
            raise self._error
        return self._call(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.raised.values())


def _sqs(rt: LocalRuntime) -> Any:
    assert rt.clients is not None
    return rt.clients.sqs


@pytest.fixture
def make_runtime(tmp_path: Path) -> Iterator[Callable[..., LocalRuntime]]:
    made: list[LocalRuntime] = []

    def make(engine: str, **kwargs: Any) -> LocalRuntime:
        rt = LocalRuntime(
            state_dir=tmp_path / f"home-{len(made)}",
            emulator=engine == "emulator",
            redelivery_delay=0.05,
            **kwargs,
        )
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.stop()


@pytest.mark.parametrize("engine", ENGINES)
def test_the_pumps_and_the_deleter_survive_hiccups(
    make_runtime: Callable[..., LocalRuntime], tmp_path: Path, engine: str
) -> None:
    rt = make_runtime(engine, workers=2, pump=False).start()  # the deleter runs
    sqs = _sqs(rt)
    receive = Flaky(sqs.receive_message, 3, _hiccup(engine))
    delete = Flaky(sqs.delete_message_batch, 1, _hiccup(engine))
    # On the instance the pumps call: their very first receives raise.
    sqs.receive_message, sqs.delete_message_batch = receive, delete
    rt._spawn(rt._pump_tasks, "stratoflow-task-pump")
    rt._spawn(rt._pump_completions, "stratoflow-completion-pump-0")
    doc = run_workflow(rt, CHAIN, tmp_path, timeout=60)
    assert rt.settings is not None
    assert receive.raised[rt.settings.task_queue_url] == 3
    assert receive.raised[rt.settings.completion_queue_url] == 3
    rt.stop()  # the deleter sends what it still holds
    assert sorted(delete.raised.values()) == [1, 1]
    assert doc["status"] == "succeeded"
    assert all(t["attempts"] == 1 for t in doc["tasks"].values())
    assert rt.failure is None


@pytest.mark.parametrize("engine", ENGINES)
def test_waiting_for_a_run_survives_hiccups(
    make_runtime: Callable[..., LocalRuntime], tmp_path: Path, engine: str
) -> None:
    """`stratoflow run`'s foreground loop: its reads of the run fail, and it waits on."""
    rt = make_runtime(engine, workers=2).start()
    assert rt.ports is not None
    get_run = Flaky(rt.ports.runs.get_run, 3, _hiccup(engine))
    rt.ports.runs.get_run = get_run  # type: ignore[method-assign]
    doc = run_workflow(rt, CHAIN, tmp_path, timeout=60)
    assert get_run.total == 3
    assert doc["status"] == "succeeded"


@pytest.mark.parametrize("engine", ENGINES)
def test_local_ups_scan_tick_and_adoption_survive_hiccups(
    make_runtime: Callable[..., LocalRuntime], tmp_path: Path, engine: str
) -> None:
    rt = make_runtime(engine, workers=2).start()
    assert rt.ports is not None and rt.clients is not None
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "minutely.yaml").write_text(
        'id: minutely\nschedule: "* * * * *"\ntasks:\n  - id: a\n    command: "true"\n'
    )
    error = _hiccup(engine)
    # The scan's upload, the tick's query of due workflows and its lease sweep (the step
    # that let a ConnectionClosedError escape), and the adoption of dead processes' work.
    uploads = Flaky(rt.clients.s3.put_object, 2, error)
    rt.clients.s3.put_object = uploads  # type: ignore[method-assign]
    due = Flaky(rt.ports.definitions.due_workflows, 2, error)
    rt.ports.definitions.due_workflows = due  # type: ignore[method-assign]
    sweep = Flaky(rt.ports.runs.expired_attempts, 2, error)
    rt.ports.runs.expired_attempts = sweep  # type: ignore[method-assign]
    flaky = [uploads, due, sweep]
    if rt.engine is not None:
        adopt = Flaky(rt.engine.adopt, 2, error)
        rt.engine.adopt = adopt  # type: ignore[method-assign]
        flaky.append(adopt)

    said: list[str] = []
    started = threading.Event()

    def say(line: str) -> None:
        said.append(line)
        if line.startswith("started minutely@"):
            started.set()

    # 60 times faster: a minute's tick every second.
    rt.ports.clock = AcceleratedClock(60, time.time(), datetime.now(UTC))
    server = FolderServer(folder, rt, speed=60, say=say, api_port=None)
    serving = threading.Thread(target=server.serve, daemon=True)
    serving.start()
    try:
        assert started.wait(60), said
        run_id = next(s.split()[1] for s in said if s.startswith("started minutely@"))
        assert rt.wait(run_id, timeout=60).status.value == "succeeded"
    finally:
        server.stop()
        serving.join(timeout=30)
    assert not serving.is_alive()
    assert [f.total for f in flaky] == [2] * len(flaky)
    # One line when a step starts failing, one when it works again (the tick failed four
    # times in a row: twice at the due workflows, then twice at the lease sweep).
    steps = ["looking at the folder", "the scheduler's tick"]
    if rt.engine is not None:
        steps.append("taking over dead engines' work")
    warned = sorted(
        s.split(" failed (")[0].removeprefix("warning: ") for s in said if "failed (" in s
    )
    assert warned == sorted(steps), said
    assert "the scheduler's tick works again (after 4 failure(s))" in said, said
    assert rt.failure is None


# ---------------------------------------------------------------- what stops the engine


def _corrupt_database_error(tmp_path: Path) -> sqlite3.DatabaseError:
    """A real one, as SQLite raises it for a file that is not a database."""
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    try:
        sqlite3.connect(garbage).execute("SELECT * FROM sqlite_master")
    except sqlite3.DatabaseError as exc:
        return exc
    raise AssertionError("random bytes read as a database")


def test_what_counts_as_unrecoverable(tmp_path: Path) -> None:
    home = tmp_path / "db"
    busy_holder = sqlite3.connect(home, isolation_level=None)
    busy_holder.execute("CREATE TABLE t (x)")
    busy_holder.execute("BEGIN IMMEDIATE")
    try:
        sqlite3.connect(home, timeout=0).execute("INSERT INTO t VALUES (1)")
    except sqlite3.OperationalError as exc:
        locked = exc
    busy_holder.execute("ROLLBACK")
    assert unrecoverable(locked) is None  # SQLITE_BUSY: wait and try again
    assert unrecoverable(ConnectionClosedError(endpoint_url="http://x/")) is None
    assert unrecoverable(sqlite3.OperationalError("database is locked")) is None
    corrupt = unrecoverable(_corrupt_database_error(tmp_path))
    assert corrupt is not None and "SQLITE_NOTADB" in corrupt
    full = unrecoverable(OSError(28, "No space left on device"))
    assert full is not None and "ENOSPC" in full


def test_a_corrupt_database_stops_the_engine_instead_of_spinning(
    make_runtime: Callable[..., LocalRuntime], tmp_path: Path
) -> None:
    rt = make_runtime("embedded", workers=1).start()
    sqs = _sqs(rt)
    broken = Flaky(sqs.receive_message, 1_000_000, _corrupt_database_error(tmp_path))
    sqs.receive_message = broken
    assert rt.failed.wait(30)
    assert rt.failure is not None and "SQLITE_NOTADB" in rt.failure
    # Each pump stopped at its first such failure: no retrying a file that is not one.
    for t in rt._threads:
        if "pump" in t.name:
            t.join(timeout=10)
            assert not t.is_alive(), t.name
    assert 1 <= broken.total <= 2
    server = FolderServer(tmp_path, rt, say=lambda _: None, api_port=None)
    with pytest.raises(EngineFailed, match="SQLITE_NOTADB"):
        server.serve()
    with pytest.raises(EngineFailed, match="SQLITE_NOTADB"):
        rt.wait("any-run", timeout=5)


def test_local_up_whose_database_is_deleted_stops_cleanly(tmp_path: Path) -> None:
    """SQLite raises nothing when its file is deleted (writes go on to the unlinked file,
    lost at exit): `local up` notices, stops its commands, removes its state file, says
    why in one line and exits 1."""
    folder, home = tmp_path / "flows", tmp_path / "home"
    folder.mkdir()
    pid_file = tmp_path / "pid"
    (folder / "long.yaml").write_text(
        f"id: long\ntasks:\n  - id: a\n    command: 'sleep 60 & echo $! > {pid_file}; wait'\n"
    )
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "stratoflow.cli", "local", "up", "--dir", str(folder)),
            *("--port", "0", "--grace", "30"),
        ],
        env=cli_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: (home / "local.json").exists(), 60, "local up's state file")

        def registered() -> bool:
            listed = cli(home, "workflows", "--json")
            return listed.returncode == 0 and "long" in listed.stdout

        wait_until(registered, 30, "the workflow")
        assert cli(home, "trigger", "long").returncode == 0
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 60, "the task")
        command = int(pid_file.read_text())
        (home / "engine.db").unlink()
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    [line] = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert "engine.db was deleted" in line and "stopped" in line, stderr
    assert not (home / "local.json").exists()
    wait_until(lambda: not alive(command), 15, "the command to be stopped")


def test_run_whose_database_is_deleted_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    pid_file = tmp_path / "pid"
    flow = tmp_path / "long.yaml"
    flow.write_text(
        f"id: long\ntasks:\n  - id: a\n    command: 'sleep 60 & echo $! > {pid_file}; wait'\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "stratoflow.cli", "run", str(flow), "--json"],
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 60, "the task")
        command = int(pid_file.read_text())
        (home / "engine.db").unlink()
        out, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    assert out == "" and "Traceback" not in stderr
    assert "engine.db was deleted" in stderr
    wait_until(lambda: not alive(command), 15, "the command to be stopped")
