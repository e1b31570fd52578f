"""The local runtime's event-source mappings: what Lambda's SQS event-source mappings do
for the deployed functions, done for the handlers in this process.

The task pump receives task messages (a prefetch beyond the commands running) and hands
each to the executor handler as an SQS event, or runs an `executor: fargate` attempt as
its container would; the completion pumps hand batches of reports to the completion
handler. What a handler processed is deleted (in batches, off every task's path), what it
failed is made visible again after a backoff, as ReportBatchItemFailures asks. A mixin of
`LocalRuntime`, whose state (queues, pool, command slots, progress) it drives.

Every loop here survives a failing call (logged, backed off with jitter, tried again);
only a failure `stratoflow.local.failures` calls unrecoverable stops a loop, and it is
recorded for the runtime's owner to stop the engine. Draining (`drain`) stops the task
pump at once: nothing more is received, and a message received but not yet started goes
back to its queue, visible at once.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stratoflow.config import ENV_TASK_MESSAGE
from stratoflow.core.records import AttemptReport, TaskMessage
from stratoflow.handlers import completion, executor
from stratoflow.local.emulator import package_root
from stratoflow.local.events import LambdaContext, sqs_event
from stratoflow.local.failures import FailureLatch, backoff_delay, unrecoverable

if TYPE_CHECKING:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from stratoflow.aws.clients import AwsClients
    from stratoflow.bootstrap import Wiring
    from stratoflow.config import Settings
    from stratoflow.embedded.engine import EmbeddedEngine
    from stratoflow.local.runtime import Progress
    from stratoflow.runner.guardian import ProcessGuardian

LONG_POLL_SECONDS = 1
_log = logging.getLogger("stratoflow.local")
PREFETCH = 10
COMPLETION_PUMPS = 3
DELETE_LINGER_SECONDS = 0.05


class EventSourceMappings:
    """The pumps of `LocalRuntime` (see the module docstring); the runtime sets these."""

    settings: Settings | None
    clients: AwsClients | EmbeddedEngine | None
    progress: Progress
    workers: int
    redelivery_delay: float
    _stop: threading.Event
    _draining: threading.Event
    _failure: FailureLatch
    _flow: threading.Condition
    _held: int
    _waiting: int
    _capacity: int
    _free_slots: int
    _slot_held: threading.local
    _deletes: queue.Queue[tuple[str, str] | None]
    _pool: ThreadPoolExecutor | None
    _progress_lock: threading.Lock
    _guardian: ProcessGuardian | None
    _on_report: Callable[[AttemptReport], None] | None

    @property
    def wiring(self) -> Wiring:
        raise NotImplementedError  # LocalRuntime's

    def _receive(self, queue_url: str, limit: int) -> list[dict[str, Any]]:
        assert self.clients is not None
        resp = self.clients.sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=limit,
            WaitTimeSeconds=LONG_POLL_SECONDS,
            AttributeNames=["All"],
        )
        return list(resp.get("Messages", []))

    def _settle_batch(
        self, queue_url: str, messages: list[dict[str, Any]], response: dict[str, Any]
    ) -> None:
        """Delete what the handler processed; make its failures visible again soon."""
        assert self.clients is not None
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        for m in messages:
            if m["MessageId"] not in failed:
                self._deletes.put((queue_url, m["ReceiptHandle"]))
        for m in messages:
            if m["MessageId"] in failed:
                count = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
                delay = int(min(self.redelivery_delay * 2 ** (count - 1), 60))
                self.clients.sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=delay
                )

    def _delete_processed(self) -> None:
        """Delete processed messages in batches of up to ten (one request per batch).

        A processed message only has to be gone before its visibility timeout (minutes), so
        the first waits up to DELETE_LINGER_SECONDS for others to share its request: a busy
        queue is then deleted ten at a time, off every task's path.
        """
        assert self.clients is not None
        stopping = False
        while not stopping:
            first = self._deletes.get()
            pending = [first]
            deadline = time.monotonic() + DELETE_LINGER_SECONDS
            while len(pending) < 20 and None not in pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    pending.append(self._deletes.get(timeout=left))
                except queue.Empty:
                    break
            stopping = None in pending
            by_queue: dict[str, list[str]] = {}
            for item in pending:
                if item is not None:
                    by_queue.setdefault(item[0], []).append(item[1])
            for url, handles in by_queue.items():
                for start in range(0, len(handles), 10):
                    chunk = handles[start : start + 10]
                    try:
                        self.clients.sqs.delete_message_batch(
                            QueueUrl=url,
                            Entries=[
                                {"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)
                            ],
                        )
                    except Exception as exc:
                        # Undeleted, they come back after their visibility timeout and are
                        # dropped as duplicates at their claim: only wasted work. The
                        # deleter goes on even after an unrecoverable failure: it must
                        # still take the stop's end marker.
                        self._back_off("deleting processed messages", 1, exc)

    def _pump_tasks(self) -> None:
        assert self.settings is not None and self._pool is not None
        url = self.settings.task_queue_url
        failures = 0
        while self._taking_work():
            # Receive when the prefetched tasks are about to run out, not each time one
            # finishes: a busy queue is then read ten messages at a time (as the
            # event-source mapping does) while the workers never wait for a receive.
            with self._flow:
                self._flow.wait_for(
                    lambda: (
                        not self._taking_work()
                        or (self._held < self._capacity and self._waiting <= self.workers)
                    )
                )
                if not self._taking_work():
                    return
                taken = min(10, self._capacity - self._held)
                self._held += taken
                self._waiting += taken
            try:
                messages = self._receive(url, taken)
                failures = 0
            except Exception as exc:
                messages = []
                failures += 1
                if not self._back_off("receiving tasks", failures, exc):
                    return
            finally:
                with self._flow:
                    self._held -= taken - len(messages)
                    self._waiting -= taken - len(messages)
            # Received in the instant the engine began to drain: `_execute_one` gives
            # them back.
            for m in messages:
                self._pool.submit(self._execute_one, url, m)

    def _taking_work(self) -> bool:
        return not (self._stop.is_set() or self._draining.is_set() or self._failure.reason)

    def _back_off(self, what: str, failures: int, exc: BaseException) -> bool:
        """Log a loop's failure with its context and wait before it tries again: a
        transient error (a database locked longer than its busy timeout, an endpoint that
        hiccups) must not end the loop, and a lasting one must not make it spin. Jittered,
        doubling from 0.1 s up to 5 s; a stop ends the wait. Returns False (at once) if the
        failure is unrecoverable: it is recorded for the engine's owner, and the loop ends."""
        reason = unrecoverable(exc)
        if reason is not None:
            self.record_failure(f"{reason}, while {what}")
            return False
        _log.error(
            "local engine: %s failed (%d in a row); trying again",
            what,
            failures,
            exc_info=exc,
        )
        self._stop.wait(backoff_delay(failures))
        return True

    def record_failure(self, reason: str) -> None:
        """Record an unrecoverable failure: the engine's owner stops the engine."""
        if self._failure.set(reason):
            _log.error("local engine: stopping: %s", reason)
        with self._flow:
            self._flow.notify_all()

    def _take_slot(self) -> bool:
        """Wait for a command slot; False (at once) when the engine stops taking work."""
        with self._flow:
            self._flow.wait_for(lambda: self._free_slots > 0 or not self._taking_work())
            if not self._taking_work():
                return False
            self._free_slots -= 1
        self._slot_held.value = True
        return True

    def _release_slot(self) -> None:
        """Give the executor's command slot back (its command has ended); a no-op in a
        thread that holds none, such as a test calling a handler itself."""
        if getattr(self._slot_held, "value", False):
            self._slot_held.value = False
            with self._flow:
                self._free_slots += 1
                self._flow.notify_all()

    def _execute_one(self, url: str, message: dict[str, Any]) -> None:
        assert self.settings is not None
        # `workers` is how many commands run at once: an attempt holds a slot from its
        # claim (so that no lease runs out while it waits) until its command ends.
        started = self._take_slot()
        try:
            with self._flow:
                self._waiting -= 1
                self._flow.notify_all()
            if started:
                self._invoke_executor(url, message)
            else:
                self._give_back(url, message)
        except Exception as exc:
            # What was not settled comes back after its visibility timeout.
            reason = unrecoverable(exc)
            if reason is not None:
                self.record_failure(f"{reason}, while running a task")
            else:
                _log.error("local engine: running a task failed", exc_info=exc)
        finally:
            self._release_slot()
            with self._flow:
                self._held -= 1
                self._flow.notify_all()

    def _give_back(self, url: str, message: dict[str, Any]) -> None:
        """Make a message received but not started visible again at once: the engine is
        stopping, and the next one (or, after a cancel, the claim that drops it) takes it."""
        assert self.clients is not None
        self.clients.sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )

    def _invoke_executor(self, url: str, message: dict[str, Any]) -> None:
        assert self.settings is not None
        run_id = _run_of(message["Body"])
        with self._progress_lock:
            self.progress.running += 1
            if run_id:
                self.progress.running_runs[run_id] += 1
        try:
            if _wants_fargate(message["Body"]):
                response = self._run_fargate_entrypoint(message)
            else:
                event = sqs_event([message], url, self.settings.region)
                response = _invoke(executor.handle, event, "stratoflow-executor", self.wiring)
            self._settle_batch(url, [message], response)
        finally:
            with self._progress_lock:
                self.progress.running -= 1
                if run_id:
                    self.progress.running_runs[run_id] -= 1
                    if self.progress.running_runs[run_id] <= 0:
                        del self.progress.running_runs[run_id]

    def _run_fargate_entrypoint(self, message: dict[str, Any]) -> dict[str, Any]:
        """Run an `executor: fargate` attempt as its container would: a process running
        `python -m stratoflow.runner.fargate` with the task message in its environment."""
        assert self.settings is not None
        env = {
            **os.environ,
            **self.settings.as_env(),
            ENV_TASK_MESSAGE: message["Body"],
            "PYTHONPATH": os.pathsep.join(
                p for p in (package_root(), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        # In a group of its own that the guardian knows: should this engine die, the
        # guardian's SIGTERM reaches the runner, which takes it as a cancel (as on ECS).
        proc = subprocess.Popen(
            [sys.executable, "-m", "stratoflow.runner.fargate"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if self._guardian is not None:
            self._guardian.watch(proc.pid)
        try:
            proc.wait()
        finally:
            if self._guardian is not None:
                self._guardian.release(proc.pid)
        if proc.returncode == 0:
            return {"batchItemFailures": []}
        return {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}

    def _pump_completions(self) -> None:
        assert self.settings is not None
        url = self.settings.completion_queue_url
        failures = 0
        while not self._stop.is_set() and not self._failure.reason:
            try:
                messages = self._receive(url, 10)
                if messages:
                    event = sqs_event(messages, url, self.settings.region)
                    response = _invoke(
                        completion.handle, event, "stratoflow-completion", self.wiring
                    )
                    self._settle_batch(url, messages, response)
                    self._note_reports(messages, response)
                failures = 0
            except Exception as exc:
                # What was received and not settled is delivered again after its
                # visibility timeout, as SQS would: nothing recorded is lost.
                failures += 1
                if not self._back_off("handling reports", failures, exc):
                    return

    def _note_reports(self, messages: list[dict[str, Any]], response: dict[str, Any]) -> None:
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        for m in messages:
            if m["MessageId"] in failed:
                continue
            try:
                report = AttemptReport.from_json(m["Body"])
            except (ValueError, TypeError):
                continue
            with self._progress_lock:
                if report.succeeded:
                    self.progress.succeeded += 1
                else:
                    self.progress.failed += 1
            if self._on_report:
                self._on_report(report)


def _run_of(body: str) -> str | None:
    try:
        return TaskMessage.from_json(body).run_id
    except (ValueError, TypeError):
        return None


def _wants_fargate(body: str) -> bool:
    try:
        return TaskMessage.from_json(body).executor == "fargate"
    except (ValueError, TypeError):
        return False  # a poison message: let the executor handler reject it


def _invoke(
    handle: Callable[[dict[str, Any], Any, Wiring], dict[str, Any]],
    event: dict[str, Any],
    name: str,
    wiring: Wiring,
) -> dict[str, Any]:
    """Call a batch handler; an exception fails the whole batch, as in Lambda."""
    try:
        return handle(event, LambdaContext(name), wiring)
    except Exception:
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]}
