"""The handlers with genuine event shapes, and invariants 1, 2, 3, 4, 7, 8, 10 of
docs/architecture.md.

These tests drive delivery by hand (no pumps), so they can duplicate, reorder and race
messages the way SQS may.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from stratoflow.aws.callcount import ApiCallCounter
from stratoflow.aws.dynamodb import DynamoDefinitionStore
from stratoflow.config import WORKFLOWS_PREFIX
from stratoflow.core.model import Workflow
from stratoflow.core.records import AttemptReport, TaskMessage
from stratoflow.core.states import TaskStatus
from stratoflow.handlers import completion, dispatcher, executor, loader
from stratoflow.local.events import LambdaContext, eventbridge_event, s3_event, sqs_event
from stratoflow.local.runtime import LocalRuntime
from tests.support import unique_id


@pytest.fixture(params=["embedded", "emulator"])
def engine(request: pytest.FixtureRequest) -> LocalRuntime:
    """The same handlers on either engine (nobody pumping the queues): the embedded one,
    and the AWS adapters on the embedded moto server."""
    rt: LocalRuntime = request.getfixturevalue(
        "bare" if request.param == "embedded" else "emulator_bare"
    )
    return rt


def _drain(rt: LocalRuntime, url: str, wait: int = 0) -> list[dict[str, Any]]:
    assert rt.clients is not None
    out: list[dict[str, Any]] = []
    while True:
        resp = rt.clients.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait,
            AttributeNames=["All"],
            VisibilityTimeout=0 if wait else 30,
        )
        msgs = resp.get("Messages", [])
        if not msgs:
            return out
        out += msgs
        rt.clients.sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)
            ],
        )
        wait = 0


def _tasks(rt: LocalRuntime) -> list[dict[str, Any]]:
    assert rt.settings is not None
    return _drain(rt, rt.settings.task_queue_url)


def _reports(rt: LocalRuntime) -> list[dict[str, Any]]:
    assert rt.settings is not None
    return _drain(rt, rt.settings.completion_queue_url)


def _delayed(rt: LocalRuntime) -> int:
    assert rt.clients is not None and rt.settings is not None
    attrs = rt.clients.sqs.get_queue_attributes(
        QueueUrl=rt.settings.task_queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessagesDelayed"])


def _start(rt: LocalRuntime, spec: dict[str, Any], workdir: Path) -> tuple[str, Workflow]:
    """Register and start a run through the dispatcher handler; the queues start empty."""
    _tasks(rt), _reports(rt)
    wf = Workflow.model_validate({**spec, "id": unique_id(spec.get("id", "inv"))})
    version = rt.register(wf, "test")
    event = eventbridge_event(
        dispatcher.RUN_REQUESTED,
        {"workflow_id": wf.id, "version": version, "workdir": str(workdir)},
        "us-east-1",
    )
    result = dispatcher.handle(event, LambdaContext("dispatcher"), rt.wiring)
    assert result["created"] is True
    return result["run_id"], wf


def _sqs(rt: LocalRuntime, messages: list[dict[str, Any]], queue: str) -> dict[str, Any]:
    assert rt.settings is not None
    url = rt.settings.task_queue_url if queue == "tasks" else rt.settings.completion_queue_url
    return sqs_event(messages, url, "us-east-1")


def _execute(rt: LocalRuntime, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return executor.handle(_sqs(rt, messages, "tasks"), LambdaContext("executor"), rt.wiring)


def _complete(rt: LocalRuntime, messages: list[dict[str, Any]]) -> dict[str, Any]:
    event = _sqs(rt, messages, "completions")
    return completion.handle(event, LambdaContext("completion"), rt.wiring)


def _task_ids(messages: list[dict[str, Any]]) -> list[str]:
    return sorted(json.loads(m["Body"])["task_id"] for m in messages)


def test_same_task_message_delivered_twice_runs_the_command_once(
    engine: LocalRuntime, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    _start(engine, {"tasks": [{"id": "once", "command": f"echo run >> {marker}"}]}, tmp_path)
    [message] = _tasks(engine)
    assert _execute(engine, [message]) == {"batchItemFailures": []}
    assert _execute(engine, [message]) == {"batchItemFailures": []}
    assert marker.read_text() == "run\n"
    assert len(_reports(engine)) == 1


def test_duplicate_delivered_while_the_attempt_runs_is_parked_not_run(
    engine: LocalRuntime, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    _start(
        engine,
        {"tasks": [{"id": "slow", "command": f"sleep 0.5; echo run >> {marker}"}]},
        tmp_path,
    )
    [message] = _tasks(engine)
    first = threading.Thread(target=_execute, args=(engine, [message]))
    first.start()
    deadline = threading.Event()
    # wait until the first delivery has claimed the attempt
    assert engine.ports is not None
    for _ in range(100):
        _, tasks = engine.ports.runs.get_run_and_tasks(
            json.loads(message["Body"])["run_id"], ["slow"]
        )
        if tasks["slow"].status == "running":
            break
        deadline.wait(0.01)
    delayed_before = _delayed(engine)
    assert _execute(engine, [message]) == {"batchItemFailures": []}
    first.join()
    assert marker.read_text() == "run\n"
    assert len(_reports(engine)) == 1
    # the duplicate was re-sent with a delay, to be looked at again after the lease
    assert _delayed(engine) == delayed_before + 1


def test_two_parents_completing_at_once_enqueue_their_child_exactly_once(
    engine: LocalRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # all_done: each parent's count may decide the child, so each reads it back.
    run_id, reports = _two_parents_done(engine, tmp_path, "all_done")
    # Force the worst interleaving: both parents' counter updates commit before either
    # reads the child's counters, so both see it decidable.
    runs = engine.ports.runs  # type: ignore[union-attr]
    barrier = threading.Barrier(2, timeout=10)
    original = runs.get_run_and_tasks

    def racing_read(run: str, ids: Any) -> Any:
        if "child" in ids:
            barrier.wait()
        return original(run, ids)

    monkeypatch.setattr(runs, "get_run_and_tasks", racing_read)
    assert _complete_at_once(engine, reports) == [{"batchItemFailures": []}] * 2
    _assert_child_queued_once(engine, run_id, original)


def test_only_the_last_parent_to_succeed_reads_an_all_success_child(
    engine: LocalRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # all_success: a success decides the child only as its last parent's, so the first
    # parent's count is written on that condition and the child is not read back for it.
    run_id, reports = _two_parents_done(engine, tmp_path, "all_success")
    runs = engine.ports.runs  # type: ignore[union-attr]
    original = runs.get_run_and_tasks
    reads: list[list[str]] = []

    def counted_read(run: str, ids: Any) -> Any:
        reads.append(list(ids))
        return original(run, ids)

    monkeypatch.setattr(runs, "get_run_and_tasks", counted_read)
    assert _complete_at_once(engine, reports) == [{"batchItemFailures": []}] * 2
    assert reads == [["child"]]
    _assert_child_queued_once(engine, run_id, original)


def test_a_wide_shared_fan_in_is_read_back_only_by_its_last_parent(
    engine: LocalRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 150 children of the same two parents: written in two transactions per parent, each
    # child counted on condition; the last parent's counts fail that condition and are
    # written again without it, and only then are the children read and started, once.
    children = [f"c{n:03}" for n in range(150)]
    run_id, _ = _start(
        engine,
        {
            "tasks": [
                {"id": "left", "command": "true"},
                {"id": "right", "command": "true"},
                *({"id": c, "command": "true", "depends": ["left", "right"]} for c in children),
            ]
        },
        tmp_path,
    )
    assert _execute(engine, _tasks(engine)) == {"batchItemFailures": []}
    first, second = _reports(engine)
    runs = engine.ports.runs  # type: ignore[union-attr]
    original = runs.get_run_and_tasks
    reads: list[str] = []

    def counted_read(run: str, ids: Any) -> Any:
        reads.extend(ids)
        return original(run, ids)

    monkeypatch.setattr(runs, "get_run_and_tasks", counted_read)
    assert _complete(engine, [first]) == {"batchItemFailures": []}
    assert reads == []
    assert _tasks(engine) == []
    assert _complete(engine, [second]) == {"batchItemFailures": []}
    assert sorted(reads) == children
    assert _task_ids(_tasks(engine)) == children
    _, tasks = original(run_id, children)
    assert {(t.status, tuple(t.counters.items())) for t in tasks.values()} == {
        ("queued", ((TaskStatus.SUCCEEDED, 2),))
    }


def _assert_child_queued_once(engine: LocalRuntime, run_id: str, read: Any) -> None:
    assert _task_ids(_tasks(engine)) == ["child"]
    _, tasks = read(run_id, ["child"])
    assert tasks["child"].status == "queued"
    assert tasks["child"].counters == {TaskStatus.SUCCEEDED: 2}


def _two_parents_done(
    engine: LocalRuntime, tmp_path: Path, rule: str
) -> tuple[str, list[dict[str, Any]]]:
    """A child of two parents, both of which have run and reported (not yet recorded)."""
    run_id, _ = _start(
        engine,
        {
            "tasks": [
                {"id": "left", "command": "true"},
                {"id": "right", "command": "true"},
                {
                    "id": "child",
                    "command": "true",
                    "depends": ["left", "right"],
                    "trigger_rule": rule,
                },
            ]
        },
        tmp_path,
    )
    assert _execute(engine, _tasks(engine)) == {"batchItemFailures": []}
    reports = _reports(engine)
    assert len(reports) == 2
    return run_id, reports


def _complete_at_once(engine: LocalRuntime, reports: list[dict[str, Any]]) -> list[Any]:
    results: list[dict[str, Any]] = []
    threads = [
        threading.Thread(target=lambda m=m: results.append(_complete(engine, [m]))) for m in reports
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_a_redelivered_completion_is_counted_once(engine: LocalRuntime, tmp_path: Path) -> None:
    run_id, _ = _start(
        engine,
        {
            "tasks": [
                {"id": "a", "command": "true"},
                {"id": "b", "command": "true"},
                {"id": "c", "command": "true", "depends": ["a", "b"]},
            ]
        },
        tmp_path,
    )
    _execute(engine, [m for m in _tasks(engine) if json.loads(m["Body"])["task_id"] == "a"])
    [report_a] = _reports(engine)
    for _ in range(3):
        assert _complete(engine, [report_a]) == {"batchItemFailures": []}
    run, tasks = engine.ports.runs.get_run_and_tasks(run_id, ["a", "c"])  # type: ignore[union-attr]
    assert tasks["c"].counters == {TaskStatus.SUCCEEDED: 1}
    assert tasks["c"].status == "pending"  # b has not finished: one count must not look like two
    assert run.final_count == 1


def test_poison_message_fails_alone_within_its_batch(engine: LocalRuntime, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    _start(engine, {"tasks": [{"id": "fine", "command": f"echo ok > {marker}"}]}, tmp_path)
    [good] = _tasks(engine)
    poison = {**good, "MessageId": "poison-1", "Body": "{not json"}
    response = _execute(engine, [good, poison])
    assert response == {"batchItemFailures": [{"itemIdentifier": "poison-1"}]}
    assert marker.read_text() == "ok\n"


def test_executor_reports_but_never_changes_run_state(engine: LocalRuntime, tmp_path: Path) -> None:
    run_id, _ = _start(
        engine,
        {
            "tasks": [
                {"id": "a", "command": "exit 3"},
                {"id": "b", "command": "true", "depends": ["a"]},
            ]
        },
        tmp_path,
    )
    _execute(engine, _tasks(engine))
    run, tasks = engine.ports.runs.get_run_and_tasks(run_id, ["a", "b"])  # type: ignore[union-attr]
    assert tasks["a"].status == "running"  # claimed, but its end is the completion handler's
    assert tasks["b"].status == "pending"
    assert run.final_count == 0
    [report] = _reports(engine)
    assert AttemptReport.from_json(report["Body"]).exit_code == 3


def test_an_attempt_whose_executor_died_is_detected_by_its_lease(
    engine: LocalRuntime, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    run_id, _ = _start(
        engine, {"tasks": [{"id": "crashy", "command": f"echo run >> {marker}"}]}, tmp_path
    )
    [message] = _tasks(engine)
    msg = TaskMessage.from_json(message["Body"])
    ports = engine.ports
    assert ports is not None
    now = ports.clock.now().timestamp()
    # An executor claimed the attempt and died: its lease has passed, nothing was reported.
    ports.runs.claim_attempt(run_id, "crashy", 1, "2026-01-01T00:00:00Z", now - 1, now - 100)
    assert _execute(engine, [message]) == {"batchItemFailures": []}
    assert not marker.exists()  # the redelivery does not run a second copy
    [report] = _reports(engine)
    lost = AttemptReport.from_json(report["Body"])
    assert lost.lost and lost.attempt == msg.attempt
    _complete(engine, [report])
    run, tasks = ports.runs.get_run_and_tasks(run_id, ["crashy"])
    assert tasks["crashy"].status == "failed"
    assert "lease" in (tasks["crashy"].error or "")
    assert run.status == "failed"


def test_work_per_completion_does_not_grow_with_the_run(
    emulator_bare: LocalRuntime, tmp_path: Path
) -> None:
    """Invariant 4: completing one task of a 150-wide fan-out costs what it costs in a 4-wide
    one; nothing scans the run's tasks on the hot path."""
    aws = emulator_bare

    def calls_for_one_completion(width: int) -> int:
        spec = {
            "tasks": [{"id": "root", "command": "true"}]
            + [{"id": f"m{i}", "command": "true", "depends": ["root"]} for i in range(width)]
            + [{"id": "sink", "command": "true", "depends": [f"m{i}" for i in range(width)]}]
        }
        _start(aws, spec, tmp_path)
        _execute(aws, _tasks(aws))
        _complete(aws, _reports(aws))  # the root: fans out
        middle = _tasks(aws)
        _execute(aws, middle[:1])
        [report] = _reports(aws)
        counter = ApiCallCounter()
        assert aws.clients is not None
        counter.attach(aws.clients.dynamodb)
        counter.attach(aws.clients.sqs)
        _complete(aws, [report])
        aws.clients.dynamodb.meta.events.unregister("before-call.*.*", counter._count)
        aws.clients.sqs.meta.events.unregister("before-call.*.*", counter._count)
        return counter.total()

    assert calls_for_one_completion(150) == calls_for_one_completion(4)


