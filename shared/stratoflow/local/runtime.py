"""The local runtime: plays the parts of Lambda's event-source mappings and EventBridge.

It receives from the engine's queues (the embedded engine's by default; SQS at an AWS
endpoint, or on the embedded moto emulator, when asked) and calls the real handlers with
genuine event shapes, deleting what they processed and leaving the rest for redelivery,
exactly as SQS's event-source mapping does with ReportBatchItemFailures. Long polling wakes
on arrival, so nothing here sleeps to wait for work.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stratoflow import bootstrap, services
from stratoflow.aws.clients import AwsClients
from stratoflow.aws.observability import CallbackPublisher, NoMetrics
from stratoflow.config import Resources, Settings
from stratoflow.core.model import Workflow
from stratoflow.core.records import AttemptReport, RunRecord
from stratoflow.embedded.engine import EmbeddedEngine
from stratoflow.embedded.runs import SqliteRunStore
from stratoflow.handlers import dispatcher
from stratoflow.local.emulator import LOCAL_CREDENTIALS, LOCAL_REGION
from stratoflow.local.events import LambdaContext, eventbridge_event
from stratoflow.local.failures import (
    EngineFailed,
    FailureLatch,
    HomeWatch,
    backoff_delay,
    unrecoverable,
)
from stratoflow.local.pumps import (
    COMPLETION_PUMPS,
    LONG_POLL_SECONDS,
    PREFETCH,
    EventSourceMappings,
)
from stratoflow.ports import Metrics
from stratoflow.runner.commands import command_runner
from stratoflow.runner.guardian import ProcessGuardian
from stratoflow.services import CommandRunner, Ports

_log = logging.getLogger("stratoflow.local")


@dataclass
class Progress:
    """What the runtime has seen pass through its queues (for the live view)."""

    running: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    running_tasks: set[str] = field(default_factory=set)
    running_runs: Counter[str] = field(default_factory=Counter)
    """Commands running now, per run."""


class LocalRuntime(EventSourceMappings):
    """An engine driven in this process: the embedded engine in `state_dir` by default; the
    AWS adapters at `endpoint_url`, or on the embedded moto emulator with `emulator`."""

    def __init__(
        self,
        *,
        workers: int = 4,
        state_dir: str | Path = ".stratoflow",
        endpoint_url: str | None = None,
        emulator: bool = False,
        channel: str = "",
        recover: bool = False,
        prefix: str = "stratoflow",
        redelivery_delay: float = 1.0,
        metrics: Metrics | None = None,
        on_report: Callable[[AttemptReport], None] | None = None,
        pump: bool = True,
        emulator_port: int = 0,
        default_workdir: str | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.state_dir = Path(state_dir)
        self.endpoint_url = endpoint_url
        self.emulator = emulator
        self.channel = channel
        self.recover = recover
        self.recovered = (0, 0)
        """(messages, running attempts) taken over at start from engines that died."""
        self.prefix = prefix
        self.redelivery_delay = redelivery_delay
        self.progress = Progress()
        self._metrics = metrics or NoMetrics()
        self._on_report = on_report
        self._pump = pump
        self._emulator_port = emulator_port
        self._default_workdir = default_workdir
        self._emulator: Any = None  # the moto server, with `emulator`
        self.engine: EmbeddedEngine | None = None
        self._guardian: ProcessGuardian | None = None
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._hurry = threading.Event()
        self._failure = FailureLatch()
        self._home_watch: HomeWatch | None = None
        self.cancel = threading.Event()
        """Set to kill every running command (Ctrl-C): their attempts end as cancelled."""
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPoolExecutor | None = None
        # Messages held at once: the ones running plus a prefetch, so that one receive
        # serves up to ten tasks, as Lambda's event-source mapping polls in batches.
        self._capacity = workers + PREFETCH
        self._free_slots = workers
        self._slot_held = threading.local()
        self._held = 0  # received and not yet finished
        self._waiting = 0  # received and not yet started
        self._flow = threading.Condition()
        self._deletes: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._finished: dict[str, threading.Event] = {}
        self._finished_lock = threading.Lock()
        self._progress_lock = threading.Lock()
        self.settings: Settings | None = None
        self.clients: AwsClients | EmbeddedEngine | None = None
        self.ports: Ports | None = None
        self.runner: CommandRunner | None = None
        self._wiring: bootstrap.Wiring | None = None

    # -- lifecycle

    @property
    def embedded(self) -> bool:
        """Whether this runtime runs on the embedded engine (not on AWS adapters)."""
        return self.endpoint_url is None and not self.emulator

    def start(self) -> LocalRuntime:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._redirect_handler_logs(self.state_dir / "handlers.log")
        log_dir = str((self.state_dir / "runs").resolve())
        events = CallbackPublisher(self._run_finished)
        if self.embedded:
            engine = EmbeddedEngine(self.state_dir, self.channel)
            self.engine = self.clients = engine
            self.settings = engine.provision(Resources.named(self.prefix), log_dir)
            self.ports = bootstrap.build_embedded_ports(
                self.settings, engine, events=events, metrics=self._metrics
            )
            if self.recover:
                # Before anything is received, or this engine's own claims would look dead.
                assert isinstance(self.ports.runs, SqliteRunStore)
                self.recovered = engine.recover(self.ports.runs)
            self._home_watch = HomeWatch(engine.db.path)
        else:
            self._start_aws(log_dir, events)
        # Commands do not outlive this engine, however it ends (SIGKILL included).
        self._guardian = ProcessGuardian.start()
        runner = command_runner(
            log_dir=log_dir,
            echo_logs=False,
            cancel=self.cancel,
            default_cwd=self._default_workdir,
            on_command_end=self._release_slot,
            guard=self._guardian,
        )
        self.runner = runner
        assert self.ports is not None and self.clients is not None and self.settings
        self._wiring = bootstrap.Wiring(
            self.ports, self.clients, runner, bucket=self.settings.bucket
        )
        # More executor threads than command slots: an attempt gives its slot up as soon as
        # its command ends, and sends its report while the next one claims and runs.
        self._pool = ThreadPoolExecutor(2 * self.workers, thread_name_prefix="stratoflow-executor")
        self._spawn(self._delete_processed, "stratoflow-deleter")
        if self._pump:
            self._spawn(self._pump_tasks, "stratoflow-task-pump")
            # Several completion handlers at once, as Lambda scales the completion function
            # with its queue; the conditional writes make their races harmless. On the
            # embedded engine one is enough: it shares this process's one interpreter lock
            # with the rest, and reports that arrive while it works make its next batch.
            for n in range(1 if self.embedded else COMPLETION_PUMPS):
                self._spawn(self._pump_completions, f"stratoflow-completion-pump-{n}")
        return self

    def _start_aws(self, log_dir: str, events: CallbackPublisher) -> None:
        from stratoflow.local.emulator import EmbeddedEmulator, provision

        for name, value in LOCAL_CREDENTIALS.items():
            os.environ.setdefault(name, value)
        if self.endpoint_url is None:
            self._emulator = EmbeddedEmulator(self._emulator_port).start()
            self.endpoint_url = self._emulator.endpoint_url
        clients = AwsClients(LOCAL_REGION, self.endpoint_url)
        self.clients = clients
        self.settings = provision(
            clients, Resources.named(self.prefix), Settings(table=self.prefix, log_dir=log_dir)
        )
        self.ports = bootstrap.build_ports(
            self.settings, clients=clients, events=events, metrics=self._metrics
        )

    @property
    def wiring(self) -> bootstrap.Wiring:
        """What this runtime hands the handlers it calls (`handle(event, context, wiring)`):
        its ports, clients and runner. Tests call handlers with it too."""
        if self._wiring is None:
            raise RuntimeError("the runtime is not started")
        return self._wiring

    def _redirect_handler_logs(self, path: Path) -> None:
        """The handlers log JSON to stdout (CloudWatch on AWS); locally stdout is the CLI's,
        so their lines go to a file in the state folder instead. Locally only warnings and
        errors by default: a line per task message and per report cost a tenth of the
        engine's time per task; POWERTOOLS_LOG_LEVEL=INFO (or DEBUG) asks for them all."""
        from stratoflow.handlers.observability import send_logs_to

        if not (os.environ.get("POWERTOOLS_LOG_LEVEL") or os.environ.get("LOG_LEVEL")):
            logging.getLogger("stratoflow").setLevel(logging.WARNING)
        stream = path.open("a", encoding="utf-8")
        self._log_stream = stream
        send_logs_to(stream)

    # -- stopping

    def drain(self) -> None:
        """Stop taking new work, at once: the task pump receives nothing more, and messages
        received but not started go back to the queue, visible at once. Running attempts
        go on, and the completion pumps go on recording reports. Thread-safe; for a signal
        handler's thread too."""
        self._draining.set()
        with self._flow:
            self._flow.notify_all()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def hurry(self) -> None:
        """End a `wait_idle` now (a second Ctrl-C: no more grace)."""
        self._hurry.set()
        with self._flow:
            self._flow.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds, or until `hurry`, for every running attempt to
        end (the grace of a shutdown; call `drain` first). True if none runs."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._flow:
            self._flow.wait_for(
                lambda: (
                    self.progress.running == 0
                    or self._hurry.is_set()
                    or self._failure.reason is not None
                    or time.monotonic() >= deadline
                ),
                # wait_for re-checks on every notification; the deadline needs a wake-up
                # of its own.
                timeout=max(0.0, timeout),
            )
            return self.progress.running == 0

    @property
    def failure(self) -> str | None:
        """Why the engine must stop (one line), once an unrecoverable failure happened:
        met by a loop, or the database file deleted or replaced (looked at now)."""
        if self._failure.reason is None and self._home_watch is not None:
            problem = self._home_watch.problem()
            if problem is not None:
                self.record_failure(problem)
        return self._failure.reason

    def record_failure(self, reason: str) -> None:
        """Record an unrecoverable failure; when the database file was deleted or replaced,
        that is the reason given (an I/O error met since is only its consequence)."""
        problem = self._home_watch.problem() if self._home_watch is not None else None
        super().record_failure(problem or reason)

    @property
    def failed(self) -> threading.Event:
        """Set when an unrecoverable failure is recorded."""
        return self._failure.event

    def stop(self) -> None:
        self._stop.set()
        self._draining.set()
        if self.engine is not None:
            self.engine.sqs.interrupt()
        with self._flow:
            self._flow.notify_all()
        for t in self._threads:
            if t.name != "stratoflow-deleter":
                t.join(timeout=LONG_POLL_SECONDS + 5)
        if self._pool:
            # Queued executions give their messages back at once (nothing takes work now);
            # running ones end with their commands.
            self._pool.shutdown(wait=True)
        self._deletes.put(None)
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        if self._emulator:
            self._emulator.stop()
        if self.engine is not None:
            self.engine.close()
        if self._guardian is not None:
            self._guardian.close()

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # -- what the CLI and tests use

    def register(self, workflow: Workflow, source: str) -> int:
        """Register the workflow as its active (possibly new) version; returns the version."""
        assert self.ports is not None
        meta = services.register_workflow(self.ports, workflow, source)
        assert meta.active_version is not None
        return meta.active_version

    def tick(self) -> list[str]:
        """One scheduler tick, as the every-minute EventBridge rule delivers it."""
        assert self.settings is not None
        event = eventbridge_event(
            dispatcher.SCHEDULED_EVENT, {}, self.settings.region, source="aws.events"
        )
        started = dispatcher.handle(event, LambdaContext("stratoflow-dispatcher"), self.wiring)[
            "started"
        ]
        for run_id in started:
            self._event_for(run_id)
        return list(started)

    def request_run(
        self,
        workflow_id: str,
        version: int,
        *,
        params: Mapping[str, str] | None = None,
        workdir: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Start a run through the dispatcher handler, as EventBridge would invoke it."""
        assert self.settings is not None
        detail: dict[str, Any] = {
            "workflow_id": workflow_id,
            "version": version,
            "params": dict(params or {}),
            "workdir": workdir,
        }
        if run_id:
            detail["run_id"] = run_id
            self._event_for(run_id)
        event = eventbridge_event(dispatcher.RUN_REQUESTED, detail, self.settings.region)
        result = dispatcher.handle(event, LambdaContext("stratoflow-dispatcher"), self.wiring)
        self._event_for(result["run_id"])
        return str(result["run_id"])

    def wait(self, run_id: str, timeout: float | None = None) -> RunRecord:
        """Block until the run has finished (the completion handler signals its end).

        A failing read is logged and tried again after a back-off; raises EngineFailed
        when the engine meets a failure it cannot recover from, or stops."""
        assert self.ports is not None
        event = self._event_for(run_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        failures = 0
        while True:
            try:
                run = self.ports.runs.get_run(run_id)
                failures = 0
            except Exception as exc:
                reason = unrecoverable(exc)
                if reason is not None:
                    self.record_failure(f"{reason}, while waiting for run {run_id}")
                    raise EngineFailed(self._failure.reason or reason) from exc
                failures += 1
                _log.error(
                    "local engine: reading run %s failed (%d in a row); trying again",
                    run_id,
                    failures,
                    exc_info=exc,
                )
                run = None
                event.wait(backoff_delay(failures))
            if run is not None and run.finished_at:
                return run
            if event.is_set():
                # Set by an end the run has since left (a retry redrove it): wait anew.
                event.clear()
                continue
            if self.failure is not None:
                raise EngineFailed(self.failure)
            if self._stop.is_set():
                raise EngineFailed(f"the engine stopped before run {run_id} finished")
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left == 0:
                raise TimeoutError(f"run {run_id} did not finish within {timeout} s")
            # The end is signalled; the look every second is for a failure or a stop.
            event.wait(1.0 if left is None else min(left, 1.0))

    def quiesce(self, timeout: float = 10.0) -> bool:
        """Wait until no command runs and every report has been recorded (shutdown only)."""
        assert self.clients is not None and self.settings is not None
        deadline = time.monotonic() + timeout
        with self._flow:
            self._flow.wait_for(lambda: self.progress.running == 0, timeout)
        while time.monotonic() < deadline and self._failure.reason is None:
            attrs = self.clients.sqs.get_queue_attributes(
                QueueUrl=self.settings.completion_queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            pending = sum(int(v) for v in attrs.values())
            if self.progress.running == 0 and pending == 0:
                return True
            time.sleep(0.05)
        return False

    def _event_for(self, run_id: str) -> threading.Event:
        with self._finished_lock:
            return self._finished.setdefault(run_id, threading.Event())

    def _run_finished(self, run: RunRecord, failed_tasks: Sequence[str]) -> None:
        self._event_for(run.run_id).set()
