"""The embedded engine's state is on disk: what a killed engine recorded is not lost, what
it finished does not run again, and its commands die with it (architecture: invariant 11).

Real processes throughout: `stratoflow local up` and `stratoflow run` as subprocesses,
killed with SIGKILL, restarted on the same home.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import alive, cli, cli_env, http_json, local_api, wait_until

WIDTH = 32
LOCAL_UP = (sys.executable, "-m", "stratoflow.cli", "local", "up", "--port", "0")


def _workflow(wf_id: str, work: Path, pids: Path) -> str:
    """A root, WIDTH parallel tasks and a sink; every command records its attempt's start
    (work.log: one line per task and attempt) and its pid, then works for a while."""
    record = (
        f'echo "$STRATOFLOW_TASK_ID $STRATOFLOW_ATTEMPT" >> {work}; '
        f"echo $$ > {pids}/$STRATOFLOW_TASK_ID.$STRATOFLOW_ATTEMPT; sleep 0.4"
    )
    tasks = [f"  - id: root\n    command: '{record}'\n"]
    tasks += [
        f"  - id: m{i:02d}\n    depends: [root]\n    command: '{record}'\n" for i in range(WIDTH)
    ]
    tasks.append(
        "  - id: sink\n    depends: ["
        + ", ".join(f"m{i:02d}" for i in range(WIDTH))
        + f"]\n    command: '{record}'\n"
    )
    return f"id: {wf_id}\ndefaults: {{retries: 2, timeout: 60}}\ntasks:\n" + "".join(tasks)


@dataclass
class Engine:
    proc: subprocess.Popen[str]
    stderr: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextmanager
def _engine(folder: Path, home: Path) -> Iterator[Engine]:
    """`stratoflow local up` (4 workers) in its own process group; killed at the end if it
    still runs; its stderr kept."""
    proc = subprocess.Popen(
        [*LOCAL_UP, "--dir", str(folder), "--grace", "1", "--workers", "4"],
        env=cli_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    engine = Engine(proc)
    try:
        yield engine
    finally:
        if proc.poll() is None:
            proc.kill()
        engine.stderr = proc.communicate(timeout=30)[1]


def _api(home: Path, engine: Engine) -> str:
    proc = engine.proc

    def state() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"local up exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            found = json.loads((home / "local.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return local_api(found) if found.get("pid") == proc.pid else None

    return str(wait_until(state, 60, "local up's API"))


def _doc(api: str, run_id: str) -> dict[str, Any]:
    status, doc = http_json(api, "GET", f"/runs/{run_id}")
    assert status == 200, doc
    return doc


def test_a_killed_engine_resumes_its_run_after_a_restart(tmp_path: Path) -> None:
    folder, home, pids = tmp_path / "flows", tmp_path / "home", tmp_path / "pids"
    folder.mkdir(), pids.mkdir()
    work = tmp_path / "work.log"
    (folder / "wide.yaml").write_text(_workflow("wide", work, pids))

    with _engine(folder, home) as first:
        api = _api(home, first)
        wait_until(  # active, not only stored
            lambda: http_json(api, "GET", "/workflows/wide")[1].get("active_version"), 30, "wide"
        )
        status, started = http_json(api, "POST", "/workflows/wide/runs", body={})
        assert status == 202, started
        run_id = started["run_id"]

        def midway() -> bool:
            tasks = _doc(api, run_id)["tasks"].values()
            done = sum(t["status"] == "succeeded" for t in tasks)
            return 5 <= done <= WIDTH - 5

        wait_until(midway, 60, "the run to be under way")
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
    before = Counter(line.split()[0] for line in work.read_text().splitlines())

    # Every command the killed engine started is gone: its guardian saw the engine die.
    started_pids = [int(p.read_text()) for p in pids.iterdir() if p.read_text().strip()]
    wait_until(lambda: not any(alive(pid) for pid in started_pids), 15, "orphaned commands")

    # Its state file is left behind, but nobody holds the engine lock: a command reads the
    # home's state directly instead of failing on a dead API.
    assert (home / "local.json").exists()
    listed = cli(home, "runs", "wide", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [run_id]

    with _engine(folder, home) as second:
        api = _api(home, second)
        doc = wait_until(
            lambda: (d := _doc(api, run_id))["status"] in ("succeeded", "failed") and d,
            90,
            "the resumed run to end",
        )
        second.proc.send_signal(signal.SIGINT)
        second.proc.wait(timeout=30)
    assert doc["status"] == "succeeded", doc
    # The restarted engine found the attempts that were running when the first one died.
    took_over = re.search(r"took over \d+ message\(s\) and (\d+) running attempt", second.stderr)
    assert took_over and int(took_over.group(1)) >= 1, second.stderr
    assert all(t["status"] == "succeeded" for t in doc["tasks"].values())

    lines = work.read_text().splitlines()
    # Each attempt's work is recorded once: no (task, attempt) ran twice …
    assert len(lines) == len(set(lines)), Counter(lines).most_common(3)
    attempts = Counter(line.split()[0] for line in lines)
    for task_id, t in doc["tasks"].items():
        # … the attempt that succeeded recorded its work, and no attempt ran that the
        # document does not count (one claimed by the killed engine may have died before
        # its command wrote anything: counted, with no line)
        assert f"{task_id} {t['attempts']}" in lines, task_id
        assert 1 <= attempts[task_id] <= t["attempts"], task_id
    # A task that had finished before the kill never ran again.
    finished_before = [t for t, n in before.items() if n == 1 and attempts[t] == 1]
    assert len(finished_before) >= 5
    # The history survives: listed by `stratoflow runs` with no engine running.
    listed = cli(home, "runs", "wide", "--json")
    assert json.loads(listed.stdout)[0]["status"] == "succeeded"


def test_a_second_engine_on_the_same_home_refuses(tmp_path: Path) -> None:
    folder, home = tmp_path / "flows", tmp_path / "home"
    folder.mkdir()
    with _engine(folder, home) as first:
        _api(home, first)
        second = subprocess.run(
            [*LOCAL_UP, "--dir", str(folder)],
            env=cli_env(home),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2
        assert "another stratoflow engine serves" in second.stderr
        assert str(first.pid) in second.stderr and "Traceback" not in second.stderr
        assert first.proc.poll() is None  # the first one is untouched


def test_several_runs_at_once_share_one_home(tmp_path: Path) -> None:
    """Three `stratoflow run` processes on one home: each runs its own run to the end
    (SQLite's locking, and a queue channel per process)."""
    home = tmp_path / "home"
    flow = tmp_path / "chain.yaml"
    steps = "".join(
        f"  - id: s{i}\n    command: echo s{i}\n" + (f"    depends: [s{i - 1}]\n" if i else "")
        for i in range(15)
    )
    flow.write_text(f"id: chain\ntasks:\n{steps}")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "stratoflow.cli", "run", str(flow), "--json"],
            env=cli_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    docs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        docs.append(json.loads(out))
    assert all(d["status"] == "succeeded" for d in docs)
    assert len({d["run_id"] for d in docs}) == 3
    listed = json.loads(cli(home, "runs", "chain", "--json").stdout)
    assert sorted(r["run_id"] for r in listed) == sorted(d["run_id"] for d in docs)


