"""A watchdog process that kills the engine's commands when the engine dies without doing so.

`run_command` kills every command's process group before it returns, but only while the
engine's Python process is alive: a SIGKILL, an OOM kill or a crash of the engine leaves
the running commands (and everything they started) behind. The guardian closes that gap,
so that commands do not outlive the engine that started them.

How it works:

* `ProcessGuardian.start()` launches a small child (`python -I -S -c <_GUARDIAN_SOURCE>`,
  nothing but the standard library, in its own session) whose stdin is a pipe from the
  engine. The engine is the only holder of the pipe's write end.
* For each command the engine writes `+<pgid>` when it starts and `-<pgid>` once the group
  has been killed: the guardian keeps the set of registered groups.
* The pipe reaches EOF when the engine exits, however it exits: the kernel closes the
  write end even on SIGKILL. The guardian then SIGTERMs every group still registered,
  waits up to a grace period for them to go, SIGKILLs what is left and exits. After a
  clean `close()` nothing is registered, so it just exits.

Limits: a process that calls `setsid` itself leaves its group and escapes (see
`stratoflow.runner.process`); so does a group the engine had not yet registered when it
died (the few microseconds between the fork and the `+<pgid>` write).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from types import TracebackType

logger = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 2.0
"""How long the guardian waits between the SIGTERM and the SIGKILL of orphaned groups."""
READY_TIMEOUT_SECONDS = 10.0
"""How long `start` waits for the guardian to say it is ready before giving up."""
CLOSE_TIMEOUT_SECONDS = 5.0
"""How long `close` waits for the guardian to exit, on top of its grace period."""
_READY = b"ready\n"

# Runs as `python -I -S -c`: no site-packages, no stratoflow import, so it starts in
# milliseconds. Kept free of anything but os/signal/sys/time for the same reason.
_GUARDIAN_SOURCE = r"""
import os, signal, sys, time

POLL = 0.05


def send(pgid, signum):
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def has_live_member(pgid):
    # killpg(pgid, 0) also succeeds for a group of zombies, which stay around for good
    # where the orphans' reaper does not reap (some containers' PID 1). On Linux, /proc
    # tells a live member from a zombie.
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # only processes we may not signal remain: nothing more to do
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/" + entry + "/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def terminate(groups, grace):
    for pgid in groups:
        send(pgid, signal.SIGTERM)
        send(pgid, signal.SIGCONT)  # a stopped process would hold the SIGTERM pending
    deadline = time.monotonic() + grace
    while True:
        groups = {pgid for pgid in groups if has_live_member(pgid)}
        if not groups or time.monotonic() >= deadline:
            break
        time.sleep(POLL)
    for pgid in groups:
        send(pgid, signal.SIGKILL)


def main(grace):
    # Only the end of stdin may end the guardian: a stray Ctrl-C or a polite kill aimed
    # at the engine must not leave its commands unguarded.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    os.write(1, b"ready\n")
    # stdout/stderr were the engine's handshake pipe: let it go so nothing waits on us.
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    own = os.getpgrp()
    groups = set()
    pending = b""
    while True:
        chunk = os.read(0, 4096)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            try:
                pgid = int(line[1:])
            except ValueError:
                continue
            if pgid <= 1 or pgid == own:
                continue  # killpg(0) or (1) would hit us or everyone
            if line[:1] == b"+":
                groups.add(pgid)
            elif line[:1] == b"-":
                groups.discard(pgid)
    if groups:
        terminate(groups, grace)


