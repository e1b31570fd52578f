"""The dispatcher's tick mends a run whose next step was lost (`services.mend_quiet_runs`),
on both engines.

Each test lets a completion handler die after its write and before what follows it, and
then drops its report for good, as a report does that fails five handlings and goes to
the dead-letter queue (docs/reliability.md, #7): nothing would come back to the run.
The tick, once the run has been quiet for `QUIET_SECONDS`, finds it and does what the
dead handler left undone; the run then ends as it should, and nothing runs twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from stratoflow import services
from stratoflow.core.model import Workflow
from stratoflow.core.records import AttemptReport, RunRecord, TaskMessage, iso
from stratoflow.core.states import RunStatus, TaskStatus
from stratoflow.local.runtime import LocalRuntime
from stratoflow.services import Ports
from tests.functions.test_schedules import FakeClock, utc
from tests.support import unique_id


class Died(Exception):
    """The handler's process ended here (a Lambda timed out, a container was killed)."""


class Queue:
    """The task queue, recording what is sent; `die_at_send` makes the next send die."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.sent: list[tuple[TaskMessage, int]] = []
        self.die_at_send = False

    def send_tasks(self, messages: Iterable[TaskMessage], delay_seconds: int = 0) -> None:
        batch = list(messages)
        if self.die_at_send:
            self.die_at_send = False
            raise Died("the completion handler died before sending")
        self.sent += [(m, delay_seconds) for m in batch]
        self._inner.send_tasks(batch, delay_seconds)

    def of(self, run: RunRecord, task_id: str) -> list[TaskMessage]:
        return [m for m, _ in self.sent if m.task_id == task_id and m.run_id == run.run_id]


class Engine:
    """One engine's ports with a fake clock and a recording task queue."""

    def __init__(self, ports: Ports, clock: FakeClock, queue: Queue) -> None:
        self.ports, self.clock, self.queue = ports, clock, queue

    def start(self, spec: dict[str, Any]) -> RunRecord:
        workflow = Workflow.model_validate({"id": unique_id("mend"), **spec})
        meta = services.register_workflow(self.ports, workflow, "test")
        assert meta.active_version is not None
        plan = self.ports.definitions.get_plan(workflow.id, meta.active_version)
        run, _ = services.start_run(self.ports, plan)
        return run

    def attempt(
        self, run: RunRecord, task_id: str, attempt: int = 1, exit_code: int = 0
    ) -> AttemptReport:
        """Claim `attempt` of the task, as an executor does, and return its report."""
        now = self.clock.now()
        claim = self.ports.runs.claim_attempt(
            run.run_id, task_id, attempt, iso(now), now.timestamp() + 600, now.timestamp()
        )
        assert claim.outcome.value == "claimed", (task_id, claim)
        return AttemptReport(
            run_id=run.run_id,
            workflow_id=run.workflow_id,
            version=run.version,
            task_id=task_id,
            attempt=attempt,
            exit_code=exit_code,
            started_at=iso(now),
            finished_at=iso(now),
        )

    def run_task(self, run: RunRecord, task_id: str, attempt: int = 1, exit_code: int = 0) -> None:
        services.record_completion(self.ports, self.attempt(run, task_id, attempt, exit_code))

    def dies_handling(self, report: AttemptReport) -> None:
        """The completion handler dies at its first send after writing; the report is
        never handled again."""
        self.queue.die_at_send = True
        with pytest.raises(Died):
            services.record_completion(self.ports, report)

    def later(self, seconds: float) -> None:
        self.clock.set(self.clock.now() + timedelta(seconds=seconds))

    def tick(self, run: RunRecord) -> bool:
        """One tick's mending; whether it mended `run` (the engine is shared by the
        module's tests: their runs are looked at too)."""
        return run.run_id in services.mend_quiet_runs(self.ports)

    def status(self, run: RunRecord, task_id: str) -> TaskStatus:
        return self.ports.runs.get_task(run.run_id, task_id).status

    def run_status(self, run: RunRecord) -> RunStatus:
        found = self.ports.runs.get_run(run.run_id)
        assert found is not None
        return found.status


