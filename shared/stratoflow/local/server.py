"""`stratoflow local up`: a long-lived local engine that serves a folder of workflows.

It registers every workflow file in the folder through the real loader handler (an S3
upload and its notification), re-registers a file when it changes and deactivates it when
it is deleted, ticks the dispatcher every minute, and leaves its endpoint in
STRATOFLOW_HOME so that other commands (`workflows`, `runs`, `status`, `backfill`, …) in
another terminal reach it. One `local up` serves a home at a time (`EngineLock`); on the
embedded engine it also adopts the work of `stratoflow run` processes that died.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stratoflow import services
from stratoflow.config import WORKFLOW_FILE_SUFFIXES, WORKFLOWS_PREFIX
from stratoflow.core.loader import WorkflowFileError, load_workflow_text
from stratoflow.embedded.runs import SqliteRunStore
from stratoflow.handlers import loader
from stratoflow.local import DEFAULT_API_PORT
from stratoflow.local.events import LambdaContext, s3_event
from stratoflow.local.failures import EngineFailed, backoff_delay, unrecoverable
from stratoflow.local.http import ApiServer
from stratoflow.local.runtime import LocalRuntime
from stratoflow.local.target import EngineLock, clear_state, home, write_state

_log = logging.getLogger("stratoflow.local")
SCAN_SECONDS = 0.5
"""How often the folder is looked at (a file watcher without an inotify dependency)."""


@dataclass
class AcceleratedClock:
    """Time that runs `speed` times faster than the wall clock (demos and tests)."""

    speed: float
    origin_real: float
    origin_virtual: datetime

    def now(self) -> datetime:
        elapsed = time.time() - self.origin_real
        return self.origin_virtual + timedelta(seconds=elapsed * self.speed)


class FolderServer:
    """The folder watcher and scheduler ticker around a LocalRuntime."""

    def __init__(
        self,
        folder: Path,
        runtime: LocalRuntime,
        *,
        speed: float = 1.0,
        say: Callable[[str], None] = print,
        api_port: int | None = DEFAULT_API_PORT,
    ) -> None:
        self.folder = folder
        self.api_port = api_port
        self.api: ApiServer | None = None
        self.runtime = runtime
        self.speed = speed
        self.say = say
        self._seen: dict[Path, float] = {}
        self._declared: dict[Path, str] = {}  # the workflow id each file declares
        self._owners: dict[str, Path] = {}  # the file each registered id came from
        self._refused: dict[Path, Path] = {}  # a file refused → the file it clashes with
        self._stop = threading.Event()
        self._steps: dict[str, _StepFailures] = {}
        self._lock = EngineLock(runtime.state_dir)

    def start(self) -> None:
        """Take the home's engine lock (EngineBusy if another engine has it), start the
        runtime and the API, and record where they answer and the API's token."""
        self._lock.acquire()
        # Holding the lock, this engine is the one to take over what a dead one left.
        self.runtime.recover = True
        try:
            rt = self.runtime.start()
        except BaseException:
            self._lock.release()
            raise
        assert rt.ports is not None
        self._recover()
        if self.speed != 1.0:
            rt.ports.clock = AcceleratedClock(self.speed, time.time(), datetime.now(UTC))
        if self.api_port is not None:
            try:
                self.api = ApiServer(rt.wiring, self.api_port).start()
            except OSError:
                rt.stop()
                self._lock.release()
                raise
            # An upload through the API lands in the served folder, like a file saved there.
            rt.wiring.uploader = self._store_upload
        state = write_state(
            self.api.url if self.api else None,
            rt.endpoint_url,
            rt.prefix,
            token=self.api.token if self.api else None,
        )
        where = rt.endpoint_url or f"{rt.state_dir / 'engine.db'} (embedded)"
        self.say(f"stratoflow local engine at {where}, serving {self.folder}")
        if self.api:
            # The token is this engine's (new at each start); the file is the user's only.
            self.say(
                f"REST API at {self.api.url} (its owner's only: the CLI takes the token "
                f"from {state}; in a browser, open {self.api.url}/?token={self.api.token})"
            )

    def _store_upload(self, key: str, body: bytes) -> str:
        rt = self.runtime
        assert rt.clients is not None and rt.settings is not None
        path = self.folder / key.removeprefix(WORKFLOWS_PREFIX)
        tmp = path.with_name(f".{path.name}.upload")
        tmp.write_bytes(body)
        tmp.replace(path)
        rt.clients.s3.put_object(Bucket=rt.settings.bucket, Key=key, Body=body)
        return f"s3://{rt.settings.bucket}/{key}"

    def serve(self) -> None:
        """Watch and tick until `stop()`. A failing step is retried after a back-off; a
        failure the engine cannot recover from (`stratoflow.local.failures`) raises
        EngineFailed: the caller then shuts down with it."""
        assert self.runtime.ports is not None
        clock = self.runtime.ports.clock
        next_tick = _next_minute(clock.now())
        while not self._stop.is_set():
            self._check()
            self._survive("looking at the folder", self.scan)
            if clock.now() >= next_tick:
                self._survive("taking over dead engines' work", self._adopt)
                # A failed tick is tried again after its back-off, not a minute later.
                if self._survive("the scheduler's tick", self._tick):
                    next_tick = _next_minute(clock.now())
            self._stop.wait(min(SCAN_SECONDS, 60 / self.speed / 4))
        self._check()

    def _check(self) -> None:
        reason = self.runtime.failure
        if reason is not None:
            raise EngineFailed(reason)

    def _tick(self) -> None:
        for run_id in self.runtime.tick():
            self.say(f"started {run_id}")

    def _survive(self, what: str, step: Callable[[], None]) -> bool:
        """Run one step of the loop unless it is backing off; True if it ran and succeeded.

        A failure is logged in full and said in one line (the first of a series; its end
        is said too), and the step waits a jittered back-off (0.1 s doubling up to 5 s)
        before its next turn, so a transient error never stops the engine and a lasting
        one does not spin. An unrecoverable failure is recorded: `serve` then ends."""
        state = self._steps.setdefault(what, _StepFailures())
        if time.monotonic() < state.not_before:
            return False
        try:
            step()
        except Exception as exc:
            reason = unrecoverable(exc)
            if reason is not None:
                self.runtime.record_failure(f"{reason}, while {what}")
                return False
            state.count += 1
            state.not_before = time.monotonic() + backoff_delay(state.count)
            _log.error("local up: %s failed (%d in a row)", what, state.count, exc_info=exc)
            if state.count == 1:
                self.say(f"warning: {what} failed ({type(exc).__name__}: {exc}); trying again")
            return False
        if state.count:
            self.say(f"{what} works again (after {state.count} failure(s))")
            state.count, state.not_before = 0, 0.0
        return True

    def stop(self) -> None:
        """End `serve` (thread-safe): its loop stops at its next turn."""
        self._stop.set()

    def _recover(self) -> None:
        """Report what the runtime took over at start from the engine that last served this
        home (it is gone: we hold the engine lock), and tick at once: the running attempts
        it left are reported lost now (their commands died with it), then retried or
        failed as their retries say, and slots missed meanwhile start as `catchup` says."""
        self._say_taken(*self.runtime.recovered)
        for run_id in self.runtime.tick():
            self.say(f"started {run_id}")

    def _adopt(self) -> None:
        """Take over the work of `stratoflow run` processes on this home that died."""
        rt = self.runtime
        if rt.engine is not None and rt.ports is not None:
            assert isinstance(rt.ports.runs, SqliteRunStore)
            self._say_taken(*rt.engine.adopt(rt.ports.runs))

    def _say_taken(self, messages: int, attempts: int) -> None:
        if messages or attempts:
            self.say(
                f"took over {messages} message(s) and {attempts} running attempt(s) of "
                "engines that stopped without finishing them"
            )

    def scan(self) -> None:
        """Register new and changed workflow files; deactivate removed ones. Two files that
        declare one workflow id: the one registered first stays active, the other is
        refused (said, and shown by `stratoflow workflows`) until the clash is gone."""
        current = {
            p: p.stat().st_mtime
            for p in sorted(self.folder.rglob("*"))
            if p.is_file()
            and p.suffix.lower() in WORKFLOW_FILE_SUFFIXES
            and ".stratoflow" not in p.parts
        }
        for path in set(self._seen) - set(current):
            self._remove(path)
        for path, mtime in current.items():
            if self._seen.get(path) != mtime:
                self._upload(path)
        self._seen = current
        # A refused file whose rival is gone (removed, or now another id) gets its turn.
        for path, rival in list(self._refused.items()):
            if self._owners.get(self._declared.get(path, "")) != rival:
                del self._refused[path]
                self._upload(path)

    def _key(self, path: Path) -> str:
        return WORKFLOWS_PREFIX + path.relative_to(self.folder).as_posix()

    def _upload(self, path: Path) -> None:
        rt = self.runtime
        assert rt.clients is not None and rt.settings is not None and rt.ports is not None
        key = self._key(path)
        body = path.read_bytes()
        rival = self._rival(path, body)
        if rival is not None:
            workflow_id = self._declared[path]
            message = (
                f"{path} declares workflow id {workflow_id!r}, which {rival} already defines: "
                f"{rival.name} stays active; rename the id in one of them (or remove one)"
            )
            self._refused[path] = rival
            source = f"s3://{rt.settings.bucket}/{key}"
            rt.ports.definitions.record_source_error(
                source, message, rt.ports.clock.now().isoformat()
            )
            self.say(f"error: {message}")
            return
        rt.clients.s3.put_object(Bucket=rt.settings.bucket, Key=key, Body=body)
        result = loader.handle(
            s3_event("ObjectCreated:Put", rt.settings.bucket, key, rt.settings.region),
            LambdaContext("stratoflow-loader"),
            rt.wiring,
        )
        for reg in result["registered"]:
            self._owners[reg["workflow_id"]] = path
            self.say(f"registered {reg['workflow_id']} v{reg['version']} from {path.name}")
        for error in result["errors"]:
            # The loader names the object's key; here the file is what the user knows.
            self.say(f"error: {error.replace(json.dumps(key), json.dumps(str(path)), 1)}")

    def _rival(self, path: Path, body: bytes) -> Path | None:
        """The other file of the folder that already defines the id `path` declares."""
        try:
            declared = load_workflow_text(body.decode("utf-8", "replace"), str(path)).id
        except WorkflowFileError:
            self._declared.pop(path, None)
            return None  # the loader reports it
        previous = self._declared.get(path)
        self._declared[path] = declared
        if previous is not None and previous != declared and self._owners.get(previous) == path:
            del self._owners[previous]  # its old id is free for a refused file
        owner = self._owners.get(declared)
        return owner if owner is not None and owner != path and owner.exists() else None

    def _remove(self, path: Path) -> None:
        rt = self.runtime
        assert rt.clients is not None and rt.settings is not None
        self._refused.pop(path, None)
        declared = self._declared.pop(path, None)
        if declared is not None and self._owners.get(declared) == path:
            del self._owners[declared]
        key = self._key(path)
        rt.clients.s3.delete_object(Bucket=rt.settings.bucket, Key=key)
        result = loader.handle(
            s3_event("ObjectRemoved:Delete", rt.settings.bucket, key, rt.settings.region),
            LambdaContext("stratoflow-loader"),
            rt.wiring,
        )
        for workflow_id in result["deactivated"]:
            self.say(f"deactivated {workflow_id} ({path.name} removed)")

    def shutdown(self, grace: float, failure: str | None = None) -> None:
        """Stop the engine: take no new work at once (`LocalRuntime.drain`), give running
        attempts `grace` seconds to end (cut short by `runtime.hurry()`, a second Ctrl-C),
        then stop them and record them cancelled, cancelling their runs; then the API, the
        runtime, the state file and the lock. Other runs keep their queued tasks for the
        next engine. With a `failure` (the engine cannot go on) there is no grace: the
        commands are stopped and whatever can still be recorded is."""
        rt = self.runtime
        rt.drain()
        try:
            if failure is not None:
                rt.cancel.set()
            elif not rt.wait_idle(grace):
                self._cancel_running()
        except Exception:
            _log.exception("local up: stopping the running tasks failed")
            rt.cancel.set()
        finally:
            clear_state()
            if self.api is not None:
                self.api.stop()
                rt.wiring.uploader = None
            try:
                rt.stop()
            finally:
                self._lock.release()

    def _cancel_running(self) -> None:
        """Cancel the runs whose attempts still run, stop those attempts and wait for
        their reports to be recorded (so a restart shows them cancelled, not running)."""
        rt = self.runtime
        assert rt.ports is not None
        for run_id in list(rt.progress.running_runs):
            try:
                services.cancel_run(rt.ports, run_id)
            except Exception:
                _log.exception("local up: cancelling run %s at shutdown failed", run_id)
        rt.cancel.set()
        rt.quiesce()


@dataclass
class _StepFailures:
    """A step of `serve` failing in a row, and when it may run again."""

    count: int = 0
    not_before: float = 0.0


def _next_minute(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0) + timedelta(minutes=1, seconds=1)


__all__ = ["AcceleratedClock", "FolderServer", "home"]