def test_a_killed_run_process_is_finished_by_the_next_engine(tmp_path: Path) -> None:
    """`stratoflow run` killed mid-run: its queued work and running attempts are taken
    over by the `local up` that next serves the home, and the run ends."""
    home, folder = tmp_path / "home", tmp_path / "flows"
    folder.mkdir()
    flow = tmp_path / "slow.yaml"
    steps = "".join(
        f"  - id: s{i}\n    command: sleep 0.3\n" + (f"    depends: [s{i - 1}]\n" if i else "")
        for i in range(6)
    )
    flow.write_text(f"id: slow\ndefaults: {{retries: 1}}\ntasks:\n{steps}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stratoflow.cli", "run", str(flow), "--json"],
        env=cli_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def second_step_started() -> bool:
        out = cli(home, "runs", "slow", "--json")
        runs = json.loads(out.stdout) if out.returncode == 0 else []
        if not runs:
            return False
        doc = json.loads(cli(home, "status", runs[0]["run_id"], "--json").stdout)
        return (
            doc["tasks"]["s1"]["status"] != "cancelled"
            and doc["tasks"]["s0"]["status"] == "succeeded"
        )

    wait_until(second_step_started, 60, "the run to be under way")
    proc.kill()
    proc.wait(timeout=10)
    run_id = json.loads(cli(home, "runs", "slow", "--json").stdout)[0]["run_id"]
    with _engine(folder, home) as engine:
        api = _api(home, engine)
        doc = wait_until(
            lambda: (d := _doc(api, run_id))["status"] in ("succeeded", "failed") and d,
            60,
            "the adopted run to end",
        )
    assert doc["status"] == "succeeded", doc


def test_a_run_triggered_with_no_engine_runs_when_one_starts(tmp_path: Path) -> None:
    """With no engine running the CLI records and queues the run in the home; the next
    `local up` runs it once, as queued work, not as work a dead engine left running."""
    folder, home = tmp_path / "flows", tmp_path / "home"
    folder.mkdir()
    flow = tmp_path / "later.yaml"
    flow.write_text("id: later\ntasks:\n  - id: a\n    command: sleep 1.5\n")
    assert cli(home, "upload", str(flow)).returncode == 0
    triggered = cli(home, "trigger", "later")
    assert triggered.returncode == 0, triggered.stderr
    run_id = triggered.stdout.strip()
    with _engine(folder, home) as engine:
        api = _api(home, engine)
        doc = wait_until(
            lambda: (d := _doc(api, run_id))["status"] in ("succeeded", "failed") and d,
            60,
            "the queued run to end",
        )
    assert doc["status"] == "succeeded", doc
    assert doc["tasks"]["a"]["attempts"] == 1
    assert "took over" not in engine.stderr