def test_large_definitions_live_in_s3_with_a_pointer_in_the_item(
    emulator_bare: LocalRuntime,
) -> None:
    aws = emulator_bare
    big = Workflow.model_validate(
        {
            "id": unique_id("big"),
            "tasks": [{"id": f"t{i}", "command": "echo " + "x" * 200} for i in range(2000)],
        }
    )
    assert aws.ports is not None and aws.settings is not None and aws.clients is not None
    version = aws.ports.definitions.save_version(big, "test", aws.ports.clock.now())
    item = aws.clients.dynamodb.get_item(
        TableName=aws.settings.table,
        Key={"pk": {"S": f"WF#{big.id}"}, "sk": {"S": f"V#{version:08d}"}},
    )["Item"]
    assert "body" not in item and item["body_s3_key"]["S"].startswith("definitions/")
    fresh = DynamoDefinitionStore(aws.clients, aws.settings.table, aws.settings.bucket)
    assert fresh.get_plan(big.id, version).workflow == big


def test_a_second_run_request_with_the_same_id_creates_nothing(
    engine: LocalRuntime, tmp_path: Path
) -> None:
    wf = Workflow.model_validate(
        {"id": unique_id("dup"), "tasks": [{"id": "a", "command": "true"}]}
    )
    version = engine.register(wf, "test")
    _tasks(engine)
    detail = {"workflow_id": wf.id, "version": version, "run_id": f"{wf.id}-r1"}
    first = dispatcher.handle(
        eventbridge_event("Run Requested", detail, "us-east-1"), None, engine.wiring
    )
    second = dispatcher.handle(
        eventbridge_event("Run Requested", detail, "us-east-1"), None, engine.wiring
    )
    assert (first["created"], second["created"]) == (True, False)
    assert _task_ids(_tasks(engine)) == ["a"]


