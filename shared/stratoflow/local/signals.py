"""Ctrl-C (SIGINT) and SIGTERM as requests to stop a local engine.

Python's default SIGINT handler raises KeyboardInterrupt wherever the main thread happens
to be, in the middle of a transaction or of the shutdown itself; and a Python-level handler
that sets an Event can deadlock if the main thread holds that Event's lock when the signal
arrives. So the handlers here do nothing in Python: `signal.set_wakeup_fd` has the
interpreter write each signal's number to a pipe the instant it arrives, and a thread of
ours reads the pipe and calls back, outside the main thread and with no lock held.

The first signal asks for a stop (`on_first`), the second for a stop at once
(`on_second`); a third ends the process on the spot (exit 128 + the signal), for an engine
whose stop hangs: the guardian then stops its commands, the next `local up` recovers the
rest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType

_log = logging.getLogger("stratoflow.local")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code_for(signum: int) -> int:
    """The shell's code for a process ended by `signum`: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + signum


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class StopSignals:
    """While entered (in the main thread), SIGINT and SIGTERM call `on_first(signum)`, then
    `on_second(signum)`, from a thread of their own; `first` is the first signal's number.
    Outside the main thread it installs nothing (the signals keep their handlers)."""

    def __init__(
        self,
        on_first: Callable[[int], None],
        on_second: Callable[[int], None],
    ) -> None:
        self._on_first = on_first
        self._on_second = on_second
        self.first: int | None = None
        self.count = 0
        self._installed = False
        self._previous: dict[int, object] = {}
        self._previous_fd = -1
        self._read_fd = self._write_fd = -1
        self._reader: threading.Thread | None = None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, _ignore)
        self._installed = True
        self._reader = threading.Thread(target=self._read, name="stratoflow-signals", daemon=True)
        self._reader.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._installed:
            return
        self._installed = False
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._write_fd)  # the reader sees end-of-file and ends
        if self._reader is not None:
            self._reader.join(timeout=5)
        os.close(self._read_fd)

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._read_fd, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in STOP_SIGNALS:
                    self._deliver(signum)

    def _deliver(self, signum: int) -> None:
        self.count += 1
        try:
            if self.count == 1:
                self.first = signum
                self._on_first(signum)
            elif self.count == 2:
                self._on_second(signum)
            else:
                with contextlib.suppress(OSError):
                    sys.stderr.write(f"{signal_name(signum)} again: exiting now\n")
                os._exit(exit_code_for(signum))
        except Exception:
            # A failing callback must not end the thread that hears the next signal.
            _log.exception("handling %s failed", signal_name(signum))


def _ignore(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: the work is done by the thread that reads the wakeup pipe."""
