"""A trigger records its run queued and hands its start to the completion handler; a cancel
hands off its per-task work. On both engines: the embedded one and the AWS adapters on the
embedded moto server, with nobody pumping the queues, so that each test delivers the
handed-off messages itself (twice, or never) through the real completion handler.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stratoflow import services
from stratoflow.core.loader import load_workflow_text
from stratoflow.core.records import TaskMessage, iso
from stratoflow.core.states import RunStatus, TaskStatus
from stratoflow.handlers import api, completion
from stratoflow.local.events import LambdaContext, api_gateway_event, sqs_event
from stratoflow.local.runtime import LocalRuntime
from stratoflow.ports import RunCommand
from tests.support import unique_id

ROOTS = ("r0", "r1", "r2")


@pytest.fixture(params=["bare", "emulator_bare"])
def engine(request: pytest.FixtureRequest) -> Iterator[LocalRuntime]:
    rt: LocalRuntime = request.getfixturevalue(request.param)
    _drain(rt, _completions(rt))  # what earlier tests left
    _drain(rt, _tasks(rt))
    yield rt


def _completions(rt: LocalRuntime) -> str:
    assert rt.settings is not None
    return rt.settings.completion_queue_url


def _tasks(rt: LocalRuntime) -> str:
    assert rt.settings is not None
    return rt.settings.task_queue_url


def _drain(rt: LocalRuntime, url: str) -> list[dict[str, Any]]:
    """Every message visible in the queue now, deleted from it."""
    assert rt.clients is not None
    out: list[dict[str, Any]] = []
    while True:
        got = rt.clients.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["All"]
        ).get("Messages", [])
        if not got:
            return out
        rt.clients.sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )
        out += got


def _commands(rt: LocalRuntime, run_id: str) -> list[dict[str, Any]]:
    found = _drain(rt, _completions(rt))
    return [m for m in found if (c := RunCommand.from_body(m["Body"])) and c.run_id == run_id]


def _deliver(rt: LocalRuntime, messages: list[dict[str, Any]]) -> None:
    """Hand the messages to the completion handler as SQS's event-source mapping would."""
    assert rt.settings is not None
    event = sqs_event(messages, _completions(rt), rt.settings.region)
    result = completion.handle(event, LambdaContext("stratoflow-completion"), rt.wiring)
    assert result == {"batchItemFailures": []}


def _sent_tasks(rt: LocalRuntime, run_id: str) -> list[str]:
    bodies = [TaskMessage.from_json(m["Body"]) for m in _drain(rt, _tasks(rt))]
    return sorted(m.task_id for m in bodies if m.run_id == run_id)


def _register(rt: LocalRuntime) -> str:
    wf_id = unique_id("handoff")
    doc = {
        "id": wf_id,
        "tasks": [
            *({"id": r, "command": "true"} for r in ROOTS),
            {"id": "child", "command": "true", "depends": list(ROOTS)},
        ],
    }
    rt.register(load_workflow_text(json.dumps(doc), f"{wf_id}.json"), f"test://{wf_id}")
    return wf_id


def _trigger(rt: LocalRuntime) -> str:
    assert rt.ports is not None
    run, created = services.trigger_run(rt.ports, _register(rt), {})
    assert created
    return run.run_id


def test_a_triggered_run_is_recorded_queued_with_no_tasks_and_its_start_handed_off(
    engine: LocalRuntime,
) -> None:
    ports = engine.ports
    assert ports is not None
    run_id = _trigger(engine)
    run = ports.runs.get_run(run_id)
    assert run is not None and (run.status, run.started_at) == (RunStatus.QUEUED, None)
    assert ports.runs.list_tasks(run_id) == {}
    assert _sent_tasks(engine, run_id) == []
    assert [RunCommand.from_body(m["Body"]) for m in _commands(engine, run_id)] == [
        RunCommand(RunCommand.START, run_id)
    ]