def test_loader_registers_an_uploaded_workflow_and_reports_an_invalid_one(
    engine: LocalRuntime,
) -> None:
    assert engine.clients is not None and engine.settings is not None
    s3 = engine.clients.s3
    bucket = engine.settings.bucket
    wf_id = unique_id("uploaded")
    good_key = f"{WORKFLOWS_PREFIX}{wf_id}.yaml"
    s3.put_object(
        Bucket=bucket,
        Key=good_key,
        Body=f"id: {wf_id}\ntasks:\n  - id: a\n    command: 'true'\n".encode(),
    )
    result = loader.handle(
        s3_event("ObjectCreated:Put", bucket, good_key, "us-east-1"), None, engine.wiring
    )
    assert result["registered"] == [{"workflow_id": wf_id, "version": 1, "key": good_key}]
    # a broken re-upload of the same file keeps the version that works active
    s3.put_object(Bucket=bucket, Key=good_key, Body=b"id: [unclosed\n")
    result = loader.handle(
        s3_event("ObjectCreated:Put", bucket, good_key, "us-east-1"), None, engine.wiring
    )
    assert result["registered"] == [] and good_key in result["errors"][0]
    meta = engine.ports.definitions.get_meta(wf_id)  # type: ignore[union-attr]
    assert meta is not None and meta.active_version == 1
    bad_key = f"{WORKFLOWS_PREFIX}{wf_id}-bad.yaml"
    s3.put_object(Bucket=bucket, Key=bad_key, Body=b"id: x\ntasks:\n  - id: a\n    timeout: 0\n")
    result = loader.handle(
        s3_event("ObjectCreated:Put", bucket, bad_key, "us-east-1"), None, engine.wiring
    )
    assert result["registered"] == []
    report = s3.get_object(Bucket=bucket, Key=bad_key + ".error.txt")["Body"].read().decode()
    assert bad_key in report and "timeout" in report


