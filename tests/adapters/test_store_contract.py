"""The storage ports' contract, run against every adapter set (DynamoDB on moto, SQLite).

Each test states one behaviour of `RunStore` or `DefinitionStore` (ports.py) as
GIVEN / WHEN / THEN, and the `stores` fixture runs it on each adapter set. The DynamoDB
adapters are the reference: whatever they do here, the embedded twins do too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from stratoflow.core.model import Workflow
from stratoflow.core.plan import Plan
from stratoflow.core.records import (
    CompensationRecord,
    MarkRecord,
    RunRecord,
    TaskRecord,
    WorkflowMeta,
    iso,
)
from stratoflow.core.states import RunStatus, TaskStatus
from stratoflow.ports import (
    Claim,
    ClaimOutcome,
    DefinitionNotFound,
    Finalized,
    FinalizeOutcome,
    RunDefaults,
    Settlement,
    SlotOutcome,
)
from tests.adapters.store_fixtures import Moto, Stores, dynamodb_stores, embedded_stores
from tests.adapters.store_fixtures import moto_in_process as _moto_in_process

T = TypeVar("T")

T0 = "2026-01-01T00:00:00.000000Z"
T1 = "2026-01-01T00:01:00.000000Z"
T2 = "2026-01-01T00:02:00.000000Z"
EPOCH = 1_767_225_600.0  # T0 as epoch seconds (leases and `now` of claims)
LEASE = EPOCH + 600.25
NOW = datetime(2026, 1, 1, tzinfo=UTC)

# schedule slots (UTC ISO text, as the dispatcher writes them)
S1 = "2026-01-02T02:00:00Z"
S2 = "2026-01-03T02:00:00Z"
S3 = "2026-01-04T02:00:00Z"

RUNNING, SUCCEEDED, FAILED = TaskStatus.RUNNING, TaskStatus.SUCCEEDED, TaskStatus.FAILED
QUEUED, SKIPPED, PENDING = TaskStatus.QUEUED, TaskStatus.SKIPPED, TaskStatus.PENDING


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    with _moto_in_process() as found:
        yield found


@pytest.fixture(params=["dynamodb", "embedded"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "dynamodb":
        with dynamodb_stores(request.getfixturevalue("moto")) as found:
            yield found
    else:
        with embedded_stores(tmp_path) as found:
            yield found


# ------------------------------------------------------------------------------- helpers


def a_run(run_id: str = "r1", **overrides: Any) -> RunRecord:
    fields: dict[str, Any] = {
        "run_id": run_id,
        "workflow_id": "wf",
        "version": 1,
        "status": RunStatus.RUNNING,
        "logical_date": T0,
        "created_at": T0,
        "n_tasks": 3,
        **overrides,
    }
    return RunRecord(**fields)


def started(stores: Stores, run_id: str = "r1", **overrides: Any) -> RunRecord:
    run = a_run(run_id, **overrides)
    assert stores.runs.create_run(run)
    return run


def claim(
    stores: Stores,
    task_id: str,
    attempt: int = 1,
    *,
    run_id: str = "r1",
    now: float = EPOCH,
    lease_until: float = LEASE,
    drive: int = 0,
    worker: str | None = None,
) -> Claim:
    return stores.runs.claim_attempt(
        run_id,
        task_id,
        attempt,
        T0,
        lease_until,
        now,
        drive=drive,
        log_ref=f"{task_id}-{drive}-{attempt}",
        worker=worker,
    )


def running(stores: Stores, task_id: str, attempt: int = 1, **kwargs: Any) -> None:
    assert claim(stores, task_id, attempt, **kwargs).outcome is ClaimOutcome.CLAIMED


def settlement(
    task_id: str,
    status: TaskStatus = SUCCEEDED,
    children: Sequence[str] = (),
    *,
    attempt: int | None = 1,
    is_leaf: bool = False,
    releases_slot: bool = False,
    **kwargs: Any,
) -> Settlement:
    fields: dict[str, Any] = {"settled_at": T1}
    if attempt is not None:
        fields.update({"finished_at": T1, "exit_code": 0 if status is SUCCEEDED else 1})
    return Settlement(
        task_id=task_id,
        status=status,
        children=tuple(children),
        attempt=attempt,
        is_leaf=is_leaf,
        releases_slot=releases_slot,
        fields=fields,
        **kwargs,
    )


def finalize(
    stores: Stores,
    s: Settlement,
    run_id: str = "r1",
    on_chunk: Callable[[Sequence[str]], None] | None = None,
) -> Finalized:
    return stores.runs.finalize_task(run_id, s, on_chunk)


def settled(stores: Stores, s: Settlement, run_id: str = "r1") -> None:
    """Run and settle one attempt of `s.task_id` (a parent's end, for setting up)."""
    running(stores, s.task_id, s.attempt or 1, run_id=run_id, drive=s.drive)
    assert finalize(stores, s, run_id).outcome is FinalizeOutcome.APPLIED


def task(stores: Stores, task_id: str, run_id: str = "r1") -> TaskRecord:
    return stores.runs.get_task(run_id, task_id)


def counts(stores: Stores, task_id: str, run_id: str = "r1") -> dict[TaskStatus, int]:
    """A task's upstream counters that are not zero (a zero may be stored or absent)."""
    return {k: v for k, v in task(stores, task_id, run_id).counters.items() if v}


def run_of(stores: Stores, run_id: str = "r1") -> RunRecord:
    run = stores.runs.get_run(run_id)
    assert run is not None
    return run


def at_once(*calls: Callable[[], T]) -> list[T]:
    """Make the calls from as many threads, released together; their results in order."""
    barrier = threading.Barrier(len(calls), timeout=10)

    def go(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(go, call) for call in calls]
        return [f.result(timeout=30) for f in futures]


def hold_slots(stores: Stores, n: int, cap: int, run_id: str = "r1") -> None:
    """Start `n` waiting tasks (`slot0`, …) of a capped run: each holds one of its slots."""
    for i in range(n):
        task_id = f"slot{i}"
        assert stores.runs.decide_tasks(run_id, [task_id], TaskStatus.WAITING, T0) == [task_id]
        stores.runs.put_waiting(run_id, task_id, 0, T0)
        [(key, _)] = [e for e in stores.runs.peek_waiting(run_id, 100) if e[1] == task_id]
        assert stores.runs.start_waiting(run_id, key, task_id, cap) is SlotOutcome.STARTED


def workflow(workflow_id: str = "wf", command: str = "true", **extra: Any) -> Workflow:
    return Workflow.model_validate(
        {"id": workflow_id, "tasks": [{"id": "a", "command": command}], **extra}
    )


def registered(
    stores: Stores, workflow_id: str = "wf", *, next_slot: str | None = S1, **overrides: Any
) -> WorkflowMeta:
    """A saved and activated workflow on the daily schedule, next due at `next_slot`."""
    version = stores.definitions.save_version(workflow(workflow_id), "test", NOW)
    fields: dict[str, Any] = {
        "workflow_id": workflow_id,
        "latest_version": version,
        "active_version": version,
        "schedule": "0 2 * * *",
        "next_slot": next_slot,
        **overrides,
    }
    meta = WorkflowMeta(**fields)
    stores.definitions.activate(meta)
    return meta


def meta_of(stores: Stores, workflow_id: str = "wf") -> WorkflowMeta:
    meta = stores.definitions.get_meta(workflow_id)
    assert meta is not None
    return meta


# ================================================================================ RunStore
# -- runs


def test_a_created_run_reads_back_as_it_was_written(stores: Stores) -> None:
    # GIVEN a run with every optional field set
    run = a_run(
        params={"day": "mon"},
        concurrency=4,
        workdir="/srv/work",
        trigger="schedule",
        started_at=T0,
    )
    # WHEN it is created
    assert stores.runs.create_run(run) is True
    # THEN it reads back unchanged, with zero counters and no drive
    assert stores.runs.get_run("r1") == run


def test_creating_a_run_whose_id_exists_changes_nothing(stores: Stores) -> None:
    # GIVEN a run
    first = started(stores, n_tasks=3)
    # WHEN another run with the same id is created
    created = stores.runs.create_run(a_run(n_tasks=9, created_at=T1))
    # THEN the call reports it did not create it, and the first run (and its history) stays
    assert created is False
    assert stores.runs.get_run("r1") == first
    assert stores.runs.list_runs("wf", 10) == [first]


def test_an_unknown_run_reads_as_none(stores: Stores) -> None:
    assert stores.runs.get_run("nope") is None


def test_runs_are_listed_newest_first_and_only_the_workflows_own(stores: Stores) -> None:
    # GIVEN five runs of wf created one minute apart, and one run of another workflow
    for n in range(5):
        started(stores, f"r{n}", created_at=f"2026-01-01T00:0{n}:00.000000Z")
    started(stores, "o1", workflow_id="other")
    # WHEN the latest three are listed
    runs = stores.runs.list_runs("wf", 3)
    # THEN they are wf's newest three, newest first
    assert [r.run_id for r in runs] == ["r4", "r3", "r2"]
    assert [r.run_id for r in stores.runs.list_runs("other", 10)] == ["o1"]


def test_runs_page_newest_first_through_the_cursor(stores: Stores) -> None:
    # GIVEN five runs of wf created one minute apart (and one of another workflow)
    for n in range(5):
        started(stores, f"r{n}", created_at=f"2026-01-01T00:0{n}:00.000000Z")
    started(stores, "o1", workflow_id="other", created_at=T2)
    # WHEN they are paged two at a time, each page asked after the previous one's cursor
    first, cursor = stores.runs.page_runs("wf", 2)
    assert cursor is not None
    second, cursor = stores.runs.page_runs("wf", 2, cursor)
    assert cursor is not None
    third, cursor = stores.runs.page_runs("wf", 2, cursor)
    # THEN the pages hold every run of wf once, newest first, and the last has no cursor
    assert [[r.run_id for r in page] for page in (first, second, third)] == [
        ["r4", "r3"],
        ["r2", "r1"],
        ["r0"],
    ]
    assert cursor is None
    assert first[0] == run_of(stores, "r4")


# -- tasks read with their run


def test_tasks_read_with_their_run_and_absent_ones_read_as_pending(stores: Stores) -> None:
    # GIVEN a run in which only task a ever started
    started(stores)
    running(stores, "a")
    # WHEN the run is read with tasks a and b
    run, tasks = stores.runs.get_run_and_tasks("r1", ["a", "b"])
    # THEN a is running and b, never touched, is a pending task never attempted
    assert run == run_of(stores)
    assert set(tasks) == {"a", "b"}
    assert (tasks["a"].status, tasks["a"].attempt) == (RUNNING, 1)
    assert tasks["b"] == TaskRecord(task_id="b")


def test_reading_the_tasks_of_an_unknown_run_raises_lookup_error(stores: Stores) -> None:
    with pytest.raises(LookupError):
        stores.runs.get_run_and_tasks("nope", ["a"])


def test_a_runs_task_list_holds_the_tasks_something_happened_to(stores: Stores) -> None:
    # GIVEN a run where a started and b was decided, and another run's task
    started(stores)
    started(stores, "r2")
    running(stores, "a")
    assert stores.runs.decide_task("r1", "b", QUEUED, T0)
    running(stores, "x", run_id="r2")
    # WHEN the run's tasks are listed
    tasks = stores.runs.list_tasks("r1")
    # THEN they are a and b, as get_task reads them
    assert tasks == {"a": task(stores, "a"), "b": task(stores, "b")}


# -- claims


def test_a_fresh_task_is_claimed_for_its_first_attempt(stores: Stores) -> None:
    # GIVEN a run whose task a has no item yet
    started(stores)
    # WHEN attempt 1 is claimed
    got = claim(stores, "a")
    # THEN this caller owns it: the task runs attempt 1 under the lease, with its log
    assert got == Claim(ClaimOutcome.CLAIMED, LEASE, 1)
    rec = task(stores, "a")
    assert (rec.status, rec.attempt, rec.drive) == (RUNNING, 1, 0)
    assert (rec.started_at, rec.lease_until, rec.logs) == (T0, LEASE, ("a-0-1",))
    assert (rec.exit_code, rec.worker) == (None, None)


@pytest.mark.parametrize("status", [TaskStatus.QUEUED, TaskStatus.WAITING])
def test_a_ready_task_is_claimed_for_its_first_attempt(stores: Stores, status: TaskStatus) -> None:
    # GIVEN a task decided ready (queued, or waiting for a concurrency slot)
    started(stores)
    assert stores.runs.decide_task("r1", "a", status, T0)
    # WHEN attempt 1 is claimed
    got = claim(stores, "a")
    # THEN it is claimed
    assert got == Claim(ClaimOutcome.CLAIMED, LEASE, 1)
    assert task(stores, "a").status is RUNNING


def test_a_second_claim_while_the_lease_is_valid_is_held(stores: Stores) -> None:
    # GIVEN attempt 1 of a claimed until LEASE
    started(stores)
    running(stores, "a")
    # WHEN a redelivery claims it again before the lease ends
    got = claim(stores, "a", now=LEASE - 1)
    # THEN it must look again later, told the current lease; the attempt is unchanged
    assert got == Claim(ClaimOutcome.HELD, LEASE)
    assert task(stores, "a").logs == ("a-0-1",)


def test_a_second_claim_after_the_lease_passed_is_expired(stores: Stores) -> None:
    # GIVEN attempt 1 of a claimed until LEASE
    started(stores)
    running(stores, "a")
    # WHEN a redelivery claims it after the lease ended
    got = claim(stores, "a", now=LEASE + 1)
    # THEN the executor that claimed it is taken for dead; nothing is written
    assert got == Claim(ClaimOutcome.EXPIRED, LEASE)
    rec = task(stores, "a")
    assert (rec.status, rec.attempt, rec.logs) == (RUNNING, 1, ("a-0-1",))


def test_a_claim_of_an_attempt_that_finished_is_a_duplicate(stores: Stores) -> None:
    # GIVEN attempt 1 of a ran and succeeded
    started(stores)
    settled(stores, settlement("a"))
    # WHEN a late redelivery claims attempt 1 (or a next attempt)
    # THEN the message is dropped
    assert claim(stores, "a") == Claim(ClaimOutcome.DUPLICATE)
    assert claim(stores, "a", 2) == Claim(ClaimOutcome.DUPLICATE)
    assert task(stores, "a").status is SUCCEEDED


def test_a_claim_of_an_attempt_put_up_for_retry_is_a_duplicate(stores: Stores) -> None:
    # GIVEN attempt 1 of a failed and is up for retry
    started(stores)
    running(stores, "a")
    assert stores.runs.retry_attempt("r1", "a", 1, {"exit_code": 1})
    # WHEN attempt 1 is claimed again, then attempt 2
    again, retry = claim(stores, "a"), claim(stores, "a", 2)
    # THEN attempt 1 is a duplicate and attempt 2 is the one claimed
    assert again == Claim(ClaimOutcome.DUPLICATE)
    assert retry == Claim(ClaimOutcome.CLAIMED, LEASE, 2)


def test_a_claim_from_an_earlier_drive_is_a_duplicate(stores: Stores) -> None:
    # GIVEN a run redriven after its task a failed, and a running attempt 1 of drive 1
    started(stores, n_tasks=1)
    settled(stores, settlement("a", FAILED, is_leaf=True))
    assert stores.runs.finish_run("r1", RunStatus.FAILED, T1)
    assert stores.runs.redrive(run_of(stores), {"a": {}}, 0, None)
    stale_before = claim(stores, "a", drive=0)
    running(stores, "a", drive=1)
    # WHEN drive 0's message for attempt 1 is claimed (before and after drive 1's claim)
    stale_after = claim(stores, "a", drive=0)
    # THEN it is a duplicate both times, not held by the same-numbered attempt of drive 1
    assert stale_before == Claim(ClaimOutcome.DUPLICATE)
    assert stale_after == Claim(ClaimOutcome.DUPLICATE)
    assert task(stores, "a").drive == 1


def test_the_attempt_number_counts_every_claim_across_retries_and_redrives(
    stores: Stores,
) -> None:
    # GIVEN task a retried once, then failed, then its run redriven
    started(stores, n_tasks=1)
    first = claim(stores, "a")
    assert stores.runs.retry_attempt("r1", "a", 1, {"exit_code": 1})
    second = claim(stores, "a", 2)
    assert (
        finalize(stores, settlement("a", FAILED, attempt=2, is_leaf=True)).outcome
        is FinalizeOutcome.APPLIED
    )
    assert stores.runs.finish_run("r1", RunStatus.FAILED, T1)
    assert stores.runs.redrive(run_of(stores), {"a": {}}, 0, None)
    # WHEN attempt 1 of drive 1 is claimed
    third = claim(stores, "a", drive=1)
    # THEN it is the third attempt, and every attempt's log is kept in order
    assert [first.number, second.number, third.number] == [1, 2, 3]
    assert task(stores, "a").logs == ("a-0-1", "a-0-2", "a-1-1")


def test_the_worker_of_an_attempt_is_recorded_and_a_claim_without_one_clears_it(
    stores: Stores,
) -> None:
    # GIVEN attempt 1 of a claimed by an ECS task
    started(stores)
    running(stores, "a", worker="arn:aws:ecs:task/1")
    recorded = task(stores, "a").worker
    # WHEN it is put up for retry and attempt 2 runs where nothing can be stopped
    assert stores.runs.retry_attempt("r1", "a", 1, {"exit_code": 1})
    running(stores, "a", 2)
    # THEN the first worker was shown, and the second attempt shows none
    assert recorded == "arn:aws:ecs:task/1"
    assert task(stores, "a").worker is None


def test_a_new_attempt_does_not_show_the_error_of_the_one_before(stores: Stores) -> None:
    # GIVEN attempt 1 of a reported lost and put up for retry (found by the chaos suite:
    # a succeeded task showed the lost attempt's error, since a settlement leaves the
    # fields its report lacks as they were)
    started(stores)
    running(stores, "a")
    lost = {"error": "executor lost: the attempt's lease expired"}
    assert stores.runs.retry_attempt("r1", "a", 1, lost)
    assert task(stores, "a").error == lost["error"]
    # WHEN attempt 2 is claimed and succeeds
    running(stores, "a", 2)
    claimed = task(stores, "a").error
    finalize(stores, settlement("a", SUCCEEDED, [], attempt=2))
    # THEN neither shows attempt 1's error
    assert claimed is None
    assert task(stores, "a").error is None


def test_expired_attempts_are_the_running_ones_whose_lease_ended(stores: Stores) -> None:
    # GIVEN in two runs: attempts whose lease ends at +10 and +20, one still valid at +100,
    # and two whose lease would have ended at +10 but that finished or were retried
    started(stores)
    started(stores, "r2")
    running(stores, "a", lease_until=EPOCH + 10)
    running(stores, "x", run_id="r2", lease_until=EPOCH + 20)
    running(stores, "b", lease_until=EPOCH + 100)
    running(stores, "c", lease_until=EPOCH + 10)
    assert finalize(stores, settlement("c", is_leaf=True)).outcome is FinalizeOutcome.APPLIED
    running(stores, "d", lease_until=EPOCH + 10)
    assert stores.runs.retry_attempt("r1", "d", 1, {"exit_code": 1})
    # WHEN the attempts expired at +50 are asked for
    expired = stores.runs.expired_attempts(EPOCH + 50, 100)
    # THEN they are exactly the two still running past their lease
    assert sorted(expired) == [("r1", "a"), ("r2", "x")]


# -- retries


def test_a_running_attempt_is_put_up_for_retry_and_a_redelivery_agrees(
    stores: Stores,
) -> None:
    # GIVEN attempt 1 of a running
    started(stores)
    running(stores, "a")
    fields = {"exit_code": 1, "finished_at": T1, "output_tail": "boom"}
    # WHEN its failure is recorded for a retry, then recorded again (a redelivery)
    first = stores.runs.retry_attempt("r1", "a", 1, fields)
    again = stores.runs.retry_attempt("r1", "a", 1, fields)
    # THEN both report it done; the task waits for its retry, without a lease
    assert (first, again) == (True, True)
    rec = task(stores, "a")
    assert (rec.status, rec.attempt, rec.exit_code) == (TaskStatus.UP_FOR_RETRY, 1, 1)
    assert (rec.output_tail, rec.finished_at, rec.lease_until) == ("boom", T1, None)


def test_a_retry_of_another_attempt_or_drive_is_refused(stores: Stores) -> None:
    # GIVEN attempt 1 of a running in drive 0
    started(stores)
    running(stores, "a")
    # WHEN a retry is recorded for attempt 2, or for attempt 1 of drive 1
    # THEN neither applies and the attempt still runs
    assert stores.runs.retry_attempt("r1", "a", 2, {"exit_code": 1}) is False
    assert stores.runs.retry_attempt("r1", "a", 1, {"exit_code": 1}, drive=1) is False
    rec = task(stores, "a")
    assert (rec.status, rec.attempt, rec.exit_code) == (RUNNING, 1, None)


# -- settlements


def test_a_settlement_applies_and_counts_in_its_children_and_its_run(stores: Stores) -> None:
    # GIVEN attempt 1 of a running, a parent of b and c
    started(stores)
    running(stores, "a")
    # WHEN its success is settled
    result = finalize(stores, settlement("a", SUCCEEDED, ["b", "c"]))
    # THEN the task is final with its fields, each child counts one success upstream,
    # and the run one more final task
    assert result == Finalized(FinalizeOutcome.APPLIED)
    rec = task(stores, "a")
    assert (rec.status, rec.attempt, rec.exit_code) == (SUCCEEDED, 1, 0)
    assert (rec.settled_at, rec.finished_at, rec.lease_until) == (T1, T1, None)
    assert counts(stores, "b") == counts(stores, "c") == {TaskStatus.SUCCEEDED: 1}
    assert task(stores, "b").status is PENDING
    run = run_of(stores)
    assert (run.final_count, run.leaf_bad) == (1, 0)


def test_a_redelivered_settlement_is_already_applied_and_counts_nothing_again(
    stores: Stores,
) -> None:
    # GIVEN a's failure settled, counted in b and c; and leaf z's failure, freeing a slot
    started(stores, concurrency=2)
    hold_slots(stores, 2, cap=2)
    inner = settlement("a", FAILED, ["b", "c"])
    leaf = settlement("z", FAILED, is_leaf=True, releases_slot=True)
    settled(stores, inner)
    settled(stores, leaf)
    # WHEN the same settlements come again
    results = [finalize(stores, inner), finalize(stores, leaf)]
    # THEN they were applied before, and no counter moved
    assert results == [Finalized(FinalizeOutcome.ALREADY)] * 2
    assert counts(stores, "b") == counts(stores, "c") == {TaskStatus.FAILED: 1}
    run = run_of(stores)
    assert (run.final_count, run.leaf_bad, run.active) == (2, 1, 1)


def test_a_settlement_of_another_attempt_is_stale_and_writes_nothing(stores: Stores) -> None:
    # GIVEN attempt 1 of a running
    started(stores)
    running(stores, "a")
    # WHEN attempt 2's end is settled, or attempt 1's from drive 1
    other_attempt = finalize(stores, settlement("a", SUCCEEDED, ["b"], attempt=2))
    other_drive = finalize(stores, settlement("a", SUCCEEDED, ["b"], drive=1))
    # THEN both are stale: the task still runs attempt 1 and nothing was counted
    assert other_attempt == other_drive == Finalized(FinalizeOutcome.STALE)
    rec = task(stores, "a")
    assert (rec.status, rec.attempt, rec.lease_until) == (RUNNING, 1, LEASE)
    assert counts(stores, "b") == {}
    assert run_of(stores).final_count == 0


def test_a_settlement_contradicting_the_recorded_one_is_stale(stores: Stores) -> None:
    # GIVEN attempt 1 of a settled as failed
    started(stores)
    settled(stores, settlement("a", FAILED, ["b"]))
    # WHEN a success of the same attempt is settled
    result = finalize(stores, settlement("a", SUCCEEDED, ["b"]))
    # THEN it is stale, and the failure stands
    assert result == Finalized(FinalizeOutcome.STALE)
    assert task(stores, "a").status is FAILED
    assert counts(stores, "b") == {TaskStatus.FAILED: 1}


def test_a_decided_task_settles_without_an_attempt_once(stores: Stores) -> None:
    # GIVEN b decided skipped without running
    started(stores)
    assert stores.runs.decide_task("r1", "b", SKIPPED, T0)
    s = settlement("b", SKIPPED, ["c"], attempt=None, is_leaf=False)
    # WHEN its settlement is made, then made again
    first, again = finalize(stores, s), finalize(stores, s)
    # THEN it applied once: c counts one skip, the run one final task
    assert (first.outcome, again.outcome) == (FinalizeOutcome.APPLIED, FinalizeOutcome.ALREADY)
    assert counts(stores, "c") == {TaskStatus.SKIPPED: 1}
    assert run_of(stores).final_count == 1
    assert task(stores, "b").status is SKIPPED


def test_an_undecided_task_cannot_settle_without_an_attempt(stores: Stores) -> None:
    # GIVEN b never decided (pending)
    started(stores)
    # WHEN a skip of b is settled without an attempt
    result = finalize(stores, settlement("b", SKIPPED, ["c"], attempt=None))
    # THEN it is stale and nothing is written
    assert result == Finalized(FinalizeOutcome.STALE)
    assert task(stores, "b") == TaskRecord(task_id="b")
    assert counts(stores, "c") == {}


def test_a_settlement_decides_its_single_parent_children_unless_already_decided(
    stores: Stores,
) -> None:
    # GIVEN a running, and its child c cancelled (the run was being cancelled)
    started(stores)
    running(stores, "a")
    assert stores.runs.cancel_unstarted("r1", ["c"], T0) == ["c"]
    # WHEN a's success is settled deciding both its children queued
    result = finalize(
        stores, settlement("a", SUCCEEDED, ["b", "c"], decided={"b": QUEUED, "c": QUEUED})
    )
    # THEN b is queued, c stays cancelled, and both count a's success
    assert result.outcome is FinalizeOutcome.APPLIED
    assert task(stores, "b").status is QUEUED
    assert task(stores, "c").status is TaskStatus.CANCELLED
    assert counts(stores, "b") == counts(stores, "c") == {TaskStatus.SUCCEEDED: 1}


def test_children_decided_final_by_a_settlement_are_settled_at_its_time(stores: Stores) -> None:
    # GIVEN a running
    started(stores)
    running(stores, "a")
    decided = {"b": TaskStatus.UPSTREAM_FAILED, "c": QUEUED}
    # WHEN its failure is settled (at T1) deciding b upstream_failed and c queued
    finalize(stores, settlement("a", FAILED, ["b", "c"], decided=decided))
    # THEN b is final, settled at T1; c is only queued
    b, c = task(stores, "b"), task(stores, "c")
    assert (b.status, b.settled_at) == (TaskStatus.UPSTREAM_FAILED, T1)
    assert (c.status, c.settled_at) == (QUEUED, None)


def test_a_settlement_requiring_a_running_run_writes_nothing_once_it_ended(
    stores: Stores,
) -> None:
    # GIVEN a running in a run holding one slot, and the run then cancelled
    started(stores, concurrency=5)
    hold_slots(stores, 1, cap=5)
    running(stores, "a")
    assert stores.runs.finish_run("r1", RunStatus.CANCELLED, T1)
    s = settlement(
        "a",
        FAILED,
        ["b"],
        is_leaf=False,
        releases_slot=True,
        decided={"b": TaskStatus.UPSTREAM_FAILED},
        require_running=True,
    )
    # WHEN a's end is settled on condition that the run still runs
    result = finalize(stores, s)
    # THEN the run has ended and nothing at all was written
    assert result == Finalized(FinalizeOutcome.RUN_ENDED)
    rec = task(stores, "a")
    assert (rec.status, rec.attempt, rec.lease_until, rec.exit_code) == (RUNNING, 1, LEASE, None)
    assert task(stores, "b") == TaskRecord(task_id="b")
    run = run_of(stores)
    assert (run.final_count, run.leaf_bad, run.active) == (0, 0, 1)
    # AND the same settlement without the condition (and its decisions) still applies
    unconditional = replace(s, decided={}, require_running=False)
    assert finalize(stores, unconditional).outcome is FinalizeOutcome.APPLIED


def test_the_tasks_own_condition_is_judged_before_the_runs(stores: Stores) -> None:
    # GIVEN a's success settled, then the run cancelled
    started(stores)
    s = settlement("a", SUCCEEDED, ["b"], require_running=True)
    settled(stores, s)
    assert stores.runs.finish_run("r1", RunStatus.CANCELLED, T1)
    # WHEN the settlement is redelivered, and a settlement of another attempt arrives
    again = finalize(stores, s)
    other = finalize(stores, replace(s, attempt=2))
    # THEN they are already applied and stale, not "run ended"
    assert again == Finalized(FinalizeOutcome.ALREADY)
    assert other == Finalized(FinalizeOutcome.STALE)
    assert counts(stores, "b") == {TaskStatus.SUCCEEDED: 1}


def test_a_guarded_child_counted_before_its_last_parent_is_left_waiting(
    stores: Stores,
) -> None:
    # GIVEN p1 running, a parent of j (two parents, guarded) and of k (unguarded)
    started(stores)
    running(stores, "p1")
    # WHEN p1's success is settled
    result = finalize(stores, settlement("p1", SUCCEEDED, ["j", "k"], guards={"j": 2}))
    # THEN j is reported waiting for its other parent; both children were counted
    assert result == Finalized(FinalizeOutcome.APPLIED, frozenset({"j"}))
    assert counts(stores, "j") == counts(stores, "k") == {TaskStatus.SUCCEEDED: 1}
    assert task(stores, "j").status is PENDING


def test_the_last_parent_counts_a_guarded_child_without_leaving_it_waiting(
    stores: Stores,
) -> None:
    # GIVEN j (two parents) counted once by p1 already
    started(stores)
    settled(stores, settlement("p1", SUCCEEDED, ["j"], guards={"j": 2}))
    running(stores, "p2")
    # WHEN its last parent p2 settles with the same guard
    result = finalize(stores, settlement("p2", SUCCEEDED, ["j"], guards={"j": 2}))
    # THEN the guard fails yet the count is written, and j is not reported waiting
    assert result == Finalized(FinalizeOutcome.APPLIED)
    assert counts(stores, "j") == {TaskStatus.SUCCEEDED: 2}
    assert run_of(stores).final_count == 2


def test_a_guarded_child_no_longer_pending_is_counted_and_not_waiting(stores: Stores) -> None:
    # GIVEN j (three parents) decided upstream_failed already by a failed parent
    started(stores)
    assert stores.runs.decide_task("r1", "j", TaskStatus.UPSTREAM_FAILED, T0)
    running(stores, "p2")
    # WHEN another parent's success is settled with a guard on j
    result = finalize(stores, settlement("p2", SUCCEEDED, ["j"], guards={"j": 3}))
    # THEN j is counted, not reported waiting, and keeps its decision
    assert result == Finalized(FinalizeOutcome.APPLIED)
    assert counts(stores, "j") == {TaskStatus.SUCCEEDED: 1}
    assert task(stores, "j").status is TaskStatus.UPSTREAM_FAILED


def test_a_wide_fan_out_counts_each_child_once_and_hands_each_to_on_chunk_once(
    stores: Stores,
) -> None:
    # GIVEN root running, with 250 children (several DynamoDB transactions' worth)
    children = [f"c{n:03d}" for n in range(250)]
    started(stores, n_tasks=251)
    running(stores, "root")
    s = settlement("root", SUCCEEDED, children, decided=dict.fromkeys(children, QUEUED))
    handed: list[str] = []
    # WHEN its success is settled, then redelivered
    first = finalize(stores, s, on_chunk=lambda chunk: handed.extend(chunk))
    handed_first = list(handed)
    again = finalize(stores, s, on_chunk=lambda chunk: handed.extend(chunk))
    # THEN every child was handed over exactly once, on the first application only,
    # and counted and queued exactly once
    assert (first.outcome, again.outcome) == (FinalizeOutcome.APPLIED, FinalizeOutcome.ALREADY)
    assert sorted(handed_first) == children
    assert handed == handed_first
    _, tasks = stores.runs.get_run_and_tasks("r1", children)
    assert {
        c: (t.status, t.counters.get(TaskStatus.SUCCEEDED)) for c, t in tasks.items()
    } == dict.fromkeys(children, (QUEUED, 1))
    assert run_of(stores).final_count == 1


def test_a_settlement_releasing_a_slot_frees_it_once(stores: Stores) -> None:
    # GIVEN a capped run with two active tasks, one of them a
    started(stores, concurrency=2)
    hold_slots(stores, 2, cap=2)
    running(stores, "a")
    s = settlement("a", SUCCEEDED, is_leaf=True, releases_slot=True)
    # WHEN a's end is settled, then redelivered
    finalize(stores, s)
    finalize(stores, s)
    # THEN one slot is free
    assert run_of(stores).active == 1


def test_only_a_leaf_that_did_not_succeed_or_skip_counts_as_bad(stores: Stores) -> None:
    # GIVEN a run of four tasks
    started(stores, n_tasks=4)
    assert stores.runs.decide_task("r1", "d", SKIPPED, T0)
    # WHEN a failed leaf, a succeeded leaf, a failed inner task and a skipped leaf settle
    settled(stores, settlement("a", FAILED, is_leaf=True))
    settled(stores, settlement("b", SUCCEEDED, is_leaf=True))
    settled(stores, settlement("c", FAILED, ["d"], is_leaf=False))
    assert (
        finalize(stores, settlement("d", SKIPPED, attempt=None, is_leaf=True)).outcome
        is FinalizeOutcome.APPLIED
    )
    # THEN only the failed leaf makes the run bad; all four are final
    run = run_of(stores)
    assert (run.final_count, run.leaf_bad) == (4, 1)


def test_two_parents_settling_at_once_both_count_in_their_child(stores: Stores) -> None:
    # GIVEN p1 and p2 running, both parents of j
    started(stores)
    running(stores, "p1")
    running(stores, "p2")
    # WHEN both settle at the same moment
    results = at_once(
        lambda: finalize(stores, settlement("p1", SUCCEEDED, ["j"])),
        lambda: finalize(stores, settlement("p2", FAILED, ["j"])),
    )
    # THEN both applied and j counts both (no update lost)
    assert [r.outcome for r in results] == [FinalizeOutcome.APPLIED] * 2
    assert counts(stores, "j") == {TaskStatus.SUCCEEDED: 1, TaskStatus.FAILED: 1}
    assert run_of(stores).final_count == 2


def test_of_two_guarded_parents_settling_at_once_one_leaves_the_child_waiting(
    stores: Stores,
) -> None:
    # GIVEN p1 and p2 running, the only parents of j (guarded)
    started(stores)
    running(stores, "p1")
    running(stores, "p2")
    # WHEN both succeed at the same moment
    results = at_once(
        *(
            lambda p=p: finalize(stores, settlement(p, SUCCEEDED, ["j"], guards={"j": 2}))
            for p in ("p1", "p2")
        )
    )
    # THEN exactly one of them (the first) left j waiting: the last one did not
    assert sorted(len(r.waiting) for r in results) == [0, 1]
    assert counts(stores, "j") == {TaskStatus.SUCCEEDED: 2}


# -- decisions


def test_a_pending_task_is_decided_once(stores: Stores) -> None:
    # GIVEN a run whose task a is pending
    started(stores)
    # WHEN it is decided queued, then another caller decides it skipped
    first = stores.runs.decide_task("r1", "a", QUEUED, T0)
    second = stores.runs.decide_task("r1", "a", SKIPPED, T1)
    # THEN only the first decision was made
    assert (first, second) == (True, False)
    rec = task(stores, "a")
    assert (rec.status, rec.attempt, rec.settled_at) == (QUEUED, 0, None)


def test_a_task_decided_final_is_settled_at_the_decision(stores: Stores) -> None:
    started(stores)
    assert stores.runs.decide_task("r1", "a", SKIPPED, T1)
    assert (task(stores, "a").status, task(stores, "a").settled_at) == (SKIPPED, T1)


def test_a_task_that_started_is_not_decided(stores: Stores) -> None:
    # GIVEN a running
    started(stores)
    running(stores, "a")
    # WHEN it is decided skipped
    # THEN no decision is made
    assert stores.runs.decide_task("r1", "a", SKIPPED, T1) is False
    assert task(stores, "a").status is RUNNING


def test_of_racing_deciders_exactly_one_decides(stores: Stores) -> None:
    # GIVEN a pending task
    started(stores)
    # WHEN eight callers decide it at the same moment
    results = at_once(
        *(
            lambda n=n: stores.runs.decide_task("r1", "j", QUEUED if n % 2 else SKIPPED, T0)
            for n in range(8)
        )
    )
    # THEN exactly one of them made the decision
    assert results.count(True) == 1


def test_deciding_several_tasks_returns_those_this_call_decided(stores: Stores) -> None:
    # GIVEN b decided skipped already, a and c pending
    started(stores)
    assert stores.runs.decide_task("r1", "b", SKIPPED, T0)
    # WHEN a, b and c are decided upstream_failed together
    decided = stores.runs.decide_tasks("r1", ["a", "b", "c"], TaskStatus.UPSTREAM_FAILED, T1)
    # THEN a and c were decided by this call; b keeps its decision
    assert sorted(decided) == ["a", "c"]
    statuses = {t: task(stores, t).status for t in "abc"}
    assert statuses == {"a": "upstream_failed", "b": "skipped", "c": "upstream_failed"}
    assert stores.runs.decide_tasks("r1", ["a", "c"], SKIPPED, T2) == []


def test_deciding_many_tasks_skips_only_those_decided_already(stores: Stores) -> None:
    # GIVEN 110 pending tasks (more than one DynamoDB transaction), t105 decided already
    started(stores, n_tasks=110)
    ids = [f"t{n:03d}" for n in range(110)]
    assert stores.runs.decide_task("r1", "t105", SKIPPED, T0)
    # WHEN all are decided queued together
    decided = stores.runs.decide_tasks("r1", ids, QUEUED, T1)
    # THEN all but t105 were decided
    assert sorted(decided) == [t for t in ids if t != "t105"]


def test_cancel_unstarted_cancels_only_the_tasks_that_have_not_started(stores: Stores) -> None:
    # GIVEN tasks queued, waiting, never touched, up for retry, running, succeeded, skipped
    started(stores, n_tasks=7)
    assert stores.runs.decide_task("r1", "queued", QUEUED, T0)
    assert stores.runs.decide_task("r1", "waiting", TaskStatus.WAITING, T0)
    assert stores.runs.decide_task("r1", "skipped", SKIPPED, T0)
    running(stores, "retrying")
    assert stores.runs.retry_attempt("r1", "retrying", 1, {"exit_code": 1})
    running(stores, "running")
    settled(stores, settlement("succeeded", is_leaf=True))
    ids = ["queued", "waiting", "absent", "retrying", "running", "succeeded", "skipped"]
    # WHEN the run's unstarted tasks are cancelled
    cancelled = stores.runs.cancel_unstarted("r1", ids, T1)
    # THEN exactly the unstarted ones are cancelled, settled now; the others are unchanged
    assert sorted(cancelled) == ["absent", "queued", "retrying", "waiting"]
    statuses = {t: task(stores, t).status.value for t in ids}
    assert statuses == {
        "queued": "cancelled",
        "waiting": "cancelled",
        "absent": "cancelled",
        "retrying": "cancelled",
        "running": "running",
        "succeeded": "succeeded",
        "skipped": "skipped",
    }
    assert task(stores, "absent").settled_at == T1
    assert task(stores, "skipped").settled_at == T0


# -- the concurrency cap


def test_waiting_tasks_are_peeked_highest_priority_first_then_first_come(
    stores: Stores,
) -> None:
    # GIVEN tasks put waiting with various priorities and arrival times (and another run's)
    started(stores)
    for task_id, priority, now in [
        ("a", 0, "2026-01-01T00:01:00Z"),
        ("b", 0, "2026-01-01T00:02:00Z"),
        ("c", 5, "2026-01-01T00:03:00Z"),
        ("d", -3, "2026-01-01T00:00:00Z"),
        ("e", 5, "2026-01-01T00:04:00Z"),
    ]:
        stores.runs.put_waiting("r1", task_id, priority, now)
    stores.runs.put_waiting("r2", "x", 9, T0)
    # WHEN they are peeked at, all and then the first two
    every = [t for _, t in stores.runs.peek_waiting("r1", 10)]
    first_two = [t for _, t in stores.runs.peek_waiting("r1", 2)]
    # THEN the highest priority comes first, and within a priority the earliest arrival
    assert every == ["c", "e", "a", "b", "d"]
    assert first_two == ["c", "e"]


def test_a_waiting_task_is_started_once(stores: Stores) -> None:
    # GIVEN a and b decided waiting, and listed
    started(stores, concurrency=5)
    assert stores.runs.decide_tasks("r1", ["a", "b"], TaskStatus.WAITING, T0) == ["a", "b"]
    stores.runs.put_waiting("r1", "a", 0, T0)
    stores.runs.put_waiting("r1", "b", 0, T1)
    [(key, task_id), _] = stores.runs.peek_waiting("r1", 10)
    # WHEN a is started twice at once
    outcomes = at_once(
        lambda: stores.runs.start_waiting("r1", key, "a", 5),
        lambda: stores.runs.start_waiting("r1", key, "a", 5),
    )
    # THEN one caller started it: one slot, a queued, only b listed
    assert task_id == "a"
    assert sorted(outcomes) == sorted([SlotOutcome.STARTED, SlotOutcome.GONE])
    assert run_of(stores).active == 1
    assert task(stores, "a").status is TaskStatus.QUEUED
    assert [t for _, t in stores.runs.peek_waiting("r1", 10)] == ["b"]


def test_waiting_tasks_start_up_to_the_cap_and_a_full_run_keeps_its_entry(
    stores: Stores,
) -> None:
    # GIVEN a run capped at two, with two tasks holding its slots and c waiting
    started(stores, concurrency=2)
    hold_slots(stores, 2, cap=2)
    assert stores.runs.decide_tasks("r1", ["c"], TaskStatus.WAITING, T0) == ["c"]
    stores.runs.put_waiting("r1", "c", 0, T0)
    [(key, _)] = stores.runs.peek_waiting("r1", 10)
    # WHEN c is started: the run is full
    full = stores.runs.start_waiting("r1", key, "c", 2)
    # THEN nothing moved; once a slot is freed (a settlement releasing it), c starts
    assert full is SlotOutcome.FULL
    assert (run_of(stores).active, task(stores, "c").status) == (2, TaskStatus.WAITING)
    running(stores, "slot0")
    finalize(stores, settlement("slot0", SUCCEEDED, is_leaf=True, releases_slot=True))
    assert stores.runs.start_waiting("r1", key, "c", 2) is SlotOutcome.STARTED
    assert run_of(stores).active == 2
    assert stores.runs.peek_waiting("r1", 10) == []


def test_an_entry_whose_task_moved_on_is_removed_without_a_slot(stores: Stores) -> None:
    # GIVEN a listed twice (a repair listed it again while its first entry was taken)
    started(stores, concurrency=3)
    assert stores.runs.decide_tasks("r1", ["a"], TaskStatus.WAITING, T0) == ["a"]
    stores.runs.put_waiting("r1", "a", 0, T0)
    stores.runs.put_waiting("r1", "a", 0, T1)
    [(first, _), (second, _)] = stores.runs.peek_waiting("r1", 10)
    # WHEN both entries are started
    outcomes = [stores.runs.start_waiting("r1", k, "a", 3) for k in (first, second)]
    # THEN a holds one slot, and the stale entry is gone
    assert outcomes == [SlotOutcome.STARTED, SlotOutcome.GONE]
    assert run_of(stores).active == 1
    assert stores.runs.peek_waiting("r1", 10) == []


# -- the run's end


def test_a_run_finishes_once_and_only_forward(stores: Stores) -> None:
    # GIVEN a running run
    started(stores)
    # WHEN it is finished succeeded, and then succeeded, failed or cancelled again
    first = stores.runs.finish_run("r1", RunStatus.SUCCEEDED, T1)
    later = [
        stores.runs.finish_run("r1", status, T2)
        for status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
    ]
    # THEN only the first call moved it, and its end time stands
    assert (first, later) == (True, [False, False, False])
    run = run_of(stores)
    assert (run.status, run.finished_at) == (RunStatus.SUCCEEDED, T1)


def queued(stores: Stores, run_id: str = "r1", **overrides: Any) -> RunRecord:
    """A run recorded by a trigger: queued, its start (no `started_at`) still to do."""
    return started(stores, run_id, status=RunStatus.QUEUED, **overrides)


def test_a_queued_run_begins_once(stores: Stores) -> None:
    # GIVEN a queued run
    queued(stores)
    # WHEN two starts begin it at once, and a third comes later
    results = at_once(lambda: stores.runs.begin_run("r1"), lambda: stores.runs.begin_run("r1"))
    later = stores.runs.begin_run("r1")
    # THEN exactly one moved it to running, and its start is not complete yet
    assert sorted(results) == [False, True] and later is False
    run = run_of(stores)
    assert (run.status, run.started_at) == (RunStatus.RUNNING, None)


def test_only_a_queued_run_begins(stores: Stores) -> None:
    # GIVEN a running run and a cancelled queued one
    started(stores, "r1")
    queued(stores, "r2")
    assert stores.runs.finish_run("r2", RunStatus.CANCELLED, T1)
    # THEN neither begins
    assert (stores.runs.begin_run("r1"), stores.runs.begin_run("r2")) == (False, False)
    assert run_of(stores, "r2").status is RunStatus.CANCELLED


def test_a_start_is_finished_once_and_only_on_a_running_run(stores: Stores) -> None:
    # GIVEN a queued run
    queued(stores)
    # WHEN its start is finished before it began, then after, then again
    early = stores.runs.finish_start("r1", T1)
    assert stores.runs.begin_run("r1")
    first = stores.runs.finish_start("r1", T1)
    again = stores.runs.finish_start("r1", T2)
    # THEN only the one after it began counted, and its time stands
    assert (early, first, again) == (False, True, False)
    assert run_of(stores).started_at == T1


def test_pending_starts_are_the_queued_and_the_unfinished_created_before(stores: Stores) -> None:
    # GIVEN runs at T0: queued; begun but not finished; started and finished; started the
    # old way (started_at at creation); cancelled while queued; and a queued one at T2
    queued(stores, "q", created_at=T0)
    queued(stores, "begun", created_at=T0)
    assert stores.runs.begin_run("begun")
    queued(stores, "done", created_at=T0)
    assert stores.runs.begin_run("done") and stores.runs.finish_start("done", T1)
    started(stores, "direct", created_at=T0, started_at=T0)
    queued(stores, "gone", created_at=T0)
    assert stores.runs.finish_run("gone", RunStatus.CANCELLED, T1)
    queued(stores, "new", created_at=T2)
    # WHEN the starts pending from before T1 are asked for
    pending = stores.runs.pending_starts(T1, 10)
    # THEN they are the queued one and the one whose start did not finish
    assert sorted(pending) == ["begun", "q"]
    assert sorted(stores.runs.pending_starts("2026-01-01T00:03:00.000000Z", 10)) == [
        "begun",
        "new",
        "q",
    ]
    assert len(stores.runs.pending_starts(T1, 1)) == 1


def test_a_queued_run_can_be_cancelled_but_not_otherwise_finished(stores: Stores) -> None:
    # GIVEN a queued run
    queued(stores)
    # WHEN it is succeeded or failed, then cancelled, then cancelled again
    others = [stores.runs.finish_run("r1", s, T1) for s in (RunStatus.SUCCEEDED, RunStatus.FAILED)]
    first = stores.runs.finish_run("r1", RunStatus.CANCELLED, T1)
    again = stores.runs.finish_run("r1", RunStatus.CANCELLED, T2)
    # THEN only the first cancel moved it
    assert (others, first, again) == ([False, False], True, False)
    run = run_of(stores)
    assert (run.status, run.finished_at) == (RunStatus.CANCELLED, T1)


def test_run_defaults_are_read_from_the_stored_definition(stores: Stores) -> None:
    # GIVEN a version with params, a concurrency cap and two tasks
    wf = Workflow.model_validate(
        {
            "id": "wf",
            "params": {"region": "eu"},
            "concurrency": 3,
            "tasks": [{"id": "a", "command": "true"}, {"id": "b", "command": "true"}],
        }
    )
    version = stores.definitions.save_version(wf, "test", NOW)
    # THEN what a run takes of it reads back without the plan, and an unknown one raises
    defaults = stores.definitions.run_defaults("wf", version)
    assert (defaults.params, defaults.concurrency, defaults.n_tasks) == ({"region": "eu"}, 3, 2)
    # (kept by the store that saved it; another process parses the stored body the same)
    assert RunDefaults.from_definition(wf.model_dump_json(exclude_defaults=False)) == defaults
    with pytest.raises(DefinitionNotFound):
        stores.definitions.run_defaults("wf", version + 1)


def test_a_failing_run_may_compensate_before_it_fails(stores: Stores) -> None:
    # GIVEN a running run
    started(stores)
    # WHEN it starts compensating (with the compensations to run)
    compensating = stores.runs.finish_run("r1", RunStatus.COMPENSATING, T1, ["a", "b"])
    during = run_of(stores)
    # THEN it can no longer succeed, but it can fail
    succeeded = stores.runs.finish_run("r1", RunStatus.SUCCEEDED, T2)
    failed = stores.runs.finish_run("r1", RunStatus.FAILED, T2)
    assert (compensating, succeeded, failed) == (True, False, True)
    assert (during.status, during.finished_at) == (RunStatus.COMPENSATING, None)
    assert during.compensations == ("a", "b")
    run = run_of(stores)
    assert (run.status, run.finished_at, run.compensations) == (RunStatus.FAILED, T2, ("a", "b"))


def test_finishing_a_scheduled_run_releases_its_workflow_once(stores: Stores) -> None:
    # GIVEN a scheduled workflow allowing one active run, and that run started
    registered(stores, max_active_runs=1)
    assert stores.definitions.advance_slot("wf", S1, S2, 1)
    started(stores, trigger="schedule")
    # WHEN the run finishes, releasing its workflow, and the finish is repeated
    first = stores.runs.finish_run("r1", RunStatus.SUCCEEDED, T1, release_workflow="wf")
    again = stores.runs.finish_run("r1", RunStatus.SUCCEEDED, T1, release_workflow="wf")
    # THEN the workflow counts no active run (not minus one), and the next slot may start
    assert (first, again) == (True, False)
    assert meta_of(stores).active_runs == 0
    assert stores.definitions.advance_slot("wf", S2, S3, 1) is True


def test_a_run_compensating_still_counts_against_its_workflow(stores: Stores) -> None:
    # GIVEN a scheduled run active in its workflow
    registered(stores, max_active_runs=1)
    assert stores.definitions.advance_slot("wf", S1, S2, 1)
    started(stores, trigger="schedule")
    # WHEN it starts compensating, then fails, each time releasing its workflow
    stores.runs.finish_run("r1", RunStatus.COMPENSATING, T1, release_workflow="wf")
    while_compensating = meta_of(stores).active_runs
    stores.runs.finish_run("r1", RunStatus.FAILED, T2, release_workflow="wf")
    # THEN it was released only when it failed
    assert (while_compensating, meta_of(stores).active_runs) == (1, 0)


# -- redrives


def _failed_chain(stores: Stores) -> RunRecord:
    """a → b → c where a succeeded, b failed (its worker recorded), c upstream_failed."""
    started(stores, n_tasks=3)
    settled(stores, settlement("a", SUCCEEDED, ["b"]))
    running(stores, "b", worker="arn:aws:ecs:task/b")
    assert finalize(stores, settlement("b", FAILED, ["c"])).outcome is FinalizeOutcome.APPLIED
    assert stores.runs.decide_task("r1", "c", TaskStatus.UPSTREAM_FAILED, T1)
    last = settlement("c", TaskStatus.UPSTREAM_FAILED, attempt=None, is_leaf=True)
    assert finalize(stores, last).outcome is FinalizeOutcome.APPLIED
    assert stores.runs.finish_run("r1", RunStatus.FAILED, T2)
    return run_of(stores)


def test_a_redrive_resets_the_given_tasks_into_the_next_drive(stores: Stores) -> None:
    # GIVEN a failed run a → b → c
    run = _failed_chain(stores)
    a_before = task(stores, "a")
    # WHEN b and c are redriven, b with a's success counted
    assert stores.runs.redrive(run, {"b": {TaskStatus.SUCCEEDED: 1}, "c": {}}, 1, None) is True
    # THEN b and c are pending in drive 1, never attempted in it, with the given counters,
    # b keeping its old attempt's log; a is untouched
    b, c = task(stores, "b"), task(stores, "c")
    for rec in (b, c):
        assert (rec.status, rec.attempt, rec.drive) == (PENDING, 0, 1)
        assert (rec.exit_code, rec.started_at, rec.finished_at, rec.settled_at) == (None,) * 4
        assert (rec.lease_until, rec.worker, rec.output_tail) == (None, None, "")
    assert counts(stores, "b") == {TaskStatus.SUCCEEDED: 1}
    assert counts(stores, "c") == {}
    assert b.logs == ("b-0-1",)
    assert task(stores, "a") == a_before


def test_a_redrive_puts_the_run_back_to_running_in_its_next_drive(stores: Stores) -> None:
    # GIVEN a failed run a → b → c
    run = _failed_chain(stores)
    # WHEN b and c are redriven, a staying final
    stores.runs.redrive(run, {"b": {TaskStatus.SUCCEEDED: 1}, "c": {}}, 1, None)
    # THEN the run runs again in drive 1, counting only a as final
    after = run_of(stores)
    assert (after.status, after.drive, after.finished_at) == (RunStatus.RUNNING, 1, None)
    assert (after.final_count, after.leaf_bad, after.active) == (1, 0, 0)


def test_a_redrive_from_a_stale_run_record_is_refused_and_resets_nothing(
    stores: Stores,
) -> None:
    # GIVEN a run redriven once, and b's attempt 1 of drive 1 running
    run = _failed_chain(stores)
    assert stores.runs.redrive(run, {"b": {TaskStatus.SUCCEEDED: 1}, "c": {}}, 1, None)
    running(stores, "b", drive=1)
    # WHEN another redrive is made from the same (now stale) run record
    again = stores.runs.redrive(run, {"b": {TaskStatus.SUCCEEDED: 1}, "c": {}}, 1, None)
    # THEN it is refused; b still runs and the run stays in drive 1
    assert again is False
    b = task(stores, "b")
    assert (b.status, b.attempt, b.drive) == (RUNNING, 1, 1)
    assert (run_of(stores).status, run_of(stores).drive) == (RunStatus.RUNNING, 1)


def test_a_refused_redrive_leaves_the_runs_waiting_tasks_alone(stores: Stores) -> None:
    # GIVEN a run redriven once, whose task b then waits for a concurrency slot
    run = _failed_chain(stores)
    assert stores.runs.redrive(run, {"b": {TaskStatus.SUCCEEDED: 1}, "c": {}}, 1, None)
    assert stores.runs.decide_task("r1", "b", TaskStatus.WAITING, T2)
    stores.runs.put_waiting("r1", "b", 0, T2)
    # WHEN a second redrive from the stale run record is refused
    assert stores.runs.redrive(run, {"b": {TaskStatus.SUCCEEDED: 1}, "c": {}}, 1, None) is False
    # THEN b still waits for its slot
    assert [t for _, t in stores.runs.peek_waiting("r1", 10)] == ["b"]


def test_a_redriven_wide_fan_out_propagates_again_in_its_new_drive(stores: Stores) -> None:
    # GIVEN root's failure propagated to 110 children (two DynamoDB transactions), run failed
    children = [f"c{n:03d}" for n in range(110)]
    started(stores, n_tasks=111)
    settled(stores, settlement("root", FAILED, children))
    assert stores.runs.finish_run("r1", RunStatus.FAILED, T2)
    # WHEN root and its children are redriven and root succeeds in drive 1
    resets: dict[str, dict[str, int]] = {t: {} for t in ["root", *children]}
    assert stores.runs.redrive(run_of(stores), resets, 0, None)
    settled(stores, settlement("root", SUCCEEDED, children, drive=1))
    # THEN each child counts root's new success once, and its old failure no more
    _, tasks = stores.runs.get_run_and_tasks("r1", children)
    assert {c: {k: v for k, v in t.counters.items() if v} for c, t in tasks.items()} == (
        {c: {TaskStatus.SUCCEEDED: 1} for c in children}
    )


def test_a_redriven_scheduled_run_counts_against_its_workflow_again(stores: Stores) -> None:
    # GIVEN a scheduled run that failed and released its workflow
    registered(stores, max_active_runs=1)
    assert stores.definitions.advance_slot("wf", S1, S2, 1)
    started(stores, n_tasks=1, trigger="schedule")
    settled(stores, settlement("a", FAILED, is_leaf=True))
    assert stores.runs.finish_run("r1", RunStatus.FAILED, T1, release_workflow="wf")
    # WHEN it is redriven on behalf of its workflow
    assert stores.runs.redrive(run_of(stores), {"a": {}}, 0, "wf")
    # THEN the workflow counts it active again
    assert meta_of(stores).active_runs == 1


# -- compensations


def test_a_compensation_is_claimed_once(stores: Stores) -> None:
    started(stores)
    first = stores.runs.claim_compensation("r1", 0, "a", T1, "comp-a")
    again = stores.runs.claim_compensation("r1", 0, "a", T2, "comp-a2")
    assert (first, again) == (True, False)
    [only] = stores.runs.list_compensations("r1")
    assert (only.status, only.started_at, only.log_ref) == ("running", T1, "comp-a")


def test_a_compensation_is_recorded_once_and_only_after_its_claim(stores: Stores) -> None:
    # GIVEN compensation 0 claimed, compensation 1 not
    started(stores)
    assert stores.runs.claim_compensation("r1", 0, "a", T1, "comp-a")
    done = CompensationRecord(
        index=0,
        task_id="a",
        status="succeeded",
        exit_code=0,
        timed_out=False,
        started_at=T1,
        finished_at=T2,
        output_tail="undone",
    )
    # WHEN its outcome is recorded twice, and an outcome of compensation 1 is recorded
    first, again = (stores.runs.record_compensation("r1", done) for _ in range(2))
    unclaimed = stores.runs.record_compensation("r1", replace(done, index=1, task_id="b"))
    # THEN only the first record of the claimed one applied, keeping the claim's log
    assert (first, again, unclaimed) == (True, False, False)
    assert stores.runs.list_compensations("r1") == [replace(done, log_ref="comp-a")]


def test_compensations_are_listed_by_index(stores: Stores) -> None:
    # GIVEN compensations claimed out of order, one of them recorded
    started(stores)
    for index, task_id in [(10, "k"), (2, "c"), (0, "a")]:
        assert stores.runs.claim_compensation("r1", index, task_id, T1, f"log-{task_id}")
    failed = CompensationRecord(2, "c", "failed", 3, True, T1, T2, "oops")
    assert stores.runs.record_compensation("r1", failed)
    # WHEN they are listed
    listed = stores.runs.list_compensations("r1")
    # THEN in index order, the unrecorded ones running
    running_since = CompensationRecord(0, "a", "running", None, False, T1, None, "", "log-a")
    assert listed == [
        running_since,
        replace(failed, log_ref="log-c"),
        replace(running_since, index=10, task_id="k", log_ref="log-k"),
    ]


# ========================================================================= DefinitionStore


def test_versions_are_numbered_from_one(stores: Stores) -> None:
    # WHEN two different contents of wf are saved
    first = stores.definitions.save_version(workflow(command="echo 1"), "s3://b/wf.yaml", NOW)
    second = stores.definitions.save_version(workflow(command="echo 2"), "s3://b/wf.yaml", NOW)
    # THEN they are versions 1 and 2, the latest known, none active yet
    assert (first, second) == (1, 2)
    assert meta_of(stores) == WorkflowMeta(workflow_id="wf", latest_version=2)


def test_saving_the_latest_content_again_returns_its_version(stores: Stores) -> None:
    # GIVEN version 1 of wf
    assert stores.definitions.save_version(workflow(command="echo 1"), "a.yaml", NOW) == 1
    # WHEN the same content is saved again (from elsewhere, later)
    again = stores.definitions.save_version(workflow(command="echo 1"), "b.yaml", NOW)
    # THEN it is version 1 still, and no version was added
    assert again == 1
    assert [v["version"] for v in stores.definitions.list_versions("wf")] == [1]


def test_saving_an_older_content_again_makes_a_new_version(stores: Stores) -> None:
    # GIVEN versions 1 and 2 of wf
    for command in ("echo 1", "echo 2"):
        stores.definitions.save_version(workflow(command=command), "wf.yaml", NOW)
    # WHEN version 1's content is saved again (a revert)
    reverted = stores.definitions.save_version(workflow(command="echo 1"), "wf.yaml", NOW)
    # THEN it becomes version 3: only the latest content is recognised
    assert reverted == 3
    assert stores.definitions.get_plan("wf", 3).workflow == workflow(command="echo 1")


def test_concurrent_saves_of_different_contents_get_distinct_consecutive_versions(
    stores: Stores,
) -> None:
    # WHEN four different contents of wf are saved at the same moment
    commands = [f"echo {n}" for n in range(4)]
    versions = at_once(
        *(
            lambda c=c: stores.definitions.save_version(workflow(command=c), "wf.yaml", NOW)
            for c in commands
        )
    )
    # THEN they got versions 1 to 4, each holding the content saved under it
    assert sorted(versions) == [1, 2, 3, 4]
    for command, version in zip(commands, versions, strict=True):
        assert stores.definitions.get_plan("wf", version).workflow == workflow(command=command)
    assert [v["version"] for v in stores.definitions.list_versions("wf")] == [1, 2, 3, 4]


def test_a_plan_round_trips_the_workflow(stores: Stores) -> None:
    # GIVEN a workflow using many of the format's fields
    wf = Workflow.model_validate(
        {
            "$schema": "https://example.com/stratoflow.json",
            "id": "etl",
            "schedule": "0 2 * * *",
            "timezone": "Europe/Paris",
            "params": {"env": "prod"},
            "defaults": {"retries": 1, "env": {"A": "1"}},
            "tasks": [
                {"id": "extract", "command": "echo e", "retries": 2, "priority": 3},
                {
                    "id": "load",
                    "command": "echo l",
                    "depends": ["extract"],
                    "trigger_rule": "all_done",
                    "compensate": "echo undo",
                },
            ],
        }
    )
    version = stores.definitions.save_version(wf, "etl.yaml", NOW)
    # WHEN its plan is read
    plan = stores.definitions.get_plan("etl", version)
    # THEN it is the workflow saved, compiled as the engine compiles it
    assert plan.workflow == wf
    assert plan.version == version
    assert plan.order == Plan(wf, version).order


def test_a_definition_too_big_for_an_item_round_trips(stores: Stores) -> None:
    # GIVEN a workflow whose definition exceeds the inline limit (stored in S3 on AWS)
    wf = Workflow.model_validate(
        {
            "id": "big",
            "tasks": [{"id": f"t{n}", "command": "echo " + "x" * 1000} for n in range(320)],
        }
    )
    # WHEN it is saved and read back
    version = stores.definitions.save_version(wf, "big.yaml", NOW)
    # THEN it is whole
    assert stores.definitions.get_plan("big", version).workflow == wf


def test_an_unknown_definition_raises_definition_not_found(stores: Stores) -> None:
    stores.definitions.save_version(workflow(), "wf.yaml", NOW)
    with pytest.raises(DefinitionNotFound):
        stores.definitions.get_plan("wf", 2)
    with pytest.raises(DefinitionNotFound):
        stores.definitions.get_plan("nope", 1)


def test_versions_are_listed_oldest_first_with_their_provenance(stores: Stores) -> None:
    # GIVEN two versions of wf saved from two places at two times
    later = datetime(2026, 1, 2, tzinfo=UTC)
    stores.definitions.save_version(workflow(command="echo 1"), "s3://b/wf.yaml", NOW)
    stores.definitions.save_version(workflow(command="echo 2"), "api", later)
    # WHEN its versions are listed
    versions = stores.definitions.list_versions("wf")
    # THEN oldest first, each with its number, time, source and content hash
    assert [{k: v for k, v in d.items() if k != "hash"} for d in versions] == [
        {"version": 1, "created_at": iso(NOW), "source": "s3://b/wf.yaml"},
        {"version": 2, "created_at": iso(later), "source": "api"},
    ]
    hashes = [d["hash"] for d in versions]
    assert all(isinstance(h, str) and h for h in hashes) and hashes[0] != hashes[1]
    assert stores.definitions.list_versions("nope") == []


def test_an_activated_workflow_reads_back_its_schedule_state(stores: Stores) -> None:
    # GIVEN a saved workflow
    version = stores.definitions.save_version(workflow(), "wf.yaml", NOW)
    meta = WorkflowMeta(
        workflow_id="wf",
        latest_version=version,
        active_version=version,
        paused=True,
        schedule="30 6 * * 1-5",
        timezone="Europe/Paris",
        catchup=True,
        max_active_runs=3,
        next_slot=S1,
    )
    # WHEN it is activated
    stores.definitions.activate(meta)
    # THEN its meta reads back as activated
    assert stores.definitions.get_meta("wf") == meta


def test_activating_without_a_schedule_clears_the_schedule(stores: Stores) -> None:
    # GIVEN a workflow active on a schedule
    meta = registered(stores)
    # WHEN it is activated again without one
    stores.definitions.activate(replace(meta, schedule=None, next_slot=None))
    # THEN it has no schedule and is never due
    after = meta_of(stores)
    assert (after.schedule, after.next_slot, after.active_version) == (None, None, 1)
    assert stores.definitions.due_workflows(S3, 10) == []


def test_an_unknown_workflow_has_no_meta(stores: Stores) -> None:
    assert stores.definitions.get_meta("nope") is None


def test_only_activated_workflows_are_listed(stores: Stores) -> None:
    # GIVEN a and b activated, c only saved
    registered(stores, "a")
    registered(stores, "b", schedule=None, next_slot=None)
    stores.definitions.save_version(workflow("c"), "c.yaml", NOW)
    # WHEN the workflows are listed
    listed = stores.definitions.list_workflows()
    # THEN they are a and b, with their meta
    assert sorted(listed, key=lambda m: m.workflow_id) == [
        meta_of(stores, "a"),
        meta_of(stores, "b"),
    ]


def test_pausing_a_workflow_keeps_the_rest_of_its_meta(stores: Stores) -> None:
    # GIVEN an active scheduled workflow
    meta = registered(stores)
    # WHEN it is paused, and an unknown workflow is paused
    paused = stores.definitions.set_paused("wf", True)
    unknown = stores.definitions.set_paused("nope", True)
    # THEN only the known one was, and nothing else of it changed
    assert (paused, unknown) == (True, False)
    assert meta_of(stores) == replace(meta, paused=True)
    assert stores.definitions.get_meta("nope") is None


def test_due_workflows_are_the_active_scheduled_unpaused_ones_whose_slot_came(
    stores: Stores,
) -> None:
    # GIVEN workflows due at S1 (one exactly at `now`), one due later, one paused,
    # one without a schedule, one deactivated
    registered(stores, "due", next_slot=S1)
    registered(stores, "due-now", next_slot=S2)
    registered(stores, "later", next_slot=S3)
    registered(stores, "paused", next_slot=S1, paused=True)
    registered(stores, "unscheduled", next_slot=S1, schedule=None)
    registered(stores, "inactive", next_slot=S1, active_version=None)
    # WHEN the workflows due at S2 are asked for
    due = stores.definitions.due_workflows(S2, 10)
    # THEN they are the first two, the oldest slot first
    assert due == ["due", "due-now"]
    assert stores.definitions.due_workflows(S2, 1) == ["due"]


def test_a_resumed_workflow_is_due_again(stores: Stores) -> None:
    registered(stores, paused=True)
    assert stores.definitions.due_workflows(S1, 10) == []
    assert stores.definitions.set_paused("wf", False)
    assert stores.definitions.due_workflows(S1, 10) == ["wf"]


def test_a_slot_advances_only_from_the_expected_one(stores: Stores) -> None:
    # GIVEN a workflow next due at S1
    registered(stores, max_active_runs=5)
    # WHEN two dispatchers advance it from S1, and a third from S3
    first = stores.definitions.advance_slot("wf", S1, S2, 5)
    second = stores.definitions.advance_slot("wf", S1, S2, 5)
    wrong = stores.definitions.advance_slot("wf", S3, S2, 5)
    # THEN only the first did: next due at S2, with one active run
    assert (first, second, wrong) == (True, False, False)
    meta = meta_of(stores)
    assert (meta.next_slot, meta.active_runs) == (S2, 1)
    assert stores.definitions.due_workflows(S1, 10) == []
    assert stores.definitions.due_workflows(S2, 10) == ["wf"]


def test_a_slot_does_not_advance_while_the_workflow_is_at_its_active_runs(
    stores: Stores,
) -> None:
    # GIVEN a workflow allowing two active runs, two slots of it started
    registered(stores, max_active_runs=2)
    assert stores.definitions.advance_slot("wf", S1, S2, 2)
    assert stores.definitions.advance_slot("wf", S2, S3, 2)
    # WHEN its next slot is advanced
    blocked = stores.definitions.advance_slot("wf", S3, "2026-01-05T02:00:00Z", 2)
    # THEN it is not: the slot waits for a run to end
    assert blocked is False
    assert (meta_of(stores).next_slot, meta_of(stores).active_runs) == (S3, 2)


def test_advancing_past_the_last_slot_ends_the_schedule(stores: Stores) -> None:
    registered(stores, max_active_runs=5)
    assert stores.definitions.advance_slot("wf", S1, None, 5)
    assert meta_of(stores).next_slot is None
    assert stores.definitions.due_workflows("2099-01-01T00:00:00Z", 10) == []


def test_a_source_event_is_claimed_once(stores: Stores) -> None:
    claims = [
        stores.definitions.claim_source_event("wf.yaml", "e1"),
        stores.definitions.claim_source_event("wf.yaml", "e1"),
        stores.definitions.claim_source_event("wf.yaml", "e2"),
        stores.definitions.claim_source_event("other.yaml", "e1"),
    ]
    assert claims == [True, False, True, True]


def test_a_sources_error_is_kept_replaced_and_cleared(stores: Stores) -> None:
    # GIVEN errors recorded for two uploads, the first one twice
    stores.definitions.record_source_error("a.yaml", "bad cron", T0)
    stores.definitions.record_source_error("b.yaml", "cycle", T0)
    stores.definitions.record_source_error("a.yaml", "unknown field", T1)
    replaced = sorted(stores.definitions.source_errors(), key=lambda e: e["source"])
    # WHEN the first upload's error is cleared (a good version came)
    stores.definitions.record_source_error("a.yaml", None, T2)
    # THEN each upload showed its last error, and the cleared one is gone
    assert replaced == [
        {"source": "a.yaml", "message": "unknown field", "at": T1},
        {"source": "b.yaml", "message": "cycle", "at": T0},
    ]
    assert stores.definitions.source_errors() == [
        {"source": "b.yaml", "message": "cycle", "at": T0}
    ]


def test_a_removed_source_deactivates_the_workflow_it_still_defines(stores: Stores) -> None:
    # GIVEN a scheduled workflow registered from wf.yaml
    registered(stores)
    stores.definitions.link_source("wf.yaml", "wf")
    # WHEN wf.yaml is removed
    deactivated = stores.definitions.deactivate_source("wf.yaml")
    # THEN wf is deactivated and no longer due
    assert deactivated == "wf"
    meta = meta_of(stores)
    assert (meta.active_version, meta.next_slot) == (None, None)
    assert stores.definitions.due_workflows(S3, 10) == []


def test_a_removed_source_no_longer_defining_its_workflow_deactivates_nothing(
    stores: Stores,
) -> None:
    # GIVEN wf registered from old.yaml, then from new.yaml
    meta = registered(stores)
    stores.definitions.link_source("old.yaml", "wf")
    stores.definitions.link_source("new.yaml", "wf")
    # WHEN old.yaml is removed, and a file that registered nothing
    old, unknown = (stores.definitions.deactivate_source(s) for s in ("old.yaml", "none.yaml"))
    # THEN nothing is deactivated
    assert (old, unknown) == (None, None)
    assert meta_of(stores) == meta
    assert stores.definitions.due_workflows(S1, 10) == ["wf"]


def test_a_redrive_from_a_stale_record_resets_no_task(stores: Stores) -> None:
    # GIVEN a failed run a → b → c whose b alone was redriven (into drive 1)
    run = _failed_chain(stores)
    assert stores.runs.redrive(run, {"b": {TaskStatus.SUCCEEDED: 1}}, 2, None)
    # WHEN a second redrive, from the record read before the first, would reset b and c
    assert stores.runs.redrive(run, {"b": {TaskStatus.SUCCEEDED: 1}, "c": {}}, 1, None) is False
    # THEN c, which the first redrive kept, is as it was: upstream_failed in drive 0
    c = task(stores, "c")
    assert (c.status, c.drive) == (TaskStatus.UPSTREAM_FAILED, 0)


# ------------------------------------------------------------- marks, reruns and deadlines


def a_mark(task_id: str, status: TaskStatus = SUCCEEDED, reason: str = "by hand") -> MarkRecord:
    return MarkRecord(task_id=task_id, status=status.value, by="alice", at=T1, reason=reason)


def test_a_mark_settles_a_running_task_for_finalize_to_count(stores: Stores) -> None:
    # GIVEN a running run whose task a runs attempt 1 (with a lease)
    started(stores, n_tasks=2)
    running(stores, "a")
    # WHEN a is marked succeeded
    assert stores.runs.mark_task("r1", "a", RUNNING, a_mark("a"), 0) is True
    # THEN a is succeeded with no lease, listed among the run's marks, and finalize without
    # an attempt counts it (and its child) once
    a = task(stores, "a")
    assert (a.status, a.lease_until, a.settled_at) == (SUCCEEDED, None, T1)
    assert run_of(stores).marks == (a_mark("a"),)
    assert stores.runs.expired_attempts(LEASE + 1, 10) == []
    done = settlement("a", SUCCEEDED, ["b"], attempt=None)
    assert finalize(stores, done).outcome is FinalizeOutcome.APPLIED
    assert counts(stores, "b") == {SUCCEEDED: 1}
    assert run_of(stores).final_count == 1
    # AND the attempt's own report can no longer settle it
    assert finalize(stores, settlement("a", FAILED, ["b"])).outcome is FinalizeOutcome.STALE


def test_a_mark_of_a_pending_task_writes_it_from_nothing(stores: Stores) -> None:
    started(stores)
    assert stores.runs.mark_task("r1", "b", PENDING, a_mark("b", FAILED), 0) is True
    assert task(stores, "b").status is FAILED


def test_a_mark_is_refused_when_the_task_or_the_run_moved_on(stores: Stores) -> None:
    # GIVEN a running run whose task a runs, and a second run that ended
    started(stores)
    running(stores, "a")
    # WHEN a mark expects a to be queued, or the run in another drive
    assert stores.runs.mark_task("r1", "a", QUEUED, a_mark("a"), 0) is False
    assert stores.runs.mark_task("r1", "a", RUNNING, a_mark("a"), 1) is False
    # THEN nothing was written
    assert task(stores, "a").status is RUNNING and run_of(stores).marks == ()
    started(stores, "r2")
    assert stores.runs.finish_run("r2", RunStatus.CANCELLED, T1)
    assert stores.runs.mark_task("r2", "a", PENDING, a_mark("a"), 0) is False
    assert run_of(stores, "r2").marks == ()


def test_two_marks_at_once_one_wins(stores: Stores) -> None:
    started(stores)
    running(stores, "a")
    won = at_once(
        lambda: stores.runs.mark_task("r1", "a", RUNNING, a_mark("a"), 0),
        lambda: stores.runs.mark_task("r1", "a", RUNNING, a_mark("a", FAILED), 0),
    )
    assert sorted(won) == [False, True]
    assert len(run_of(stores).marks) == 1


def test_a_redrive_sets_marked_tasks_keeps_bad_leaves_and_a_new_deadline(stores: Stores) -> None:
    # GIVEN a failed run a → b → c (b failed, c upstream_failed)
    run = _failed_chain(stores)
    # WHEN b is marked succeeded in the redrive, c reset, with one bad leaf kept elsewhere
    assert stores.runs.redrive(
        run, {"c": {SUCCEEDED: 1}}, 2, None, leaf_bad=1, marks=[a_mark("b")], deadline=T2
    )
    # THEN b is succeeded in drive 1 (kept: not propagated again), c pending, and the run
    # carries the counters, the mark and the deadline
    b = task(stores, "b")
    assert (b.status, b.drive) == (SUCCEEDED, 1)
    assert finalize(stores, settlement("b", SUCCEEDED, ["c"], attempt=None)).outcome in (
        FinalizeOutcome.ALREADY,
        FinalizeOutcome.STALE,
    )
    assert counts(stores, "c") == {SUCCEEDED: 1}
    after = run_of(stores)
    assert (after.status, after.drive, after.final_count, after.leaf_bad) == (
        RunStatus.RUNNING,
        1,
        2,
        1,
    )
    assert (after.marks, after.deadline) == ((a_mark("b"),), T2)


def test_a_run_ended_with_a_reason_keeps_it_until_a_redrive(stores: Stores) -> None:
    started(stores)
    assert stores.runs.finish_run("r1", RunStatus.FAILED, T1, reason="run timed out after 2s")
    ended = run_of(stores)
    assert (ended.status, ended.reason) == (RunStatus.FAILED, "run timed out after 2s")
    assert stores.runs.redrive(ended, {"a": {}}, 2, None)
    assert run_of(stores).reason is None


def test_a_deadline_is_set_once_and_listed_when_due(stores: Stores) -> None:
    # GIVEN two running runs, one with a deadline at T1, and a finished one
    started(stores, "r1")
    started(stores, "r2")
    assert stores.runs.set_deadline("r1", T1) is True
    # WHEN a second deadline is given, or one to a finished run
    assert stores.runs.set_deadline("r1", T2) is False
    started(stores, "r3")
    assert stores.runs.finish_run("r3", RunStatus.SUCCEEDED, T0)
    assert stores.runs.set_deadline("r3", T0) is False
    # THEN r1 keeps T1, and is listed once T1 is reached, not before
    assert run_of(stores).deadline == T1
    assert stores.runs.overdue_runs(T0, 10) == []
    assert stores.runs.overdue_runs(T1, 10) == [("r1", T1)]
    assert stores.runs.overdue_runs(T2, 10) == [("r1", T1)]


def test_the_deadline_of_a_run_that_ended_is_cleared_and_a_new_one_kept(stores: Stores) -> None:
    # GIVEN a run with a deadline that ended, then was redriven with a later deadline
    run = started(stores)
    assert stores.runs.set_deadline("r1", T1)
    assert stores.runs.finish_run("r1", RunStatus.FAILED, T1)
    ended = run_of(stores)
    assert stores.runs.redrive(ended, {"a": {}}, 2, None, deadline=T2)
    # WHEN the old deadline is cleared (as the sweep does for what it saw ended)
    stores.runs.clear_deadline("r1", T1)
    # THEN the new one is listed still; cleared with its own value, it is not
    assert stores.runs.overdue_runs(T2, 10) == [("r1", T2)]
    assert run.run_id == "r1"
    assert stores.runs.finish_run("r1", RunStatus.SUCCEEDED, T2)
    stores.runs.clear_deadline("r1", T2)
    assert stores.runs.overdue_runs(T2, 10) == []


# ----------------------------------------------------------------- quiet runs (the tick)

T1_30 = "2026-01-01T00:01:30.000000Z"


def test_quiet_runs_are_the_started_live_runs_with_no_sign_of_life_since(
    stores: Stores,
) -> None:
    # GIVEN at T0: a run recorded started; a queued run begun but whose start did not
    # finish; a queued run whose start finished at T1; a started run that ended; a started
    # run with a task settled at T2; and a failed run compensating
    started(stores, "old", started_at=T0)
    queued(stores, "begun", created_at=T0)
    assert stores.runs.begin_run("begun")
    queued(stores, "done", created_at=T0)
    assert stores.runs.begin_run("done") and stores.runs.finish_start("done", T1)
    started(stores, "ended", started_at=T0)
    assert stores.runs.finish_run("ended", RunStatus.SUCCEEDED, T1)
    started(stores, "moved", started_at=T0)
    late = replace(settlement("a"), fields={"settled_at": T2, "finished_at": T2})
    settled(stores, late, run_id="moved")
    started(stores, "saga", started_at=T0)
    assert stores.runs.finish_run("saga", RunStatus.COMPENSATING, T0, compensations=["a"])
    # WHEN the runs quiet since before T1, and since before T1:30, are asked for
    # THEN they are the started live runs whose last sign of life is older, oldest first,
    # each with that sign (its start, or its latest settlement)
    assert sorted(stores.runs.quiet_runs(T1, 10)) == [("old", T0), ("saga", T0)]
    assert sorted(stores.runs.quiet_runs(T1_30, 10)) == [("done", T1), ("old", T0), ("saga", T0)]
    assert len(stores.runs.quiet_runs(T1_30, 1)) == 1
    assert ("moved", T2) in stores.runs.quiet_runs("2026-01-01T00:03:00.000000Z", 10)


def test_a_quiet_run_is_touched_by_one_caller_and_then_is_not_quiet(stores: Stores) -> None:
    # GIVEN a run started at T0, quiet since
    started(stores, "r1", started_at=T0)
    # WHEN two callers that saw it quiet since T0 touch it at T2, then one touches it with
    # the sign it saw earlier
    results = at_once(
        lambda: stores.runs.touch_run("r1", T0, T2), lambda: stores.runs.touch_run("r1", T0, T2)
    )
    stale = stores.runs.touch_run("r1", T0, T2)
    # THEN one moved it, and it is quiet only from T2 on
    assert sorted(results) == [False, True] and stale is False
    assert stores.runs.quiet_runs(T2, 10) == []
    assert stores.runs.quiet_runs("2026-01-01T00:03:00.000000Z", 10) == [("r1", T2)]


def test_an_ended_run_is_not_touched(stores: Stores) -> None:
    # GIVEN a started run that ended
    started(stores, "r1", started_at=T0)
    assert stores.runs.finish_run("r1", RunStatus.FAILED, T1)
    # WHEN it is touched with the sign it had
    # THEN nothing moves, and it is not quiet
    assert stores.runs.touch_run("r1", T0, T2) is False
    assert stores.runs.quiet_runs("9999-01-01T00:00:00.000000Z", 10) == []


def test_a_redriven_run_is_watched_again(stores: Stores) -> None:
    # GIVEN a started run that failed
    run = started(stores, "r1", started_at=T0)
    assert stores.runs.finish_run("r1", RunStatus.FAILED, T1)
    # WHEN it is redriven
    assert stores.runs.redrive(run_of(stores), {"a": {}}, 2, None)
    # THEN it is among the runs quiet since any time after its redrive
    assert [r for r, _ in stores.runs.quiet_runs("9999-01-01T00:00:00.000000Z", 10)] == [run.run_id]


def test_a_task_reads_propagated_once_its_settlement_applied(stores: Stores) -> None:
    # GIVEN a run where a settles and decides its only child b skipped in that write
    started(stores)
    folded = replace(settlement("a", FAILED, ["b"]), decided={"b": SKIPPED})
    settled(stores, folded)
    # THEN a reads propagated; b, decided but not yet settled, does not until it is
    assert task(stores, "a").propagated and not task(stores, "b").propagated
    assert finalize(stores, settlement("b", SKIPPED, attempt=None)).outcome is (
        FinalizeOutcome.APPLIED
    )
    assert task(stores, "b").propagated
