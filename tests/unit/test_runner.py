"""The runner: one shell command, its process group, timeout, cancel and bounded output.

These tests start real processes (`/bin/sh`, `sleep`), so they are POSIX-only. Every
command that could outlive a test has its pids written to a file under tmp_path, and the
test checks that none of them survive `run_command`.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratoflow.runner import CommandResult, run_command
from stratoflow.runner.output import decode_tail
from stratoflow.runner.process import DRAIN_WINDOW_SECONDS

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the runner needs a POSIX shell")

# Small enough to keep the kill tests fast, long enough to show the SIGTERM step happens.
KILL_GRACE = 0.2


def _env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **extra}


def _run(command: str, **kwargs: object) -> CommandResult:
    kwargs.setdefault("env", _env())
    kwargs.setdefault("timeout", 10.0)
    kwargs.setdefault("kill_grace", KILL_GRACE)
    return run_command(command, **kwargs)  # type: ignore[arg-type]


def _is_running(pid: int) -> bool:
    """Whether `pid` is alive; a killed process waiting for its reaper (a zombie) is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): ask the kernel, zombies count as alive there
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _survivors(pid_file: Path, *, expected: int) -> list[int]:
    """Pids from `pid_file` still running once SIGKILL has had time to land (at most 2 s)."""
    pids = [int(line) for line in pid_file.read_text().split()]
    assert len(pids) == expected, f"the command wrote {pids}, expected {expected} pids"
    # SIGKILL is delivered asynchronously; a process may take a moment to finish dying.
    deadline = time.monotonic() + 2.0
    while (alive := [pid for pid in pids if _is_running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return alive


# --- exit status -------------------------------------------------------------------------


def test_exit_code_is_the_shells_exit_status_and_both_streams_share_the_tail() -> None:
    result = _run("echo out; echo err >&2; exit 3")

    assert result.exit_code == 3
    assert (result.timed_out, result.cancelled) == (False, False)
    assert result.output_tail == "out\nerr\n"
    assert result.output_bytes == len("out\nerr\n")
    assert result.log_path is None


def test_command_not_found_is_exit_127_with_the_shells_message() -> None:
    result = _run("no-such-command-stratoflow")

    assert result.exit_code == 127
    assert "no-such-command-stratoflow" in result.output_tail
    assert "not found" in result.output_tail


def test_a_signal_from_elsewhere_is_reported_as_128_plus_its_number() -> None:
    result = _run("kill -TERM $$")

    assert result.exit_code == 128 + 15
    assert (result.timed_out, result.cancelled) == (False, False)


# --- what the command sees ---------------------------------------------------------------


def test_environment_is_exactly_the_one_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATOFLOW_TEST_LEAK", "from-the-parent")

    result = _run(
        'echo "greeting=$GREETING leak=${STRATOFLOW_TEST_LEAK-unset}"',
        env=_env(GREETING="hello"),
    )

    assert result.output_tail == "greeting=hello leak=unset\n"


def test_cwd_is_honoured(tmp_path: Path) -> None:
    (tmp_path / "marker.txt").write_text("here\n")

    result = _run("cat marker.txt", cwd=str(tmp_path))

    assert (result.exit_code, result.output_tail) == (0, "here\n")


def test_a_missing_cwd_raises_instead_of_running_elsewhere(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _run("true", cwd=str(tmp_path / "missing"))


def test_stdin_is_empty_so_a_reader_does_not_wait_forever() -> None:
    result = _run("cat; echo read-all", timeout=5.0)

    assert (result.exit_code, result.timed_out, result.output_tail) == (0, False, "read-all\n")


# --- output tail -------------------------------------------------------------------------


def test_tail_is_the_last_bytes_of_the_output() -> None:
    full = "".join(f"{n}\n" for n in range(1, 100_001))

    result = _run("seq 1 100000", tail_bytes=20)

    assert result.output_tail == full[-20:]
    assert result.output_bytes == len(full)


def test_tail_never_starts_with_half_a_character() -> None:
    # Ten "é" (0xC3 0xA9) are 20 bytes; the last 5 start inside a character.
    result = _run("printf '" + "\\303\\251" * 10 + "'", tail_bytes=5)

    assert result.output_tail == "éé"


def test_non_utf8_output_is_replaced_not_fatal() -> None:
    result = _run(r"printf '\377\376 ok\n'")

    assert result.exit_code == 0
    assert result.output_tail == "\ufffd\ufffd ok\n"


def test_output_shorter_than_the_tail_shows_even_a_leading_stray_byte() -> None:
    result = _run(r"printf '\251ok'")

    assert result.output_tail == "\ufffdok"


def test_tail_stays_within_its_byte_budget_even_when_replacement_characters_grow_it() -> None:
    # Each invalid byte decodes to U+FFFD, three bytes in UTF-8.
    result = _run(r"printf '\377\377\377\377'", tail_bytes=4)

    assert result.output_tail == "\ufffd"
    assert result.output_bytes == 4


def test_zero_tail_bytes_keeps_no_output_but_still_counts_it() -> None:
    result = _run("echo hello", tail_bytes=0)

    assert (result.output_tail, result.output_bytes) == ("", 6)


@given(data=st.binary(max_size=64), limit=st.integers(min_value=0, max_value=70))
def test_decode_tail_of_any_bytes_fits_the_limit(data: bytes, limit: int) -> None:
    assert len(decode_tail(data, limit).encode("utf-8")) <= limit


@given(text=st.text(max_size=40), limit=st.integers(min_value=0, max_value=200))
def test_decode_tail_of_utf8_is_its_longest_whole_character_suffix(text: str, limit: int) -> None:
    encoded = text.encode("utf-8")

    tail = decode_tail(encoded, limit).encode("utf-8")

    assert encoded.endswith(tail)
    # At most the 3 trailing bytes of one cut character are dropped.
    assert len(tail) > min(len(encoded), limit) - 4


def test_fifty_megabytes_of_output_are_counted_but_not_kept_in_memory() -> None:
    tracemalloc.start()
    try:
        result = _run("head -c 50000000 /dev/zero | tr '\\0' x", timeout=60.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.exit_code == 0
    assert result.output_bytes == 50_000_000
    assert result.output_tail == "x" * 4096
    # Chunks of 64 KiB and a 4 KiB tail: nowhere near the 50 MB that went through.
    assert peak < 2 * 1024 * 1024, f"peak traced memory {peak} bytes"


def test_full_output_is_appended_to_the_log_file(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "run-1" / "task.log"

    first = _run("seq 1 2000", log_path=str(log_path), tail_bytes=10)
    _run("echo again", log_path=str(log_path))

    assert first.log_path == str(log_path)
    assert log_path.read_text() == "".join(f"{n}\n" for n in range(1, 2001)) + "again\n"


# --- timeout and cancel ------------------------------------------------------------------


def test_timeout_kills_background_jobs_and_grandchildren(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    command = (
        """sh -c 'sleep 300 & echo $! >> "$PIDS"; sleep 300 & echo $! >> "$PIDS"; wait' &"""
        """ echo $! >> "$PIDS"; wait"""
    )

    result = _run(command, env=_env(PIDS=str(pids)), timeout=0.5)

    assert (result.timed_out, result.cancelled, result.exit_code) == (True, False, None)
    assert 0.5 <= result.duration < 5.0
    assert _survivors(pids, expected=3) == []


def test_timeout_sigkills_processes_that_ignore_sigterm(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    command = 'trap "" TERM; echo $$ >> "$PIDS"; sleep 300 & echo $! >> "$PIDS"; wait'

    result = _run(command, env=_env(PIDS=str(pids)), timeout=0.5)

    assert (result.timed_out, result.exit_code) == (True, None)
    # Both ignored SIGTERM, so only the SIGKILL after the grace period ended them.
    assert result.duration >= 0.5 + KILL_GRACE
    assert _survivors(pids, expected=2) == []


def test_timeout_sends_sigterm_first_and_keeps_what_the_command_prints_on_it() -> None:
    command = "trap 'echo cleaning up; exit 1' TERM; echo started; sleep 300 & wait"

    result = _run(command, timeout=0.5, kill_grace=5.0)

    assert (result.timed_out, result.exit_code) == (True, None)
    assert result.output_tail == "started\ncleaning up\n"
    # The group exited on SIGTERM, so the long grace period was not waited out.
    assert result.duration < 3.0


def test_cancel_kills_the_process_group_promptly(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    try:
        result = _run(
            'sleep 300 & echo $! >> "$PIDS"; wait',
            env=_env(PIDS=str(pids)),
            timeout=60.0,
            cancel=cancel,
        )
    finally:
        timer.cancel()
        timer.join()

    assert (result.cancelled, result.timed_out, result.exit_code) == (True, False, None)
    assert result.duration < 3.0
    assert _survivors(pids, expected=1) == []


def test_an_already_set_cancel_stops_the_command_at_once() -> None:
    cancel = threading.Event()
    cancel.set()

    result = _run("sleep 300", cancel=cancel, timeout=60.0)

    assert (result.cancelled, result.exit_code) == (True, None)
    assert result.duration < 3.0


# --- after the shell exits ---------------------------------------------------------------


def test_a_background_job_holding_the_pipe_does_not_hang_the_run(tmp_path: Path) -> None:
    pids = tmp_path / "pids"

    result = _run('sleep 300 & echo $! >> "$PIDS"; echo done', env=_env(PIDS=str(pids)))

    assert (result.exit_code, result.timed_out, result.output_tail) == (0, False, "done\n")
    assert result.duration < DRAIN_WINDOW_SECONDS + 2.0
    assert _survivors(pids, expected=1) == []


def test_a_background_job_is_killed_even_when_it_let_go_of_the_pipe(tmp_path: Path) -> None:
    pids = tmp_path / "pids"

    result = _run('sleep 300 >/dev/null 2>&1 & echo $! >> "$PIDS"', env=_env(PIDS=str(pids)))

    assert result.exit_code == 0
    # The pipe closed with the shell, so there was nothing to drain and no reason to wait.
    assert result.duration < DRAIN_WINDOW_SECONDS
    assert _survivors(pids, expected=1) == []


# --- resources, clock, arguments ---------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_runs_leak_no_threads_and_no_file_descriptors(tmp_path: Path) -> None:
    fds_before = set(os.listdir("/proc/self/fd"))
    threads_before = threading.active_count()

    _run("echo hello", log_path=str(tmp_path / "a.log"))
    _run("exit 4")
    _run("sleep 300", timeout=0.2)
    _run("sleep 300 & echo bye")
    _run("sleep 300", cancel=_set_event())

    assert set(os.listdir("/proc/self/fd")) == fds_before
    assert threading.active_count() == threads_before


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


def test_times_come_from_the_injected_clock_and_duration_from_the_monotonic_one() -> None:
    start = datetime(2024, 3, 31, 1, 0, tzinfo=UTC)
    ticks = iter([start, start + timedelta(seconds=7)])

    result = _run("true", now=lambda: next(ticks))

    assert (result.started_at, result.finished_at) == (start, start + timedelta(seconds=7))
    assert 0 <= result.duration < 5.0


def test_default_clock_is_aware_utc() -> None:
    result = _run("true")

    assert result.started_at.utcoffset() == timedelta(0)
    assert result.started_at <= result.finished_at


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
        ({"timeout": float("nan")}, "timeout must be a positive number of seconds"),
        ({"tail_bytes": -1}, "tail_bytes must be 0 or more, got -1"),
        ({"kill_grace": -0.5}, "kill_grace must be 0 or more seconds, got -0.5"),
    ],
)
def test_invalid_arguments_are_rejected_before_anything_runs(
    arguments: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _run("true", **arguments)


def test_concurrent_runs_in_threads_keep_their_output_apart() -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(lambda n: _run('sleep 0.05; echo "task $N"', env=_env(N=str(n))), range(8))
        )

    assert [result.output_tail for result in results] == [f"task {n}\n" for n in range(8)]


def test_without_a_log_dir_output_streams_to_stdout_while_the_command_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """In Lambda and Fargate stdout is CloudWatch Logs: `stratoflow logs --follow` reads an
    attempt's output while it runs, between markers that name the attempt."""
    import threading
    import time

    from stratoflow.runner.commands import command_runner

    monkeypatch.setenv("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/stratoflow-executor")
    monkeypatch.setenv("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/27/[$LATEST]abc")
    run = command_runner(log_dir=None)
    name = "r1/t.task.1.log"
    ref = run.log_ref(name)
    group_stream_name, since = ref.rsplit("|", 1)
    assert (
        group_stream_name == f"cwl|/aws/lambda/stratoflow-executor|2026/11/27/[$LATEST]abc|{name}"
    )
    assert abs(int(since) - (time.time() * 1000 - 60_000)) < 5_000
    release = tmp_path / "release"
    seen: list[str] = []
    early = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen.append(capsys.readouterr().out)
            if "early" in "".join(seen):
                early.set()
                break
            time.sleep(0.05)
        release.touch()  # let the command finish either way

    watcher = threading.Thread(target=watch)
    watcher.start()
    outcome = run(
        f"echo early; while test ! -f {release}; do sleep 0.05; done; echo late",
        env={"PATH": "/usr/bin:/bin"},
        cwd=None,
        timeout=30,
        log_name=name,
    )
    watcher.join()
    assert early.is_set(), "the output reached stdout only after the command ended"
    out = "".join(seen) + capsys.readouterr().out
    assert out.index(f"----- stratoflow output {name} -----") < out.index("early")
    assert out.index("late") < out.index(f"----- end of output {name} -----")
    assert outcome.exit_code == 0 and outcome.log_ref is not None
    assert outcome.log_ref.startswith(group_stream_name + "|")
