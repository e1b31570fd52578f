"""`stratoflow local up`: a long-lived local engine that serves a folder of workflows.

It registers every workflow file in the folder through the real loader handler (an S3
upload and its notification), re-registers a file when it changes and deactivates it when
it is deleted, ticks the dispatcher every minute, and leaves its endpoint in
STRATOFLOW_HOME so that other commands (`workflows`, `runs`, `status`, `backfill`, …) in
another terminal reach it. One `local up` serves a home at a time (`EngineLock`); on the
embedded engine it also adopts the work of `stratoflow run` processes that died.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stratoflow import bootstrap, services
from stratoflow.config import WORKFLOW_FILE_SUFFIXES, WORKFLOWS_PREFIX
from stratoflow.embedded.runs import SqliteRunStore
from stratoflow.handlers import loader
from stratoflow.local.events import LambdaContext, s3_event
from stratoflow.local.http import DEFAULT_API_PORT, ApiServer
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
        self._stop = threading.Event()
        self._lock = EngineLock(runtime.state_dir)

    def start(self) -> None:
        """Take the home's engine lock (EngineBusy if another engine has it), start the
        runtime and the API, and record where they answer."""
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
                self.api = ApiServer(self.api_port).start()
            except OSError:
                rt.stop()
                self._lock.release()
                raise
            # An upload through the API lands in the served folder, like a file saved there.
            bootstrap.install_uploader(self._store_upload)
        write_state(self.api.url if self.api else None, rt.endpoint_url, rt.prefix)
        where = rt.endpoint_url or f"{rt.state_dir / 'engine.db'} (embedded)"
        self.say(f"stratoflow local engine at {where}, serving {self.folder}")
        if self.api:
            self.say(f"REST API at {self.api.url}")

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
        """Watch and tick until `stop()` (or Ctrl-C in the caller)."""
        assert self.runtime.ports is not None
        clock = self.runtime.ports.clock
        next_tick = _next_minute(clock.now())
        while not self._stop.is_set():
            self._survive("looking at the folder", self.scan)
            if clock.now() >= next_tick:
                self._survive("taking over dead engines' work", self._adopt)
                self._survive("the scheduler's tick", self._tick)
                next_tick = _next_minute(clock.now())
            self._stop.wait(min(SCAN_SECONDS, 60 / self.speed / 4))

    def _tick(self) -> None:
        for run_id in self.runtime.tick():
            self.say(f"started {run_id}")

    def _survive(self, what: str, step: Callable[[], None]) -> None:
        """Run one step of the loop; a failure is said (one line) and logged in full, and
        the loop goes on: the step runs again at its next turn (the folder every half
        second, the tick next minute), so a transient error never stops the engine."""
        try:
            step()
        except Exception as exc:
            _log.exception("local up: %s failed", what)
            self.say(f"warning: {what} failed ({type(exc).__name__}: {exc}); trying again")

    def stop(self) -> None:
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
        """Register new and changed workflow files; deactivate removed ones."""
        current = {
            p: p.stat().st_mtime
            for p in self.folder.rglob("*")
            if p.is_file()
            and p.suffix.lower() in WORKFLOW_FILE_SUFFIXES
            and ".stratoflow" not in p.parts
        }
        for path, mtime in current.items():
            if self._seen.get(path) != mtime:
                self._upload(path)
        for path in set(self._seen) - set(current):
            self._remove(path)
        self._seen = current

    def _key(self, path: Path) -> str:
        return WORKFLOWS_PREFIX + path.relative_to(self.folder).as_posix()

    def _upload(self, path: Path) -> None:
        rt = self.runtime
        assert rt.clients is not None and rt.settings is not None
        key = self._key(path)
        rt.clients.s3.put_object(Bucket=rt.settings.bucket, Key=key, Body=path.read_bytes())
        result = loader.handler(
            s3_event("ObjectCreated:Put", rt.settings.bucket, key, rt.settings.region),
            LambdaContext("stratoflow-loader"),
        )
        for reg in result["registered"]:
            self.say(f"registered {reg['workflow_id']} v{reg['version']} from {path.name}")
        for error in result["errors"]:
            self.say(f"error: {error}")

    def _remove(self, path: Path) -> None:
        rt = self.runtime
        assert rt.clients is not None and rt.settings is not None
        key = self._key(path)
        rt.clients.s3.delete_object(Bucket=rt.settings.bucket, Key=key)
        result = loader.handler(
            s3_event("ObjectRemoved:Delete", rt.settings.bucket, key, rt.settings.region),
            LambdaContext("stratoflow-loader"),
        )
        for workflow_id in result["deactivated"]:
            self.say(f"deactivated {workflow_id} ({path.name} removed)")

    def shutdown(self, grace: float) -> None:
        """Give running tasks `grace` seconds, then stop them and record them cancelled."""
        rt = self.runtime
        deadline = time.monotonic() + grace
        while rt.progress.running and time.monotonic() < deadline:
            time.sleep(0.1)
        if rt.progress.running and rt.ports is not None:
            for run_id in list(rt.progress.running_runs):
                services.cancel_run(rt.ports, run_id)
            rt.cancel.set()
            rt.quiesce()
        clear_state()
        if self.api is not None:
            self.api.stop()
            bootstrap.install_uploader(None)
        rt.stop()
        self._lock.release()


def _next_minute(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0) + timedelta(minutes=1, seconds=1)


__all__ = ["AcceleratedClock", "FolderServer", "home"]
