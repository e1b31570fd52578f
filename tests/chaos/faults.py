"""Fault injectors for the chaos suite, at the port boundary of either engine.

`Chaos` holds the faults of the runs under test (one `RunFaults` per run, found from the
run id or workflow id that every call carries) and wraps a started `LocalRuntime`:

- the ports the handlers use (`RunStore`, `DefinitionStore`, `TaskQueue`,
  `CompletionQueue`, `Clock`), replaced in the runtime's `Ports` bundle, which is the
  object `bootstrap` hands every handler;
- the SQS-shaped client the runtime's pumps receive from and delete with (the embedded
  engine's `EmbeddedSqs`, or boto3's SQS client on the emulator);
- on the emulator path, boto3's DynamoDB client, where throttling and a connection closed
  after the write are what a real client would raise.

Every decision is a pure function of (the run's seed, the call site, what the call is
about, how many times that was asked before), not of thread timing, so a seed injects the
same faults at the same logical points each time it runs.
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from stratoflow.core.records import AttemptReport, TaskMessage, TaskRecord
from stratoflow.core.states import TaskStatus
from stratoflow.local.runtime import LocalRuntime
from stratoflow.ports import Claim, ClaimOutcome, Clock, Finalized, FinalizeOutcome

LOST_ERROR = "executor lost"
"""How the error of a lost attempt's report starts (the claim's EXPIRED path, the sweep)."""


class ExecutorKilled(BaseException):
    """The executor's process died here. A BaseException, so nothing in the handler or the
    runtime's pump catches it as a failure to report: the message is neither deleted nor
    made visible again, and comes back after its visibility timeout, as after a crash."""


class CompletionKilled(Exception):
    """The completion handler died between its write and its enqueue (its batch is
    delivered again, as after a crash)."""


# Fault sites and the range each rate is drawn from when the site is enabled for a run.
# Per-call rates are low enough that five failed deliveries in a row (the dead-letter
# queue's receive count) stay improbable; the kills happen at most once per point.
SITES: dict[str, tuple[float, float]] = {
    "store.before": (0.01, 0.03),  # a store call fails before it reaches the store
    "store.after": (0.01, 0.03),  # a write applies, then its caller sees an error
    "definitions.before": (0.02, 0.05),
    "claim.kill": (0.1, 0.3),  # the executor dies between its claim and its command
    "report.kill": (0.1, 0.3),  # … between its command and its report
    "settle.kill": (0.1, 0.3),  # the completion handler dies between a write and a send
    "task.dup": (0.1, 0.3),
    "report.dup": (0.1, 0.3),
    "task.delay": (0.1, 0.3),
    "report.delay": (0.1, 0.3),
    "receive.drop": (0.03, 0.1),  # received, then the consumer dies before handling it
    "delete.fail": (0.05, 0.2),  # processed, the delete is lost: delivered again
}
ONCE = {"claim.kill", "report.kill", "settle.kill"}
WRITES = frozenset(
    {
        "create_run",
        "cancel_unstarted",
        "redrive",
        "claim_attempt",
        "retry_attempt",
        "finalize_task",
        "decide_task",
        "decide_tasks",
        "put_waiting",
        "start_waiting",
        "begin_run",
        "finish_start",
        "finish_run",
        "claim_compensation",
        "record_compensation",
    }
)


@dataclass
class RunFaults:
    """The faults of one run: seeded rates, what was injected, and the lost attempts seen."""

    seed: int
    rates: dict[str, float]
    workdir: Path
    injected: Counter[str] = field(default_factory=Counter)
    lost: set[tuple[str, int]] = field(default_factory=set)
    """(task, attempt) whose `lost` report was the one the store applied."""
    armed: bool = True
    _asked: Counter[tuple[str, str]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_seed(cls, seed: int, workdir: Path) -> RunFaults:
        rng = random.Random(f"faults-{seed}")
        rates = {}
        for site, (low, high) in SITES.items():
            if rng.random() < 0.6:
                rates[site] = rng.uniform(low, high)
        return cls(seed=seed, rates=rates, workdir=workdir)

    def hit(self, site: str, key: str) -> bool:
        """Whether to inject `site` at this call about `key` (its n-th such call)."""
        rate = self.rates.get(site, 0.0)
        if not rate or not self.armed:
            return False
        with self._lock:
            n = self._asked[(site, key)]
            self._asked[(site, key)] += 1
        if site in ONCE and n:
            return False
        if random.Random(f"{self.seed}|{site}|{key}|{n}").random() >= rate:
            return False
        with self._lock:
            self.injected[site] += 1
        return True

    def saw_lost(self, task_id: str, attempt: int) -> None:
        with self._lock:
            self.lost.add((task_id, attempt))
        # Kept on disk too: an engine that is SIGKILLed takes its memory with it.
        with (self.workdir / "lost").open("a") as f:
            f.write(f"{task_id} {attempt}\n")

    def lost_attempts(self) -> set[tuple[str, int]]:
        found = set(self.lost)
        path = self.workdir / "lost"
        if path.exists():
            for line in path.read_text().splitlines():
                task_id, attempt = line.split()
                found.add((task_id, int(attempt)))
        return found


def _thread_role() -> str:
    """Which part of the runtime this thread plays: executor, completion, or other."""
    name = threading.current_thread().name
    if name.startswith("stratoflow-executor"):
        return "executor"
    if name.startswith("stratoflow-completion"):
        return "completion"
    if name.startswith("stratoflow-task-pump"):
        return "task-pump"
    return "other"


_context = threading.local()


class Chaos:
    """The faults of the runs under test, wrapped around one runtime."""

    def __init__(self, *, embedded: bool, skew: float = 0.0, visibility: tuple[int, int] = (2, 2)):
        self.embedded = embedded
        self.skew = skew
        self.visibility = visibility
        """Visibility timeouts (task queue, completion queue) the pumps receive with."""
        self._by_run: dict[str, RunFaults] = {}
        self._by_workflow: dict[str, RunFaults] = {}
        self._lock = threading.Lock()
        self.shuffle = random.Random(0)

    def add(self, run_id: str, workflow_id: str, faults: RunFaults) -> None:
        with self._lock:
            self._by_run[run_id] = faults
            self._by_workflow[workflow_id] = faults

    def of_run(self, run_id: str | None) -> RunFaults | None:
        return self._by_run.get(run_id or "")

    def of_workflow(self, workflow_id: str | None) -> RunFaults | None:
        return self._by_workflow.get(workflow_id or "")

    def install(self, rt: LocalRuntime) -> None:
        """Wrap the ports and clients of a started runtime."""
        ports = rt.ports
        assert ports is not None and rt.clients is not None
        ports.runs = FaultyRunStore(ports.runs, self)
        ports.definitions = FaultyDefinitions(ports.definitions, self)
        ports.tasks = FaultyTaskQueue(ports.tasks, self)
        ports.completions = FaultyCompletionQueue(ports.completions, self)
        ports.clock = SkewedClock(ports.clock, self.skew)
        if rt.engine is not None:
            rt.engine.sqs = FaultySqs(rt.engine.sqs, self, rt)  # type: ignore[assignment]
        else:
            cache = rt.clients._clients  # type: ignore[union-attr]
            cache["sqs"] = FaultySqs(rt.clients.sqs, self, rt)
            cache["dynamodb"] = FaultyDynamo(rt.clients.dynamodb, self)

    def store_error(self, after: bool) -> Exception:
        """What a failing store call raises on this engine."""
        if self.embedded:
            return sqlite3.OperationalError("database is locked")
        from botocore.exceptions import ClientError, ConnectionClosedError

        if after:
            return ConnectionClosedError(endpoint_url="http://chaos.invalid")
        code = self.shuffle.choice(
            ("ThrottlingException", "ProvisionedThroughputExceededException")
        )
        return ClientError({"Error": {"Code": code, "Message": "chaos"}}, "chaos")


def _in_handler() -> bool:
    # Faults go where a handler would meet them; the test's own calls (starting runs,
    # ticking, reading the results) run undisturbed.
    return _thread_role() in ("executor", "completion")


class FaultyRunStore:
    """A `RunStore` whose calls fail at seeded points; it also notes applied lost reports
    and plays the executor's death right after a claim."""

    def __init__(self, inner: Any, chaos: Chaos) -> None:
        self._inner = inner
        self._chaos = chaos

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            run_id = args[0] if args and isinstance(args[0], str) else None
            faults = self._chaos.of_run(run_id)
            key = f"{name}:{_detail(args)}"
            # The emulator's DynamoDB client (`FaultyDynamo`) injects under this call's name.
            _context.faults, _context.key = faults, key
            try:
                embedded = self._chaos.embedded
                if faults and _in_handler() and embedded and faults.hit("store.before", key):
                    raise self._chaos.store_error(after=False)
                result = method(*args, **kwargs)
            except BaseException:
                # A write may have applied before its caller died (the emulator's closed
                # connection, a completion handler killed in `finalize_task`'s callback).
                if faults is not None:
                    self._observe_after_failure(faults, name, args)
                raise
            finally:
                _context.faults = None
            if faults is None:
                return result
            self._observe(faults, name, args, kwargs, result)
            if not _in_handler():
                return result
            claimed = isinstance(result, Claim) and result.outcome is ClaimOutcome.CLAIMED
            if claimed and faults.hit("claim.kill", key):
                raise ExecutorKilled(f"executor killed after claiming {key}")
            if self._chaos.embedded and name in WRITES and faults.hit("store.after", key):
                raise self._chaos.store_error(after=True)
            return result

        return call

    @staticmethod
    def _observe(
        faults: RunFaults, name: str, args: Sequence[Any], kwargs: dict[str, Any], result: Any
    ) -> None:
        if name == "retry_attempt" and result is True:
            task_id, attempt, fields = args[1], args[2], args[3]
            if str(fields.get("error") or "").startswith(LOST_ERROR):
                faults.saw_lost(task_id, attempt)
        if name == "finalize_task" and isinstance(result, Finalized):
            s = args[1]
            if (
                result.outcome is FinalizeOutcome.APPLIED
                and s.attempt is not None
                and str(s.fields.get("error") or "").startswith(LOST_ERROR)
            ):
                faults.saw_lost(s.task_id, s.attempt)

    def _observe_after_failure(self, faults: RunFaults, name: str, args: Sequence[Any]) -> None:
        """After a failed retry or settlement of a lost report: whether it applied, from the
        task's record (read at once, before anything can move the task on)."""
        if name == "retry_attempt":
            run_id, task_id, attempt, fields = args[0], args[1], args[2], args[3]
        elif name == "finalize_task" and args[1].attempt is not None:
            run_id, task_id, attempt, fields = (
                args[0],
                args[1].task_id,
                args[1].attempt,
                args[1].fields,
            )
        else:
            return
        if not str(fields.get("error") or "").startswith(LOST_ERROR):
            return
        if is_lost(self._inner.get_task(run_id, task_id), attempt):
            faults.saw_lost(task_id, attempt)


