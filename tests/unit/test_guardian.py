"""The process guardian: commands do not outlive the engine that started them.

Real processes throughout. An "engine" is a Python child running ENGINE below: it starts a
ProcessGuardian and a command through `run_command`, reports the command's process group
to a file, and is then SIGKILLed by the test, which watches /proc for what survives.
Every process a test may leave behind is SIGKILLed at teardown (the `leftovers` fixture).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stratoflow.runner.guardian import ProcessGuardian
from stratoflow.runner.process import run_command

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="the guardian tests read /proc (Linux)"
)

WITHIN_SECONDS = 10.0
"""Deadline for anything the tests wait for; generous for a loaded CI machine."""

ENGINE = r"""
import json, os, signal, subprocess, sys, threading

from stratoflow.runner.guardian import ProcessGuardian
from stratoflow.runner.process import run_command

report_path, mode, command, grace = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
# A terminal's Ctrl-C must not stop this engine in the test that sends one.
signal.signal(signal.SIGINT, signal.SIG_IGN)
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
facts = {}


def report(**more):
    facts.update(more)
    with open(report_path + ".tmp", "w") as out:
        json.dump(facts, out)
    os.replace(report_path + ".tmp", report_path)


guardian = ProcessGuardian.start(grace=grace)


class Reporting:
    def watch(self, pgid):
        guardian.watch(pgid)
        report(guardian=guardian.pid, pgid=pgid)

    def release(self, pgid):
        guardian.release(pgid)


if mode == "forked":
    # A child forked by the engine that outlives it must not hold the guardian's pipe open.
    child = os.fork()
    if child == 0:
        signal.pause()
        os._exit(0)
    report(forked=child)
if mode in ("running", "forked"):
    threading.Thread(
        target=run_command,
        args=(command,),
        kwargs={"env": ENV, "timeout": 600.0, "guard": Reporting()},
        daemon=True,
    ).start()
elif mode == "released":
    result = run_command(command, env=ENV, timeout=60.0, guard=Reporting())
    # Registered, then released while it still runs: the guardian must leave it alone.
    kept = subprocess.Popen(["sleep", "300"], start_new_session=True)
    guardian.watch(kept.pid)
    guardian.release(kept.pid)
    report(guardian=guardian.pid, exit_code=result.exit_code, released=kept.pid)
threading.Event().wait()
"""


# --- /proc ---------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, process group id) of `pid`, None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[2])


def _is_running(pid: int) -> bool:
    """Whether `pid` is alive; a zombie waiting for a reaper that may never come is not."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _live_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of process group `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            state, group = stat
            if group == pgid and state not in ("Z", "X"):
                members.append(int(entry))
    return members


def _wait_until(condition: Callable[[], bool], what: str) -> float:
    """Poll `condition` until it holds; fail after WITHIN_SECONDS. Returns seconds taken."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > WITHIN_SECONDS:
            pytest.fail(f"not within {WITHIN_SECONDS} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start


# --- engines -------------------------------------------------------------------------------


class Leftovers:
    """Processes and groups to SIGKILL at teardown, whatever the test did."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.groups: list[int] = []
        self.children: list[subprocess.Popen[bytes]] = []

    def cleanup(self) -> None:
        """SIGKILL everything recorded; what is already gone is skipped."""
        for pgid in self.groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for child in self.children:
            child.kill()
            child.wait()


@pytest.fixture
def leftovers() -> Iterator[Leftovers]:
    kept = Leftovers()
    try:
        yield kept
    finally:
        kept.cleanup()


def _start_engine(
    tmp_path: Path,
    leftovers: Leftovers,
    *,
    mode: str,
    command: str,
    grace: float = 2.0,
    new_session: bool = False,
) -> tuple[subprocess.Popen[bytes], Path]:
    report = tmp_path / "engine.json"
    engine = subprocess.Popen(
        [sys.executable, "-c", ENGINE, str(report), mode, command, str(grace)],
        stdin=subprocess.DEVNULL,
        start_new_session=new_session,
    )
    leftovers.children.append(engine)
    return engine, report


def _facts(report: Path, *keys: str) -> dict[str, int]:
    """The engine's report once it holds all of `keys`."""

    def complete() -> bool:
        return report.exists() and all(key in json.loads(report.read_text()) for key in keys)

    _wait_until(complete, f"the engine reports {keys}")
    facts: dict[str, int] = json.loads(report.read_text())
    return facts


def _running_command(
    tmp_path: Path,
    leftovers: Leftovers,
    command: str,
    *,
    mode: str = "running",
    grace: float = 2.0,
    new_session: bool = False,
) -> tuple[subprocess.Popen[bytes], int, int]:
    """An engine running `command` (three processes); returns it, its pgid, its guardian."""
    engine, report = _start_engine(
        tmp_path, leftovers, mode=mode, command=command, grace=grace, new_session=new_session
    )
    facts = _facts(report, "guardian", "pgid")
    if "forked" in facts:
        leftovers.pids.append(facts["forked"])
    pgid, guardian = facts["pgid"], facts["guardian"]
    leftovers.groups.append(pgid)
    leftovers.pids.append(guardian)
    _wait_until(lambda: len(_live_members(pgid)) == 3, "the shell and both sleeps run")
    return engine, pgid, guardian


def _kill_engine(engine: subprocess.Popen[bytes]) -> None:
    engine.send_signal(signal.SIGKILL)
    engine.wait()


# --- the engine dies ---------------------------------------------------------------------


