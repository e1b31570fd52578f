"""The dispatcher's tick with an injected clock: one run per slot, whatever the ticks do."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stratoflow import services
from stratoflow.core.model import Workflow
from stratoflow.handlers import completion
from stratoflow.local.events import LambdaContext, sqs_event
from stratoflow.local.runtime import LocalRuntime
from tests.support import unique_id


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.current = now
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self.current

    def set(self, now: datetime) -> None:
        with self._lock:
            self.current = now


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def clock(bare: LocalRuntime) -> Iterator[FakeClock]:
    assert bare.ports is not None
    real = bare.ports.clock
    fake = FakeClock(utc(2026, 3, 7, 10, 30))
    bare.ports.clock = fake
    yield fake
    bare.ports.clock = real


def _register(rt: LocalRuntime, **fields: Any) -> Workflow:
    wf = Workflow.model_validate(
        {"id": unique_id("sched"), "tasks": [{"id": "a", "command": "true"}], **fields}
    )
    rt.register(wf, "test")
    return wf


def _cancel(rt: LocalRuntime, run_id: str) -> None:
    """Cancel the run and do the work the cancel hands to the completion handler (its tasks,
    the schedule's next slot), as the engine's pump would: nobody pumps `bare`."""
    assert rt.ports is not None and rt.clients is not None and rt.settings is not None
    assert services.cancel_run(rt.ports, run_id)
    url = rt.settings.completion_queue_url
    while got := rt.clients.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    ).get("Messages", []):
        event = sqs_event(got, url, rt.settings.region)
        completion.handle(event, LambdaContext("completion"), rt.wiring)
        for m in got:
            rt.clients.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def _runs_of(rt: LocalRuntime, wf: Workflow, ticks: list[list[str]]) -> list[str]:
    return sorted(r for started in ticks for r in started if r.startswith(wf.id + "@"))


def test_a_due_slot_starts_exactly_one_run_however_often_the_tick_comes(
    bare: LocalRuntime, clock: FakeClock
) -> None:
    wf = _register(bare, schedule="0 * * * *")
    clock.set(utc(2026, 3, 7, 10, 59, 59))
    assert _runs_of(bare, wf, [bare.tick()]) == []
    clock.set(utc(2026, 3, 7, 11, 0, 20))
    first = _runs_of(bare, wf, [bare.tick()])
    again = _runs_of(bare, wf, [bare.tick(), bare.tick()])
    assert first == [f"{wf.id}@20260307T110000Z"] and again == []
    run = bare.ports.runs.get_run(first[0])  # type: ignore[union-attr]
    assert run is not None and run.logical_date == "2026-03-07T11:00:00.000000Z"
    assert run.trigger == "schedule"


def test_two_dispatchers_ticking_at_once_start_each_slot_once(
    bare: LocalRuntime, clock: FakeClock
) -> None:
    wf = _register(bare, schedule="*/15 * * * *", max_active_runs=50, catchup=True)
    clock.set(utc(2026, 3, 7, 12, 0, 5))  # slots 10:45 … 12:00 are due: six of them
    results: list[list[str]] = []
    barrier = threading.Barrier(2)

    def dispatcher() -> None:
        barrier.wait()
        results.append(bare.tick())

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = _runs_of(bare, wf, results)
    assert len(runs) == len(set(runs)) == 6
    assert runs[0].endswith("@20260307T104500Z") and runs[-1].endswith("@20260307T120000Z")


def test_skewed_clocks_neither_double_fire_nor_skip(bare: LocalRuntime, clock: FakeClock) -> None:
    wf = _register(bare, schedule="*/5 * * * *", max_active_runs=100, catchup=True)
    rng = random.Random(7)
    started: list[list[str]] = []
    real = utc(2026, 3, 7, 10, 31)
    while real < utc(2026, 3, 7, 12, 0):
        for _ in range(2):  # two dispatchers per minute, each off by up to ±90 s
            clock.set(real + timedelta(seconds=rng.uniform(-90, 90)))
            started.append(bare.tick())
        real += timedelta(minutes=1)
    clock.set(utc(2026, 3, 7, 12, 0, 30))
    started.append(bare.tick())
    runs = _runs_of(bare, wf, started)
    expected = [
        services.scheduled_run_id(wf.id, utc(2026, 3, 7, 10, 35) + timedelta(minutes=5 * i))
        for i in range(18)
    ]
    assert runs == expected


def test_max_active_runs_holds_slots_back_and_starts_them_in_order(
    bare: LocalRuntime, clock: FakeClock
) -> None:
    wf = _register(bare, schedule="0 * * * *", max_active_runs=1, catchup=True)
    clock.set(utc(2026, 3, 7, 14, 0, 10))  # 11:00, 12:00, 13:00 and 14:00 are due
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(bare.tick())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _runs_of(bare, wf, results) == [f"{wf.id}@20260307T110000Z"]
    assert _runs_of(bare, wf, [bare.tick()]) == []  # still one active
    ports = bare.ports
    assert ports is not None
    # the run ends (cancelled here, nobody executes): the next slot starts at once
    _cancel(bare, f"{wf.id}@20260307T110000Z")
    meta = ports.definitions.get_meta(wf.id)
    assert meta is not None and meta.active_runs == 1
    assert meta.next_slot == "2026-03-07T13:00:00.000000Z"
    assert ports.runs.get_run(f"{wf.id}@20260307T120000Z") is not None


def test_catchup_off_runs_only_the_latest_missed_slot(bare: LocalRuntime, clock: FakeClock) -> None:
    wf = _register(bare, schedule="0 * * * *", max_active_runs=10)
    clock.set(utc(2026, 3, 7, 16, 30))  # 11:00 … 16:00 missed while the engine was down
    assert _runs_of(bare, wf, [bare.tick(), bare.tick()]) == [f"{wf.id}@20260307T160000Z"]
    clock.set(utc(2026, 3, 7, 17, 0, 1))
    assert _runs_of(bare, wf, [bare.tick()]) == [f"{wf.id}@20260307T170000Z"]


def test_catchup_on_runs_missed_slots_oldest_first(bare: LocalRuntime, clock: FakeClock) -> None:
    wf = _register(bare, schedule="0 */2 * * *", max_active_runs=10, catchup=True)
    clock.set(utc(2026, 3, 7, 18, 30))
    runs = _runs_of(bare, wf, [bare.tick()])
    assert runs == [f"{wf.id}@20260307T{h:02d}0000Z" for h in (12, 14, 16, 18)]


def test_a_spring_forward_day_skips_the_missing_wall_time(
    bare: LocalRuntime, clock: FakeClock
) -> None:
    clock.set(utc(2026, 3, 6, 12))
    wf = _register(
        bare,
        schedule="30 2 * * *",
        timezone="America/New_York",
        max_active_runs=10,
        catchup=True,
    )
    clock.set(utc(2026, 3, 10, 12))
    runs = _runs_of(bare, wf, [bare.tick()])
    # 02:30 on 2026-03-08 does not exist in New York: no run that day
    assert runs == [
        f"{wf.id}@20260307T073000Z",
        f"{wf.id}@20260309T063000Z",
        f"{wf.id}@20260310T063000Z",
    ]


def test_a_run_keeps_its_version_when_the_workflow_is_replaced(
    bare: LocalRuntime, clock: FakeClock
) -> None:
    wf = _register(bare, schedule="0 * * * *", max_active_runs=5)
    clock.set(utc(2026, 3, 7, 11, 0, 1))
    [old_run] = _runs_of(bare, wf, [bare.tick()])
    replaced = Workflow.model_validate(
        {
            **wf.model_dump(by_alias=True, exclude_none=True),
            "tasks": [{"id": "a", "command": "echo v2"}],
        }
    )
    assert bare.register(replaced, "test") == 2
    clock.set(utc(2026, 3, 7, 12, 0, 1))
    [new_run] = _runs_of(bare, wf, [bare.tick()])
    runs = bare.ports.runs  # type: ignore[union-attr]
    assert runs.get_run(old_run).version == 1  # type: ignore[union-attr]
    assert runs.get_run(new_run).version == 2  # type: ignore[union-attr]


def test_a_paused_workflow_starts_nothing_until_unpaused(
    bare: LocalRuntime, clock: FakeClock
) -> None:
    wf = _register(bare, schedule="0 * * * *", max_active_runs=5)
    ports = bare.ports
    assert ports is not None
    ports.definitions.set_paused(wf.id, True)
    clock.set(utc(2026, 3, 7, 13, 0, 1))
    assert _runs_of(bare, wf, [bare.tick()]) == []
    ports.definitions.set_paused(wf.id, False)
    assert _runs_of(bare, wf, [bare.tick()]) == [f"{wf.id}@20260307T130000Z"]


def test_a_retried_scheduled_run_respects_max_active_runs(
    bare: LocalRuntime, clock: FakeClock
) -> None:
    from stratoflow.ports import RunNotRetryable

    wf = _register(bare, schedule="0 * * * *", max_active_runs=1, catchup=True)
    clock.set(utc(2026, 3, 7, 12, 0, 10))  # 11:00 and 12:00 are due
    first = f"{wf.id}@20260307T110000Z"
    assert _runs_of(bare, wf, [bare.tick()]) == [first]
    ports = bare.ports
    assert ports is not None
    _cancel(bare, first)  # the 12:00 run starts and takes the one slot
    second = f"{wf.id}@20260307T120000Z"
    assert ports.runs.get_run(second) is not None
    with pytest.raises(RunNotRetryable, match="max_active_runs"):
        services.retry_run(ports, first)
    assert ports.runs.get_run(first).status.value == "cancelled"  # type: ignore[union-attr]
    assert ports.runs.get_task(first, "a").status.value == "cancelled"  # nothing was reset
    _cancel(bare, second)
    # the slot is free (and no slot is due now): the retry takes it
    assert services.retry_run(ports, first).status.value == "running"
    meta = ports.definitions.get_meta(wf.id)
    assert meta is not None and meta.active_runs == 1