def is_lost(rec: TaskRecord, attempt: int) -> bool:
    """Whether the record shows `attempt` settled (retried or failed) from a lost report.
    Not from its error alone: a settlement leaves fields its report lacks as they were,
    so an error can be an earlier attempt's (docs/reliability.md, found #5)."""
    return (
        rec.attempt == attempt
        and rec.status in (TaskStatus.UP_FOR_RETRY, TaskStatus.FAILED)
        and rec.exit_code is None
        and not rec.timed_out
        and str(rec.error or "").startswith(LOST_ERROR)
    )


def _detail(args: Sequence[Any]) -> str:
    """What a store call is about, beyond its run: its task and attempt, if it has them."""
    parts = []
    for a in args[1:3]:
        if isinstance(a, str | int):
            parts.append(str(a))
        elif hasattr(a, "task_id"):
            parts.append(f"{a.task_id}.{getattr(a, 'attempt', '')}")
    return ":".join(parts)


class FaultyDefinitions:
    """A `DefinitionStore` whose reads of a plan fail at seeded points."""

    def __init__(self, inner: Any, chaos: Chaos) -> None:
        self._inner = inner
        self._chaos = chaos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get_plan(self, workflow_id: str, version: int) -> Any:
        faults = self._chaos.of_workflow(workflow_id)
        if faults and _in_handler() and faults.hit("definitions.before", workflow_id):
            raise self._chaos.store_error(after=False)
        return self._inner.get_plan(workflow_id, version)