def test_a_sigkilled_engines_command_group_is_killed_and_the_guardian_exits(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    engine, pgid, guardian = _running_command(tmp_path, leftovers, "sleep 300 & sleep 300; wait")
    assert _is_running(guardian)

    _kill_engine(engine)

    took = _wait_until(lambda: not _live_members(pgid), f"group {pgid} is gone")
    _wait_until(lambda: not _is_running(guardian), "the guardian exits")
    print(f"group killed {took * 1000:.0f} ms after the engine died")


def test_a_group_that_ignores_sigterm_is_sigkilled_after_the_grace(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    # An ignored signal stays ignored across fork and exec: all three ignore SIGTERM.
    engine, pgid, guardian = _running_command(
        tmp_path, leftovers, "trap '' TERM; sleep 300 & sleep 300; wait", grace=0.3
    )

    _kill_engine(engine)

    took = _wait_until(lambda: not _live_members(pgid), f"group {pgid} is gone")
    _wait_until(lambda: not _is_running(guardian), "the guardian exits")
    assert took >= 0.3, "killed before the grace period was over: SIGKILL came too soon"


def test_ctrl_c_at_the_engine_leaves_the_guardian_on_guard(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    engine, pgid, guardian = _running_command(
        tmp_path, leftovers, "sleep 300 & sleep 300; wait", new_session=True
    )

    # What a terminal does on Ctrl-C: SIGINT to the foreground process group (the engine's).
    os.killpg(engine.pid, signal.SIGINT)
    # And in case one reaches the guardian anyway (a kill by hand, a stray killpg).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(guardian, signum)
    assert engine.poll() is None
    _kill_engine(engine)

    # Only a guardian that survived those signals can have killed the group.
    _wait_until(lambda: not _live_members(pgid), f"group {pgid} is gone")
    _wait_until(lambda: not _is_running(guardian), "the guardian exits")


def test_a_child_forked_by_the_engine_does_not_keep_the_guardian_waiting(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    engine, pgid, guardian = _running_command(
        tmp_path, leftovers, "sleep 300 & sleep 300; wait", mode="forked"
    )

    _kill_engine(engine)

    _wait_until(lambda: not _live_members(pgid), f"group {pgid} is gone")
    _wait_until(lambda: not _is_running(guardian), "the guardian exits")


def test_a_released_group_and_unrelated_processes_survive_the_engine(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    unrelated = subprocess.Popen(["sleep", "300"], start_new_session=True)
    leftovers.children.append(unrelated)
    engine, report = _start_engine(tmp_path, leftovers, mode="released", command="true")
    facts = _facts(report, "guardian", "released", "exit_code")
    released, guardian = facts["released"], facts["guardian"]
    leftovers.pids += [released, guardian]
    assert facts["exit_code"] == 0

    _kill_engine(engine)

    _wait_until(lambda: not _is_running(guardian), "the guardian exits")
    assert _is_running(released)
    assert unrelated.poll() is None


# --- the engine's side ---------------------------------------------------------------------


def test_start_time_is_well_under_a_second() -> None:
    start = time.perf_counter()
    guardian = ProcessGuardian.start()
    started = time.perf_counter() - start
    try:
        assert _is_running(guardian.pid)
    finally:
        guardian.close()
    print(f"ProcessGuardian.start() took {started * 1000:.1f} ms (ready to guard)")
    assert started < 1.0


def test_close_with_nothing_registered_exits_at_once() -> None:
    with ProcessGuardian.start() as guardian:
        pid = guardian.pid
        start = time.monotonic()
    closed = time.monotonic() - start

    assert not _is_running(pid)
    # Well under the 2 s grace: nothing was registered, so nothing was waited for.
    assert closed < 1.0
    guardian.close()  # a second close is a no-op


def test_close_with_a_group_still_registered_kills_it(leftovers: Leftovers) -> None:
    orphan = subprocess.Popen(["sleep", "300"], start_new_session=True)
    leftovers.children.append(orphan)
    guardian = ProcessGuardian.start()
    guardian.watch(orphan.pid)

    guardian.close()

    _wait_until(lambda: orphan.poll() is not None, "the registered group is killed")
    assert orphan.returncode == -signal.SIGTERM


def test_watch_and_release_do_not_raise_once_the_guardian_is_gone() -> None:
    guardian = ProcessGuardian.start()
    os.kill(guardian.pid, signal.SIGKILL)
    _wait_until(lambda: not _is_running(guardian.pid), "the guardian dies")

    guardian.watch(999_999)
    guardian.release(999_999)
    guardian.close()
    guardian.watch(999_999)


@pytest.mark.parametrize("pgid", [0, 1, -5])
def test_a_pgid_that_would_signal_everyone_is_refused(pgid: int) -> None:
    with ProcessGuardian.start() as guardian, pytest.raises(ValueError):
        guardian.watch(pgid)


def test_run_command_registers_the_shells_group_and_releases_it_before_the_reap() -> None:
    calls: list[tuple[str, int, tuple[str, int] | None]] = []

    class Recording:
        def watch(self, pgid: int) -> None:
            calls.append(("watch", pgid, _stat(pgid)))

        def release(self, pgid: int) -> None:
            calls.append(("release", pgid, _stat(pgid)))

    result = run_command(
        "echo $$; sleep 300 >/dev/null 2>&1 &",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        timeout=10.0,
        guard=Recording(),
    )

    shell = int(result.output_tail.split()[0])
    assert [(call, pgid) for call, pgid, _ in calls] == [("watch", shell), ("release", shell)]
    # The shell leads its group when watched, and is still an unreaped zombie when released:
    # its pid cannot have been reused as another group's id in between.
    watched, released = calls[0][2], calls[1][2]
    assert watched is not None and watched[1] == shell
    assert released == ("Z", shell)
    # Released after the group's SIGKILL: the background sleep dies without the guardian.
    _wait_until(lambda: not _live_members(shell), "the group is gone")