def test_a_replayed_upload_event_is_processed_once_and_deleting_deactivates(
    engine: LocalRuntime,
) -> None:
    assert engine.clients is not None and engine.settings is not None and engine.ports is not None
    s3, bucket = engine.clients.s3, engine.settings.bucket
    wf_id = unique_id("deleted")
    key = f"{WORKFLOWS_PREFIX}{wf_id}.yaml"
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=f"id: {wf_id}\nschedule: '@hourly'\ntasks: [{{id: a, command: 'true'}}]\n".encode(),
    )
    created = s3_event("ObjectCreated:Put", bucket, key, "us-east-1", version_id="v1")
    assert len(loader.handle(created, None, engine.wiring)["registered"]) == 1
    assert loader.handle(created, None, engine.wiring)["registered"] == []  # the same event again
    meta = engine.ports.definitions.get_meta(wf_id)
    assert meta is not None and meta.active_version == 1 and meta.next_slot

    s3.delete_object(Bucket=bucket, Key=key)
    removed = s3_event("ObjectRemoved:Delete", bucket, key, "us-east-1", version_id="v1-del")
    assert loader.handle(removed, None, engine.wiring)["deactivated"] == [wf_id]
    meta = engine.ports.definitions.get_meta(wf_id)
    assert meta is not None and meta.active_version is None and meta.next_slot is None
    far_future = "9999-01-01T00:00:00Z"
    assert wf_id not in engine.ports.definitions.due_workflows(far_future, 1000)