def test_a_start_delivered_twice_creates_nothing_twice(engine: LocalRuntime) -> None:
    # GIVEN a triggered run and its start message
    ports = engine.ports
    assert ports is not None
    run_id = _trigger(engine)
    [start] = _commands(engine, run_id)
    # WHEN the message is delivered, and delivered again (SQS's at-least-once)
    _deliver(engine, [start])
    after_first = ports.runs.get_run(run_id)
    _deliver(engine, [start])
    # THEN the run is running, started once, and each root was decided and sent once
    run = ports.runs.get_run(run_id)
    assert run is not None and run.status is RunStatus.RUNNING
    assert run.started_at is not None and run == after_first
    tasks = ports.runs.list_tasks(run_id)
    assert {t: r.status for t, r in tasks.items()} == dict.fromkeys(ROOTS, TaskStatus.QUEUED)
    assert _sent_tasks(engine, run_id) == list(ROOTS)


def test_a_start_that_died_midway_is_resumed_and_resends_only_unclaimed_roots(
    engine: LocalRuntime,
) -> None:
    # GIVEN a run whose start began and decided two roots, then died before sending them,
    # and one of those two has since been claimed by an executor (its message did go out)
    ports = engine.ports
    assert ports is not None
    run_id = _trigger(engine)
    [start] = _commands(engine, run_id)
    assert ports.runs.begin_run(run_id)
    now = iso(ports.clock.now())
    assert ports.runs.decide_tasks(run_id, ["r0", "r1"], TaskStatus.QUEUED, now) == ["r0", "r1"]
    ports.runs.claim_attempt(run_id, "r0", 1, now, time.time() + 60, time.time())
    # WHEN its message is delivered again
    _deliver(engine, [start])
    # THEN the unclaimed decided root is sent again, the undecided one is decided and sent,
    # the claimed one is left alone, and the start is complete
    assert _sent_tasks(engine, run_id) == ["r1", "r2"]
    run = ports.runs.get_run(run_id)
    assert run is not None and run.status is RunStatus.RUNNING and run.started_at
    assert ports.runs.get_task(run_id, "r0").status is TaskStatus.RUNNING