def _later(seconds: float, send: Callable[[], None]) -> None:
    """Send after `seconds` (a delayed message, which also reorders it)."""

    def fire() -> None:
        # The runtime may have stopped since: a message sent into nothing is only lost,
        # which is what a late duplicate may be.
        with contextlib.suppress(Exception):
            send()

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


class FaultyTaskQueue:
    """A `TaskQueue` that duplicates and delays messages, and plays the completion
    handler's death between its write and its send."""

    def __init__(self, inner: Any, chaos: Chaos) -> None:
        self._inner = inner
        self._chaos = chaos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def send_tasks(self, messages: Iterable[TaskMessage], delay_seconds: int = 0) -> None:
        batch = list(messages)
        faults = self._chaos.of_run(batch[0].run_id) if batch else None
        if faults is None or not _in_handler():
            self._inner.send_tasks(batch, delay_seconds)
            return
        key = ",".join(f"{m.task_id}.{m.attempt}" for m in batch)
        if _thread_role() == "completion" and faults.hit("settle.kill", key):
            raise CompletionKilled(f"completion handler killed before sending {key}")
        if faults.hit("task.delay", key):
            delay = random.Random(f"{faults.seed}|{key}").uniform(0.1, 1.5)
            _later(delay, lambda: self._inner.send_tasks(batch, delay_seconds))
        else:
            self._inner.send_tasks(batch, delay_seconds)
        if faults.hit("task.dup", key):
            self._inner.send_tasks(batch, delay_seconds)