def test_the_tick_reports_an_attempt_whose_executor_died_without_a_redelivery(
    engine: LocalRuntime, tmp_path: Path
) -> None:
    """A Fargate task that dies leaves no queue message behind: the tick finds its lease."""
    run_id, _ = _start(
        engine, {"tasks": [{"id": "heavy", "command": "true", "executor": "fargate"}]}, tmp_path
    )
    _tasks(engine)  # the message is consumed: the container started, then died
    ports = engine.ports
    assert ports is not None
    now = ports.clock.now().timestamp()
    ports.runs.claim_attempt(run_id, "heavy", 1, "2026-01-01T00:00:00Z", now - 5, now - 100)
    tick = eventbridge_event("Scheduled Event", {}, "us-east-1", source="aws.events")
    assert dispatcher.handle(tick, None, engine.wiring)["lost"] == [f"{run_id}/heavy"]
    [report] = _reports(engine)
    _complete(engine, [report])
    run, tasks = ports.runs.get_run_and_tasks(run_id, ["heavy"])
    assert tasks["heavy"].status == "failed" and run.status == "failed"
    # recorded: the next tick finds nothing more to report
    assert dispatcher.handle(tick, None, engine.wiring)["lost"] == []


def test_a_report_that_arrives_after_its_run_was_cancelled_starts_nothing(
    engine: LocalRuntime, tmp_path: Path
) -> None:
    """A chain's dependent is decided inside its parent's settlement only while the run
    runs; once cancelled, the parent's end is recorded and its dependent stays unstarted."""
    from stratoflow import services

    run_id, _ = _start(
        engine,
        {
            "tasks": [
                {"id": "a", "command": "true"},
                {"id": "b", "command": "true", "depends": ["a"]},
            ]
        },
        tmp_path,
    )
    [message] = _tasks(engine)
    _execute(engine, [message])
    [report] = _reports(engine)
    assert engine.ports is not None
    assert services.cancel_run(engine.ports, run_id) is True
    assert _complete(engine, [report]) == {"batchItemFailures": []}
    assert _tasks(engine) == []  # b was not enqueued
    a = engine.ports.runs.get_task(run_id, "a")
    b = engine.ports.runs.get_task(run_id, "b")
    assert (a.status.value, b.status.value, b.attempt) == ("succeeded", "pending", 0)
    assert engine.ports.runs.get_run(run_id).status.value == "cancelled"  # type: ignore[union-attr]


