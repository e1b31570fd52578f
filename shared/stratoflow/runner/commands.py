"""The executor's command runner: the runner of `process.py` with what an engine needs
around it — a log file per attempt (and, on Lambda and Fargate, the output streamed to
CloudWatch between markers as it comes), a default working folder, a cancel of every
command of the process, and the guardian that outlives an engine's death."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from stratoflow.core.records import iso
from stratoflow.ports import Cancel, CommandOutcome
from stratoflow.runner.logfiles import END_MARKER, START_MARKER
from stratoflow.runner.process import ProcessGuard


def command_runner(
    log_dir: str | None = None,
    echo_logs: bool | None = None,
    cancel: threading.Event | None = None,
    default_cwd: str | None = None,
    on_command_end: Callable[[], None] | None = None,
    guard: ProcessGuard | None = None,
) -> AttemptRunner:
    """The runner the executor uses (see `AttemptRunner`)."""
    return AttemptRunner(log_dir, echo_logs, cancel, default_cwd, on_command_end, guard)


class AttemptRunner:
    """`CommandRunner`: full output to a log file per attempt.

    With a `log_dir` (local runs) the files stay there and an attempt's log reference is
    `file:<path>`; without one (Lambda, Fargate) the output is also streamed, as it comes,
    to this process's stdout between markers, i.e. to CloudWatch Logs, and the file removed:
    the reference is then `cwl|<group>|<stream>|<log name>`. `cancel` stops every command
    of this runner (the process is stopping); `on_command_end` is called as soon as each
    command has ended, before its outcome is reported; `guard` learns of each command's
    process group, to kill it should this process die (the local engine's guardian).
    """

    def __init__(
        self,
        log_dir: str | None = None,
        echo_logs: bool | None = None,
        cancel: threading.Event | None = None,
        default_cwd: str | None = None,
        on_command_end: Callable[[], None] | None = None,
        guard: ProcessGuard | None = None,
    ) -> None:
        self._echo = (log_dir is None) if echo_logs is None else echo_logs
        self._base = Path(log_dir) if log_dir else Path(tempfile.gettempdir()) / "stratoflow-logs"
        self._process_cancel = cancel
        self._default_cwd = default_cwd
        self._on_command_end = on_command_end
        self._guard = guard

    def log_ref(self, log_name: str) -> str:
        if self._echo:
            where = _cloudwatch_stream()
            # From a little before now: the reader need not scan the stream's earlier
            # invocations (a warm Lambda's stream holds many attempts).
            since = int(time.time() * 1000) - LOG_SEARCH_SLACK_MS
            return f"cwl|{where[0]}|{where[1]}|{log_name}|{since}" if where else ""
        return f"file:{self._base / log_name}"

    def __call__(
        self,
        command: str,
        *,
        env: Mapping[str, str],
        cwd: str | None,
        timeout: float,
        log_name: str,
        cancel: Cancel | None = None,
        mask: Sequence[str] = (),
    ) -> CommandOutcome:
        from stratoflow.runner.process import AnyEvent, run_command

        log_path = self._base / log_name
        ref = self.log_ref(log_name)  # from before the command starts: where output begins
        scratch = None
        cwd = cwd or self._default_cwd
        if cwd is None:
            scratch = tempfile.mkdtemp(prefix="stratoflow-")
        stops = [e for e in (cancel, self._process_cancel) if e is not None]
        echoing = _LiveEcho(log_path, log_name) if self._echo else None
        try:
            result = run_command(
                command,
                env=env,
                cwd=cwd or scratch,
                timeout=timeout,
                log_path=str(log_path),
                cancel=AnyEvent(*stops) if stops else None,  # type: ignore[arg-type]
                guard=self._guard,
                mask=mask,
            )
        except (OSError, ValueError) as exc:
            # The command could not start (its folder is gone, say): a failed attempt with
            # the reason, like a shell's 127, rather than an exception that loops on redelivery.
            stamp = iso(datetime.now(UTC))
            return CommandOutcome(
                exit_code=127,
                timed_out=False,
                cancelled=False,
                output_tail=f"stratoflow: cannot start the command: {exc}",
                started_at=stamp,
                finished_at=stamp,
                log_ref=None,
            )
        finally:
            if echoing is not None:
                echoing.finish()
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
            if self._on_command_end is not None:
                self._on_command_end()
        return CommandOutcome(
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            cancelled=result.cancelled,
            output_tail=result.output_tail,
            started_at=iso(result.started_at),
            finished_at=iso(result.finished_at),
            log_ref=ref or None,
        )


ECHO_INTERVAL_SECONDS = 0.5
LOG_SEARCH_SLACK_MS = 60_000


class _LiveEcho:
    """Copies an attempt's log file to stdout while the command runs, between markers, so
    CloudWatch Logs has the output as it comes (`stratoflow logs --follow`)."""

    def __init__(self, path: Path, name: str) -> None:
        self._path = path
        self._name = name
        self._done = threading.Event()
        self._offset = 0
        self._last = b"\n"
        sys.stdout.write(f"{START_MARKER.format(name=name)}\n")
        sys.stdout.flush()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(ECHO_INTERVAL_SECONDS):
            self._copy()

    def _copy(self) -> None:
        try:
            with self._path.open("rb") as f:
                f.seek(self._offset)
                while chunk := f.read(256 * 1024):
                    self._offset += len(chunk)
                    self._last = chunk[-1:]
                    sys.stdout.write(chunk.decode("utf-8", "replace"))
        except FileNotFoundError:
            return
        sys.stdout.flush()

    def finish(self) -> None:
        self._done.set()
        self._thread.join()
        self._copy()
        # The end marker needs a line of its own; a newline is added only when the output
        # lacks a final one, since a reader cannot tell an added newline from the command's.
        newline = "" if self._last == b"\n" else "\n"
        sys.stdout.write(f"{newline}{END_MARKER.format(name=self._name)}\n")
        sys.stdout.flush()
        self._path.unlink(missing_ok=True)


def _cloudwatch_stream() -> tuple[str, str] | None:
    """(log group, log stream) this process's stdout goes to, if known: a Lambda function's
    from its environment, a Fargate task's from its awslogs options in the task metadata."""
    group = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
    stream = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
    if group and stream:
        return group, stream
    from stratoflow.runner.metadata import awslogs_stream

    return awslogs_stream()