@pytest.fixture(params=["embedded", "emulator"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    rt: LocalRuntime = request.getfixturevalue(
        "bare" if request.param == "embedded" else "emulator_bare"
    )
    assert rt.ports is not None
    clock = FakeClock(utc(2026, 3, 7, 10, 30))
    queue = Queue(rt.ports.tasks)
    monkeypatch.setattr(rt.ports, "clock", clock)
    monkeypatch.setattr(rt.ports, "tasks", queue)
    yield Engine(rt.ports, clock, queue)


CHAIN = {
    "tasks": [
        {"id": "t0", "command": "true"},
        {"id": "t1", "command": "true", "depends": ["t0"]},
        {"id": "t2", "command": "true", "depends": ["t1"], "trigger_rule": "none_skipped"},
    ]
}


@pytest.mark.parametrize("concurrency", [None, 1], ids=["uncapped", "capped"])
def test_a_dependent_decided_and_never_sent_is_sent_by_the_tick(
    engine: Engine, concurrency: int | None
) -> None:
    # GIVEN a chain (capped or not) whose t1 failed; its handler decided t2 (queued, and
    # holding the run's one slot under the cap) and died before sending it; its report
    # went to the dead-letter queue
    run = engine.start({**CHAIN, "concurrency": concurrency})
    engine.run_task(run, "t0")
    engine.dies_handling(engine.attempt(run, "t1", exit_code=1))
    assert engine.status(run, "t2") is TaskStatus.QUEUED and engine.queue.of(run, "t2") == []
    # WHEN the tick comes before the run has been quiet for long, and then after
    engine.later(services.QUIET_SECONDS - 1)
    early = engine.tick(run)
    engine.later(2)
    mended = engine.tick(run)
    # THEN only the second mends it: t2's first attempt is sent, once
    assert (early, mended) == (False, True)
    assert [m.attempt for m in engine.queue.of(run, "t2")] == [1]
    # and the run ends when t2 has run (succeeded: its one leaf did); the slot is free
    engine.run_task(run, "t2")
    assert engine.run_status(run) is RunStatus.SUCCEEDED
    final = engine.ports.runs.get_run(run.run_id)
    assert final is not None and final.active == 0
    quiet = engine.ports.runs.quiet_runs("9999-12-31T00:00:00.000000Z", 100)
    assert run.run_id not in [r for r, _ in quiet]


def test_a_dependent_whose_decision_was_lost_is_decided_from_its_parents(engine: Engine) -> None:
    # GIVEN a fan-in a, b → c; a succeeded; b's handler counted b in c and died before
    # reading c back to decide it (reads fail as the process dies)
    run = engine.start(
        {
            "tasks": [
                {"id": "a", "command": "true"},
                {"id": "b", "command": "true"},
                {"id": "c", "command": "true", "depends": ["a", "b"]},
            ]
        }
    )
    engine.run_task(run, "a")
    report = engine.attempt(run, "b")
    runs = engine.ports.runs

    def dies(*args: Any, **kwargs: Any) -> Any:
        raise Died("the completion handler died after its write")

    original = runs.get_run_and_tasks
    runs.get_run_and_tasks = dies  # type: ignore[method-assign]
    try:
        with pytest.raises(Died):
            services.record_completion(engine.ports, report)
    finally:
        runs.get_run_and_tasks = original  # type: ignore[method-assign]
    assert engine.status(run, "b") is TaskStatus.SUCCEEDED
    assert engine.status(run, "c") is TaskStatus.PENDING
    # WHEN the tick finds the run quiet
    engine.later(services.QUIET_SECONDS + 1)
    assert engine.tick(run)
    # THEN c is decided and sent once, and the run ends when it has run
    assert [m.attempt for m in engine.queue.of(run, "c")] == [1]
    engine.run_task(run, "c")
    assert engine.run_status(run) is RunStatus.SUCCEEDED


def test_a_retry_never_sent_is_sent_with_what_is_left_of_its_delay(engine: Engine) -> None:
    # GIVEN a task with a retry 900 s after a failure, whose handler recorded the retry and
    # died before sending it
    run = engine.start(
        {"tasks": [{"id": "only", "command": "true", "retries": 1, "retry_delay": "900s"}]}
    )
    engine.dies_handling(engine.attempt(run, "only", exit_code=1))
    assert engine.status(run, "only") is TaskStatus.UP_FOR_RETRY
    # WHEN the tick finds the run quiet, 601 s later
    engine.later(services.QUIET_SECONDS + 1)
    assert engine.tick(run)
    # THEN attempt 2 is sent, due at the retry's time (the queue's delay covers the rest)
    [(message, delay)] = [
        (m, d) for m, d in engine.queue.sent if m.run_id == run.run_id and m.attempt > 1
    ]
    assert message.attempt == 2
    assert 290 <= delay <= 299
    engine.run_task(run, "only", attempt=2)
    assert engine.run_status(run) is RunStatus.SUCCEEDED


def test_a_run_whose_last_task_settled_and_was_never_finished_is_finished(
    engine: Engine,
) -> None:
    # GIVEN a one-task run whose handler recorded its task and died before finishing it
    run = engine.start({"tasks": [{"id": "only", "command": "true"}]})
    runs = engine.ports.runs
    original = runs.finish_run

    def dies(*args: Any, **kwargs: Any) -> bool:
        raise Died("the completion handler died before finishing the run")

    runs.finish_run = dies  # type: ignore[method-assign]
    try:
        with pytest.raises(Died):
            engine.run_task(run, "only")
    finally:
        runs.finish_run = original  # type: ignore[method-assign]
    assert engine.run_status(run) is RunStatus.RUNNING
    # WHEN the tick finds it quiet
    engine.later(services.QUIET_SECONDS + 1)
    # THEN it is finished, succeeded
    assert engine.tick(run)
    assert engine.run_status(run) is RunStatus.SUCCEEDED


def test_a_run_quiet_because_its_task_runs_long_is_left_as_it_is(engine: Engine) -> None:
    # GIVEN a run whose only task has been running for longer than the quiet time
    run = engine.start({"tasks": [{"id": "long", "command": "sleep 3600"}]})
    engine.attempt(run, "long")
    sent = len(engine.queue.sent)
    # WHEN the tick looks at it, and looks again at once
    engine.later(services.QUIET_SECONDS + 1)
    first = engine.tick(run)
    quiet_after = engine.ports.runs.quiet_runs(iso(engine.clock.now()), 100)
    # THEN nothing was needed or sent, and the run counts as seen now (not quiet)
    assert first is False
    assert [m for m, _ in engine.queue.sent[sent:] if m.run_id == run.run_id] == []
    assert run.run_id not in [r for r, _ in quiet_after]