def test_a_chain_moves_on_without_reading_the_run_back(
    emulator_bare: LocalRuntime, tmp_path: Path
) -> None:
    """The dependent of a single parent is decided in the parent's settlement: one
    transaction and one send per hop, no BatchGetItem and no separate decision write."""
    aws = emulator_bare
    run_id, _ = _start(
        aws,
        {
            "tasks": [
                {"id": "a", "command": "true"},
                {"id": "b", "command": "true", "depends": ["a"]},
                {"id": "c", "command": "true", "depends": ["b"]},
            ]
        },
        tmp_path,
    )
    [message] = _tasks(aws)
    _execute(aws, [message])
    [report] = _reports(aws)
    assert aws.clients is not None
    with ApiCallCounter().attached(aws.clients.dynamodb, aws.clients.sqs) as counter:
        _complete(aws, [report])
    assert counter.snapshot() == {
        ("dynamodb", "TransactWriteItems"): 1,
        ("sqs", "SendMessageBatch"): 1,
    }
    [next_message] = _tasks(aws)
    assert json.loads(next_message["Body"])["task_id"] == "b"
    # the leaf's settlement reads the run once, to end it
    _execute(aws, [next_message])
    _complete(aws, _reports(aws))
    [last] = _tasks(aws)
    _execute(aws, [last])
    with ApiCallCounter().attached(aws.clients.dynamodb, aws.clients.sqs) as counter:
        _complete(aws, _reports(aws))
    calls = counter.snapshot()
    assert calls[("dynamodb", "GetItem")] + calls[("dynamodb", "BatchGetItem")] == 1
    assert aws.ports is not None
    assert aws.ports.runs.get_run(run_id).status.value == "succeeded"  # type: ignore[union-attr]


