"""Run one task's shell command: process group, timeout, kill tree, bounded output tail.

This is the only place in stratoflow that starts a command (docs/architecture.md, invariant 8). The
executor Lambda, the Fargate task and the local runtime all call `run_command`, so they
agree on what a timeout, a cancel and an exit code mean.

How the pieces fit:

* The command runs as `/bin/sh -c command` in a new session, hence its own process group
  whose id is the shell's pid. Signals go to the whole group (`os.killpg`), so background
  jobs and grandchildren die with the shell instead of outliving the attempt.
* stdout and stderr share one pipe, read in chunks by this thread alone: memory holds only
  the last `tail_bytes` bytes however much the command prints; the full output goes to the
  optional log file (CloudWatch Logs or a local file are fed from there).
* Secret values (`mask`) are replaced by `***` before output reaches the log or the tail,
  also when a value is split across reads, as GitHub Actions masks its secrets
  (`stratoflow.runner.output`, which also keeps the tail).
* The shell's exit is observed with `waitid(WNOWAIT)`, which leaves it an unreaped zombie
  until the very end. While the zombie exists the kernel cannot reuse its pid as a process
  group id, so the final SIGKILL to the group can never hit an unrelated process group.

A process that calls `setsid` itself leaves the group and escapes; only a cgroup (a Lambda
sandbox or a Fargate task ends with its cgroup) catches those.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Protocol

from stratoflow.runner.output import Masker, Output

SHELL = "/bin/sh"
READ_CHUNK_BYTES = 64 * 1024
"""Linux's default pipe capacity: one read usually empties the pipe."""
POLL_INTERVAL_SECONDS = 0.05
"""Longest the loop blocks before looking at the exit status, the deadline and the cancel event."""
DRAIN_WINDOW_SECONDS = 1.0
"""After the shell exits, how long background jobs that still hold the pipe may keep writing."""
FINAL_DRAIN_SECONDS = 0.25
"""After the group is SIGKILLed, how long to collect output still buffered in the pipe."""


@dataclass(frozen=True)
class CommandResult:
    """What happened to one command: how it ended, what it printed, when and for how long."""

    exit_code: int | None
    """The shell's exit status (128 + N if a signal N it did not get from us killed it);
    None when we killed it because of the timeout or a cancel."""
    timed_out: bool
    cancelled: bool
    output_tail: str
    """The last `tail_bytes` bytes of stdout+stderr, decoded as UTF-8 (invalid bytes become
    U+FFFD) and never more than `tail_bytes` bytes when encoded again."""
    output_bytes: int
    """How many bytes the command printed in total."""
    started_at: datetime
    finished_at: datetime
    duration: float
    """Seconds from start to finish, measured with the monotonic clock."""
    log_path: str | None
    """The file the full output was appended to, if one was asked for."""


class _Stop(Enum):
    """Why we, rather than the command itself, ended the run."""

    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class AnyEvent:
    """Set when any of its events is set: a command stops on a cancel of its run or on a
    stop of the whole process (Ctrl-C), whichever comes first. Looks like an Event to the
    runner, which only calls `is_set` and `wait` (for at most POLL_INTERVAL_SECONDS)."""

    def __init__(self, *events: threading.Event) -> None:
        self._events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)

    def wait(self, timeout: float | None = None) -> bool:
        if self.is_set():
            return True
        self._events[0].wait(timeout)
        return self.is_set()