def test_a_lost_start_message_is_handed_off_again_by_the_tick(
    engine: LocalRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a triggered run whose start message was lost
    ports = engine.ports
    assert ports is not None
    run_id = _trigger(engine)
    assert _commands(engine, run_id)  # gone from the queue, never handled
    # WHEN the dispatcher's tick runs once the run is older than the re-hand age
    monkeypatch.setattr("stratoflow.services.start.START_REHAND_SECONDS", 0.0)
    engine.tick()
    # THEN its start is handed off again, and that message starts it
    again = _commands(engine, run_id)
    assert len(again) == 1
    _deliver(engine, again)
    run = ports.runs.get_run(run_id)
    assert run is not None and run.status is RunStatus.RUNNING and run.started_at
    assert _sent_tasks(engine, run_id) == list(ROOTS)
    # and a started run is not handed off again
    engine.tick()
    assert _commands(engine, run_id) == []


def test_a_queued_run_cancelled_never_starts(engine: LocalRuntime) -> None:
    # GIVEN a triggered run, cancelled before its start message was handled
    ports = engine.ports
    assert ports is not None
    run_id = _trigger(engine)
    assert services.cancel_run(ports, run_id) is True
    assert services.cancel_run(ports, run_id) is False
    run = ports.runs.get_run(run_id)
    assert run is not None and run.status is RunStatus.CANCELLED
    # WHEN its start and its cancel's work are delivered
    messages = _commands(engine, run_id)
    kinds = sorted(json.loads(m["Body"])["command"] for m in messages)
    assert kinds == [RunCommand.CANCEL, RunCommand.START]
    _deliver(engine, messages)
    # THEN nothing was sent and nothing of it runs
    assert _sent_tasks(engine, run_id) == []
    statuses = {r.status for r in ports.runs.list_tasks(run_id).values()}
    assert statuses <= {TaskStatus.CANCELLED}
    assert ports.runs.pending_starts(iso(ports.clock.now()) + "~", 1000).count(run_id) == 0


def test_a_cancel_answers_before_its_task_work_which_its_message_does_once(
    engine: LocalRuntime,
) -> None:
    # GIVEN a started run whose roots are queued
    ports = engine.ports
    assert ports is not None
    run_id = _trigger(engine)
    _deliver(engine, _commands(engine, run_id))
    # WHEN it is cancelled
    assert services.cancel_run(ports, run_id) is True
    # THEN the run is cancelled at once, its tasks only once the handed-off work is done
    run = ports.runs.get_run(run_id)
    assert run is not None and run.status is RunStatus.CANCELLED
    assert ports.runs.get_task(run_id, "r0").status is TaskStatus.QUEUED
    [work] = _commands(engine, run_id)
    _deliver(engine, [work])
    _deliver(engine, [work])  # a redelivery changes nothing
    tasks = ports.runs.list_tasks(run_id)
    assert {t: r.status for t, r in tasks.items() if t in ROOTS} == dict.fromkeys(
        ROOTS, TaskStatus.CANCELLED
    )


# --------------------------------------------------------------------------- at once


def _api(
    rt: LocalRuntime, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    event = api_gateway_event(
        method,
        path,
        headers={"Content-Type": "application/json"},
        body=None if body is None else json.dumps(body),
    )
    resp = api.handle(event, LambdaContext("stratoflow-api", 29), rt.wiring)
    headers = {k: ",".join(v) for k, v in (resp.get("multiValueHeaders") or {}).items()}
    return resp["statusCode"], {**headers, **(resp.get("headers") or {})}, json.loads(resp["body"])


WIDE = 20_000


def test_a_20000_task_trigger_and_its_cancel_are_answered_in_under_a_second_on_aws_adapters(
    emulator_bare: LocalRuntime,
) -> None:
    # GIVEN a registered workflow of 20,000 tasks (all roots), on the AWS adapters
    wf_id = unique_id("wide")
    doc = {"id": wf_id, "tasks": [{"id": f"t{n}", "command": "true"} for n in range(WIDE)]}
    emulator_bare.register(load_workflow_text(json.dumps(doc), f"{wf_id}.json"), "test://w")
    assert (
        _api(emulator_bare, "GET", f"/workflows/{wf_id}")[0] == 200
    )  # the API's first call is behind us
    # WHEN it is triggered through the API handler, as API Gateway invokes it
    started = time.monotonic()
    status, headers, run = _api(emulator_bare, "POST", f"/workflows/{wf_id}/runs", {})
    took = time.monotonic() - started
    # THEN the answer came in under a second: accepted, queued, its start pending
    assert status == 202, run
    assert took < 1.0, f"trigger answered in {took:.2f} s"
    assert (run["status"], run["tasks"]) == ("queued", {})
    assert headers["Location"] == f"/runs/{run['run_id']}"
    assert _api(emulator_bare, "GET", f"/runs/{run['run_id']}")[2]["status"] == "queued"
    # and so does its cancel
    started = time.monotonic()
    status, _, cancelled = _api(emulator_bare, "POST", f"/runs/{run['run_id']}/cancel")
    took = time.monotonic() - started
    assert (status, cancelled["status"], cancelled["changed"]) == (200, "cancelled", True)
    assert took < 1.0, f"cancel answered in {took:.2f} s"


@pytest.mark.parametrize("fixture", ["runtime", "emulator_runtime"])
def test_a_triggered_run_starts_and_completes(fixture: str, request: pytest.FixtureRequest) -> None:
    rt: LocalRuntime = request.getfixturevalue(fixture)
    wf_id = _register(rt)
    status, _, run = _api(rt, "POST", f"/workflows/{wf_id}/runs", {})
    assert (status, run["status"]) == (202, "queued")
    assert rt.wait(run["run_id"], 60).status is RunStatus.SUCCEEDED
    final = _api(rt, "GET", f"/runs/{run['run_id']}")[2]
    assert {t["status"] for t in final["tasks"].values()} == {"succeeded"}