main(float(sys.argv[1]))
"""

# Guardians whose pipe this process holds; a forked child must drop its copy (below).
_live: weakref.WeakSet[ProcessGuardian] = weakref.WeakSet()


class ProcessGuardian:
    """The engine's handle on its guardian process: register and release process groups.

    Thread-safe. `watch` and `release` never raise because the guardian is gone (that is
    logged once); they raise ValueError only for a pgid that is not a process group id.
    """

    def __init__(self, process: subprocess.Popen[bytes], pipe_fd: int, grace: float) -> None:
        """Wrap an already started guardian; use `ProcessGuardian.start()` instead."""
        self._process = process
        self._grace = grace
        self._fd: int | None = pipe_fd
        self._lock = threading.Lock()
        self._warned = False
        _live.add(self)

    @classmethod
    def start(
        cls,
        *,
        grace: float = DEFAULT_GRACE_SECONDS,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
    ) -> ProcessGuardian:
        """Launch the guardian and return once it is ready to guard (signals ignored).

        Raises RuntimeError if it does not come up within `ready_timeout` seconds, with
        whatever it printed, and ValueError for a negative `grace`.
        """
        if not grace >= 0:
            raise ValueError(f"grace must be 0 or more seconds, got {grace!r}")
        if not sys.executable:
            raise RuntimeError("cannot start the process guardian: no Python executable known")
        # Our own pipe rather than stdin=PIPE: the write end is a bare descriptor that only
        # this object closes (see _forget_after_fork). os.pipe() is close-on-exec, so
        # commands started later do not inherit it.
        read_fd, write_fd = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _GUARDIAN_SOURCE, repr(float(grace))],
                stdin=read_fd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # Its own session: a terminal's Ctrl-C or hang-up, sent to the engine's
                # process group, never reaches it. close_fds (the default) keeps the
                # engine's other descriptors out of it; cwd="/" pins no directory.
                start_new_session=True,
                close_fds=True,
                cwd="/",
            )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        try:
            _await_ready(process, timeout=ready_timeout)
        except BaseException:
            os.close(write_fd)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
            raise
        return cls(process, write_fd, grace)

    @property
    def pid(self) -> int:
        """The guardian process's pid."""
        return self._process.pid

    def watch(self, pgid: int) -> None:
        """Register process group `pgid`: it is killed if the engine dies before `release`."""
        self._send(b"+", pgid)

    def release(self, pgid: int) -> None:
        """Unregister process group `pgid` (its processes have been killed or have ended)."""
        self._send(b"-", pgid)

    def close(self) -> None:
        """Stop the guardian and reap it; a second call does nothing.

        Call it after the engine's commands have ended: groups still registered are
        treated as orphans (SIGTERM, grace period, SIGKILL), so this may take up to the
        grace period. Never raises because the guardian is already gone.
        """
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            self._process.wait(timeout=self._grace + CLOSE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning("process guardian %d did not exit after close", self.pid)

    def __enter__(self) -> ProcessGuardian:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, op: bytes, pgid: int) -> None:
        if isinstance(pgid, bool) or not isinstance(pgid, int) or pgid <= 1:
            raise ValueError(f"not a process group id: {pgid!r}")
        line = op + str(pgid).encode() + b"\n"
        with self._lock:
            if self._fd is None:
                return  # closed: nothing to guard any more
            try:
                # Shorter than PIPE_BUF, so one write; the lock keeps lines whole anyway.
                os.write(self._fd, line)
            except OSError as exc:
                if not self._warned:
                    self._warned = True
                    logger.warning(
                        "process guardian %d is gone (%s): commands are no longer killed "
                        "if this process dies",
                        self.pid,
                        exc,
                    )

    def _forget_after_fork(self) -> None:
        # A forked child holding the write end would keep the guardian from ever seeing
        # EOF after the engine died. The child's lock may have been copied while held.
        self._lock = threading.Lock()
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _await_ready(process: subprocess.Popen[bytes], *, timeout: float) -> None:
    """Wait for the guardian's ready line, then close our end of its stdout."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    received = b""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    try:
        while not received.endswith(_READY):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"process guardian not ready after {timeout} s")
            if not poller.poll(remaining * 1000):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                text = received.decode(errors="replace").strip()
                raise RuntimeError(f"process guardian exited before it was ready: {text}")
            received += chunk
    finally:
        process.stdout.close()


def _after_fork_in_child() -> None:
    for guardian in list(_live):
        guardian._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