class FaultyCompletionQueue:
    """A `CompletionQueue` that duplicates and delays reports, and plays the executor's
    death between its command and its report."""

    def __init__(self, inner: Any, chaos: Chaos) -> None:
        self._inner = inner
        self._chaos = chaos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def send_reports(self, reports: Iterable[AttemptReport]) -> None:
        batch = list(reports)
        faults = self._chaos.of_run(batch[0].run_id) if batch else None
        if faults is None or not _in_handler():
            self._inner.send_reports(batch)
            return
        key = ",".join(f"{r.task_id}.{r.attempt}{'.lost' if r.lost else ''}" for r in batch)
        if faults.hit("report.kill", key):
            raise ExecutorKilled(f"executor killed before reporting {key}")
        if faults.hit("report.delay", key):
            delay = random.Random(f"{faults.seed}|{key}").uniform(0.1, 1.5)
            _later(delay, lambda: self._inner.send_reports(batch))
        else:
            self._inner.send_reports(batch)
        if faults.hit("report.dup", key):
            self._inner.send_reports(batch)


class SkewedClock:
    """The engine's clock off by `skew` seconds, and each thread (a host, say) off by up
    to a quarter of a second more."""

    def __init__(self, inner: Clock, skew: float) -> None:
        self._inner = inner
        self._skew = skew
        self._local = threading.local()

    def now(self) -> datetime:
        jitter = getattr(self._local, "jitter", None)
        if jitter is None:
            jitter = self._local.jitter = random.uniform(-0.25, 0.25)
        return self._inner.now() + timedelta(seconds=self._skew + jitter)


def _run_id_of(body: str) -> str | None:
    try:
        found = json.loads(body).get("run_id")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


class FaultySqs:
    """The SQS-shaped client of the runtime's pumps: short visibility timeouts, shuffled
    batches, messages dropped after their receipt (the consumer died before handling
    them: they come back after their visibility timeout) and deletes that are lost."""

    def __init__(self, inner: Any, chaos: Chaos, rt: LocalRuntime) -> None:
        self._inner = inner
        self._chaos = chaos
        assert rt.settings is not None
        self._task_url = rt.settings.task_queue_url
        self._completion_url = rt.settings.completion_queue_url
        self._run_of_handle: dict[str, str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        url = kwargs.get("QueueUrl")
        if url == self._task_url:
            kwargs.setdefault("VisibilityTimeout", self._chaos.visibility[0])
        elif url == self._completion_url:
            kwargs.setdefault("VisibilityTimeout", self._chaos.visibility[1])
        else:
            return dict(self._inner.receive_message(**kwargs))
        resp = dict(self._inner.receive_message(**kwargs))
        kept = []
        for m in resp.get("Messages", []):
            run_id = _run_id_of(m.get("Body", ""))
            faults = self._chaos.of_run(run_id)
            if faults and faults.hit("receive.drop", m["MessageId"]):
                continue
            if run_id:
                self._run_of_handle[m["ReceiptHandle"]] = run_id
            kept.append(m)
        self._chaos.shuffle.shuffle(kept)
        resp["Messages"] = kept
        return resp

    def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        entries = kwargs.get("Entries", [])
        # A lost delete request: every entry of it comes back after its visibility timeout.
        handle = entries[0]["ReceiptHandle"] if entries else ""
        faults = self._chaos.of_run(self._run_of_handle.pop(handle, None))
        for e in entries[1:]:
            self._run_of_handle.pop(e["ReceiptHandle"], None)
        if faults and faults.hit("delete.fail", handle):
            raise ConnectionError("chaos: the delete request was lost")
        return dict(self._inner.delete_message_batch(**kwargs))


WRITE_OPERATIONS = frozenset(
    {"put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item"}
)


class FaultyDynamo:
    """boto3's DynamoDB client as the AWS adapters meet it when a call's retries are used
    up: throttled before the call, or the connection closed after a write applied."""

    def __init__(self, inner: Any, chaos: Chaos) -> None:
        self._inner = inner
        self._chaos = chaos

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)
        if not callable(method) or name.startswith("_") or name in ("meta", "exceptions"):
            return method

        def call(**kwargs: Any) -> Any:
            faults: RunFaults | None = getattr(_context, "faults", None)
            if faults is None or not _in_handler():
                return method(**kwargs)
            key = f"{getattr(_context, 'key', '')}:{name}"
            if faults.hit("store.before", key):
                raise self._chaos.store_error(after=False)
            result = method(**kwargs)
            if name in WRITE_OPERATIONS and faults.hit("store.after", key):
                raise self._chaos.store_error(after=True)
            return result

        return call