def test_a_crash_after_a_skip_was_decided_is_repaired_by_the_redelivery(
    engine: LocalRuntime, tmp_path: Path
) -> None:
    """The settlement that decided a dependent `skipped` is written, then the completion
    handler dies before propagating the skip: the report's redelivery must propagate it, or
    the run would never end."""
    from stratoflow.core.states import TaskStatus
    from stratoflow.ports import Settlement

    run_id, _ = _start(
        engine,
        {
            "tasks": [
                {"id": "a", "command": "true"},
                {"id": "b", "command": "true", "depends": ["a"], "trigger_rule": "all_failed"},
                {"id": "c", "command": "true", "depends": ["b"]},
            ]
        },
        tmp_path,
    )
    [message] = _tasks(engine)
    _execute(engine, [message])
    [report] = _reports(engine)
    assert engine.ports is not None
    # what the first delivery wrote before its handler died
    body = AttemptReport.from_json(report["Body"])
    first = Settlement(
        task_id="a",
        status=TaskStatus.SUCCEEDED,
        children=("b",),
        attempt=1,
        is_leaf=False,
        releases_slot=False,
        fields={"exit_code": 0, "settled_at": body.finished_at},
        decided={"b": TaskStatus.SKIPPED},
        require_running=True,
    )
    assert engine.ports.runs.finalize_task(run_id, first).outcome.value == "applied"
    assert engine.ports.runs.get_task(run_id, "c").status is TaskStatus.PENDING

    assert _complete(engine, [report]) == {"batchItemFailures": []}  # the redelivery
    statuses = {t: engine.ports.runs.get_task(run_id, t).status.value for t in "abc"}
    assert statuses == {"a": "succeeded", "b": "skipped", "c": "skipped"}
    assert engine.ports.runs.get_run(run_id).status.value == "succeeded"  # type: ignore[union-attr]
    assert _tasks(engine) == []


def test_a_wide_fan_out_hands_out_each_written_chunk_at_once(
    emulator_bare: LocalRuntime, tmp_path: Path
) -> None:
    """A settlement with 250 single-parent dependents is three transactions; each chunk's
    dependents are handed out as soon as their chunk is written, not after the last."""
    aws = emulator_bare
    from stratoflow.core.states import TaskStatus
    from stratoflow.ports import Settlement

    width = 250
    spec = {
        "tasks": [
            {"id": "root", "command": "true"},
            *({"id": f"t{i}", "command": "true", "depends": ["root"]} for i in range(width)),
        ]
    }
    run_id, _ = _start(aws, spec, tmp_path)
    [message] = _tasks(aws)
    _execute(aws, [message])
    _reports(aws)
    assert aws.ports is not None
    children = tuple(f"t{i}" for i in range(width))
    chunks: list[list[str]] = []

    def handed_out(chunk: Any) -> None:
        # the chunk is written when it is handed out
        assert aws.ports is not None
        assert aws.ports.runs.get_task(run_id, chunk[-1]).status is TaskStatus.QUEUED
        chunks.append(list(chunk))

    settlement = Settlement(
        task_id="root",
        status=TaskStatus.SUCCEEDED,
        children=children,
        attempt=1,
        is_leaf=False,
        releases_slot=False,
        fields={"exit_code": 0, "settled_at": "2026-11-27T00:00:00Z"},
        decided=dict.fromkeys(children, TaskStatus.QUEUED),
        require_running=True,
    )
    assert aws.ports.runs.finalize_task(run_id, settlement, handed_out).outcome.value == "applied"
    assert [len(c) for c in chunks] == [98, 99, 53]
    assert sorted(t for c in chunks for t in c) == sorted(children)
    # a redelivery writes nothing new and hands nothing out again
    chunks.clear()
    assert aws.ports.runs.finalize_task(run_id, settlement, handed_out).outcome.value == "already"
    assert chunks == []