class ProcessGuard(Protocol):
    """Something that kills a command's process group if this process dies before
    `run_command` could (`stratoflow.runner.guardian.ProcessGuardian`). Neither method may
    raise: `run_command` calls them with a command running or being cleaned up."""

    def watch(self, pgid: int) -> None:
        """Process group `pgid` has started."""

    def release(self, pgid: int) -> None:
        """Process group `pgid` has been killed; it must not be signalled any more."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def run_command(
    command: str,
    *,
    env: Mapping[str, str],
    cwd: str | None = None,
    timeout: float,
    log_path: str | None = None,
    tail_bytes: int = 4096,
    cancel: threading.Event | None = None,
    kill_grace: float = 2.0,
    now: Callable[[], datetime] = _utc_now,
    guard: ProcessGuard | None = None,
    mask: Iterable[str] = (),
) -> CommandResult:
    """Run `command` with `/bin/sh -c` and return how it ended and the tail of its output.

    The environment is exactly `env` (the caller decides what the task may see; nothing is
    inherited from this process), stdin is /dev/null, stdout and stderr are one stream.
    At `timeout` seconds, or as soon as `cancel` is set, the command's process group gets
    SIGTERM, then SIGKILL after `kill_grace` seconds. Whatever is left of the group when the
    shell has exited is SIGKILLed too, after a short window to let background jobs finish
    writing: nothing the command started outlives the call. A timeout or cancel that comes
    after the shell has exited only cuts that window short; the exit code stands.
    A `guard` is told about the group as soon as it exists and again once it is killed, so
    that it can kill the group should this process die in between. Every value in `mask`
    (of `output.MIN_MASKED_LENGTH` characters or more, and each such line of a multi-line value) is
    written as `***` in the log file and the tail.

    Raises ValueError for a non-positive timeout or a negative `tail_bytes`/`kill_grace`,
    and OSError when the shell cannot be started at all (for example `cwd` does not exist).
    """
    _check_arguments(timeout=timeout, tail_bytes=tail_bytes, kill_grace=kill_grace)
    log_file = _open_log(log_path) if log_path is not None else None
    started_at = now()
    start = time.monotonic()
    try:
        process = subprocess.Popen(
            [SHELL, "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            # A new session makes the shell a process group leader, so one killpg reaches
            # every process it starts (and a terminal's Ctrl-C does not reach them directly).
            start_new_session=True,
        )
    except BaseException:
        if log_file is not None:
            log_file.close()
        raise

    output = Output(tail_bytes, log_file, Masker(mask))
    watch: _Watch | None = None
    try:
        if guard is not None:
            guard.watch(process.pid)
        watch = _Watch(process, output, cancel)
        deadline = start + timeout
        stop = _wait_for_exit(watch, deadline=deadline, cancel=cancel)
        if stop is None:
            # Background jobs may still hold the pipe: let them finish writing, briefly and
            # not past the deadline, then they are killed with the rest of the group.
            drain_until = min(time.monotonic() + DRAIN_WINDOW_SECONDS, deadline)
            _drain(watch, until=drain_until, cancel=cancel)
        else:
            _terminate(watch, kill_grace=kill_grace)
        _signal_group(process.pid, signal.SIGKILL)
        _drain(watch, until=time.monotonic() + FINAL_DRAIN_SECONDS)
    finally:
        # Also on an exception (a log write failing, KeyboardInterrupt): never leave the
        # group running. The shell is not reaped yet, so its pid still pins the group id.
        _signal_group(process.pid, signal.SIGKILL)
        if guard is not None:
            # Released before the reap below, while the zombie shell still pins the group
            # id: once reaped, the id may be reused and must no longer be killed on our behalf.
            guard.release(process.pid)
        if watch is not None:
            watch.close()
        assert process.stdout is not None
        process.stdout.close()
        process.wait()
        try:
            output.finish()
        finally:
            if log_file is not None:
                log_file.close()

    finished_at = now()
    return CommandResult(
        exit_code=_exit_code(process.returncode) if stop is None else None,
        timed_out=stop is _Stop.TIMED_OUT,
        cancelled=stop is _Stop.CANCELLED,
        output_tail=output.tail_text(),
        output_bytes=output.total_bytes,
        started_at=started_at,
        finished_at=finished_at,
        duration=time.monotonic() - start,
        log_path=log_path,
    )


def _check_arguments(*, timeout: float, tail_bytes: int, kill_grace: float) -> None:
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if tail_bytes < 0:
        raise ValueError(f"tail_bytes must be 0 or more, got {tail_bytes!r}")
    if not kill_grace >= 0:
        raise ValueError(f"kill_grace must be 0 or more seconds, got {kill_grace!r}")


def _open_log(log_path: str) -> io.BufferedWriter:
    parent = os.path.dirname(log_path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return open(log_path, "ab")


def _exit_code(returncode: int) -> int:
    # Popen reports "killed by signal N" as -N; a shell reports it as 128 + N.
    return returncode if returncode >= 0 else 128 - returncode


def _signal_group(pgid: int, signum: int) -> None:
    # Nothing left to signal, or only members that changed user (setuid) remain.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class _Watch:
    """The running shell as seen from here: its output pipe and whether it has exited.

    One `poll` waits on the pipe and, where the kernel offers it (Linux 5.3+), on a pidfd
    of the shell, so its exit wakes the loop at once instead of after a poll interval.
    """

    def __init__(
        self, process: subprocess.Popen[bytes], output: Output, cancel: threading.Event | None
    ) -> None:
        assert process.stdout is not None
        self.eof = False
        self._process = process
        self._output = output
        self._cancel = cancel
        self._exited = False
        self._pipe_fd = process.stdout.fileno()
        # poll, not select: select fails on descriptors >= 1024 in a busy process.
        self._poller = select.poll()
        self._poller.register(self._pipe_fd, select.POLLIN)
        self._waiting_on = {self._pipe_fd}
        self._pidfd = _open_pidfd(process.pid)
        if self._pidfd is not None:
            self._poller.register(self._pidfd, select.POLLIN)
            self._waiting_on.add(self._pidfd)

    @property
    def pid(self) -> int:
        """The shell's pid, which is also its process group id."""
        return self._process.pid

    def exited(self) -> bool:
        """Whether the shell has exited, without reaping it (see the module docstring)."""
        if not self._exited:
            try:
                state = os.waitid(os.P_PID, self._process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                self._exited = state is not None
            except ChildProcessError:
                # Someone else's waitpid(-1) reaped it; it has exited all the same.
                self._exited = True
            if self._exited and self._pidfd is not None:
                # A pidfd stays readable once its process exits: stop polling it, or spin.
                self._stop_waiting_on(self._pidfd)
        return self._exited

    def pump(self, seconds: float) -> None:
        """Wait up to `seconds` for output or the shell's exit; take one chunk of output."""
        if not self._waiting_on:
            self._nap(seconds)
            return
        for fd, _events in self._poller.poll(seconds * 1000):
            if fd == self._pipe_fd:
                # poll said readable (or hung up), so this read returns at once.
                chunk = os.read(self._pipe_fd, READ_CHUNK_BYTES)
                if chunk:
                    self._output.add(chunk)
                else:
                    self.eof = True
                    self._stop_waiting_on(self._pipe_fd)
            else:
                self.exited()

    def close(self) -> None:
        """Release the pidfd; the pipe belongs to the Popen object and is closed with it."""
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def _stop_waiting_on(self, fd: int) -> None:
        if fd in self._waiting_on:
            self._poller.unregister(fd)
            self._waiting_on.discard(fd)

    def _nap(self, seconds: float) -> None:
        # Wake early on a cancel, unless it is already set (waiting on it would spin).
        if self._cancel is not None and not self._cancel.is_set():
            self._cancel.wait(seconds)
        else:
            time.sleep(seconds)


def _open_pidfd(pid: int) -> int | None:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None  # not Linux: exit is noticed by waitid within a poll interval
    try:
        return pidfd_open(pid)
    except OSError:
        return None  # kernel older than 5.3, or out of descriptors: same fallback


def _wait_for_exit(
    watch: _Watch, *, deadline: float, cancel: threading.Event | None
) -> _Stop | None:
    """Read output until the shell exits (None), the deadline passes, or a cancel comes."""
    while True:
        if watch.exited():
            return None
        if cancel is not None and cancel.is_set():
            return _Stop.CANCELLED
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _Stop.TIMED_OUT
        watch.pump(min(POLL_INTERVAL_SECONDS, remaining))


def _terminate(watch: _Watch, *, kill_grace: float) -> None:
    """SIGTERM the group and give it `kill_grace` seconds to exit, still reading its output."""
    pgid = watch.pid
    _signal_group(pgid, signal.SIGTERM)
    # A stopped process would hold the SIGTERM pending until the SIGKILL; wake it to act on it.
    _signal_group(pgid, signal.SIGCONT)
    until = time.monotonic() + kill_grace
    # The pipe closing tells us the group's writers are gone too, not just the shell.
    while not (watch.exited() and watch.eof):
        remaining = until - time.monotonic()
        if remaining <= 0:
            return
        watch.pump(min(POLL_INTERVAL_SECONDS, remaining))


def _drain(watch: _Watch, *, until: float, cancel: threading.Event | None = None) -> None:
    """Read what is left in the pipe until EOF, `until`, or a cancel, whichever comes first.

    Bounded because a process outside our reach (one that escaped the group, or a killed
    one's inherited descriptor in an unrelated process) can hold the pipe open forever.
    """
    while not watch.eof and not (cancel is not None and cancel.is_set()):
        remaining = until - time.monotonic()
        if remaining <= 0:
            return
        watch.pump(min(POLL_INTERVAL_SECONDS, remaining))
