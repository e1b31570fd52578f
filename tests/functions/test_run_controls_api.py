"""The run-level controls through the handlers, with the events AWS sends: a task rerun
(`POST /runs/{id}/tasks/{task}/rerun`) and marked (`…/mark`) through the API handler, who
marked it taken from the request's IAM identity; a run's `timeout` enforced by the
dispatcher's tick. On both engines: the embedded one, and the AWS adapters on the emulator
(DynamoDB's transactions, conditions and the sparse index the tick queries)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stratoflow.core.records import iso, parse_iso
from stratoflow.handlers import api
from stratoflow.local.events import LambdaContext, api_gateway_event
from stratoflow.local.runtime import LocalRuntime
from tests.support import alive, json_payload, unique_id, wait_until

ALICE = "arn:aws:iam::123456789012:user/alice"


@pytest.fixture(params=["embedded", "emulator"])
def engine(request: pytest.FixtureRequest) -> LocalRuntime:
    name = "runtime" if request.param == "embedded" else "emulator_runtime"
    rt: LocalRuntime = request.getfixturevalue(name)
    return rt


def call(
    rt: LocalRuntime, method: str, path: str, body: Any = None, *, user_arn: str | None = None
) -> tuple[int, Any]:
    """One request as API Gateway (REST, IAM auth, proxy integration) hands it over."""
    event = api_gateway_event(
        method,
        path,
        headers={"Content-Type": "application/json"},
        body=json_payload(body, None),
    )
    if user_arn:
        event["requestContext"]["identity"]["userArn"] = user_arn
    resp = api.handle(event, LambdaContext("stratoflow-api", 29), rt.wiring)
    return resp["statusCode"], json.loads(resp["body"])


def upload(rt: LocalRuntime, wf: str, tasks: str, head: str = "") -> None:
    text = f"id: {wf}\n{head}tasks:\n{tasks}"
    event = api_gateway_event(
        "POST",
        "/workflows",
        query=[("name", f"{wf}.yaml")],
        headers={"Content-Type": "application/yaml"},
        body=text,
    )
    resp = api.handle(event, LambdaContext("stratoflow-api", 29), rt.wiring)
    assert resp["statusCode"] == 201, resp["body"]


def finished(rt: LocalRuntime, wf: str) -> dict[str, Any]:
    status, doc = call(rt, "POST", f"/workflows/{wf}/runs")
    assert status == 202, doc
    rt.wait(doc["run_id"], 60)
    return dict(call(rt, "GET", f"/runs/{doc['run_id']}")[1])


def states(doc: dict[str, Any]) -> dict[str, str]:
    return {t: s["status"] for t, s in doc["tasks"].items()}


def test_a_mark_is_recorded_with_the_callers_iam_arn_and_the_run_moves_on(
    engine: LocalRuntime, tmp_path: Path
) -> None:
    wf = unique_id("mark")
    upload(
        engine,
        wf,
        "  - id: a\n    command: exit 3\n"
        "  - id: b\n    depends: [a]\n    command: 'true'\n"
        "  - id: c\n    depends: [b]\n    command: 'true'\n",
    )
    failed = finished(engine, wf)
    assert states(failed) == {"a": "failed", "b": "upstream_failed", "c": "upstream_failed"}
    run_id = failed["run_id"]

    body = {"state": "succeeded", "reason": "done by hand"}
    status, doc = call(engine, "POST", f"/runs/{run_id}/tasks/a/mark", body, user_arn=ALICE)
    assert status == 200 and doc["status"] == "running" and doc["redrives"] == 1
    engine.wait(run_id, 60)
    done = call(engine, "GET", f"/runs/{run_id}")[1]
    assert done["status"] == "succeeded" and states(done) == dict.fromkeys("abc", "succeeded")
    [mark] = done["marks"]
    assert (mark["task_id"], mark["status"], mark["by"], mark["reason"]) == (
        "a",
        "succeeded",
        ALICE,
        "done by hand",
    )
    assert done["reason"] is None

    # the caller's mistakes: 4xx naming what was wrong
    status, doc = call(engine, "POST", f"/runs/{run_id}/tasks/a/mark", {"state": "skipped"})
    assert status == 400 and "state" in doc["message"]
    status, doc = call(engine, "POST", f"/runs/{run_id}/tasks/zz/mark", {"state": "failed"})
    assert status == 404 and "zz" in doc["message"]
    status, doc = call(engine, "POST", f"/runs/{run_id}/tasks/a/mark", {"state": "succeeded"})
    assert status == 409 and "already succeeded" in doc["message"]
    assert call(engine, "POST", "/runs/nope/tasks/a/mark", {"state": "failed"})[0] == 404


def test_a_running_task_marked_failed_stops_and_fails_the_run(
    engine: LocalRuntime, tmp_path: Path
) -> None:
    wf = unique_id("stop")
    pid_file = tmp_path / "pid"
    upload(
        engine,
        wf,
        f"  - id: hang\n    command: sleep 300 & echo $! > {pid_file}; wait\n"
        "  - id: next\n    depends: [hang]\n    command: 'true'\n",
    )
    run_id = call(engine, "POST", f"/workflows/{wf}/runs")[1]["run_id"]
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 30, "hang to start")
    body = {"state": "failed", "reason": "stuck"}
    status, doc = call(engine, "POST", f"/runs/{run_id}/tasks/hang/mark", body, user_arn=ALICE)
    assert status == 200, doc
    engine.wait(run_id, 30)
    done = call(engine, "GET", f"/runs/{run_id}")[1]
    assert done["status"] == "failed"
    assert states(done) == {"hang": "failed", "next": "upstream_failed"}
    wait_until(lambda: not alive(int(pid_file.read_text())), 10, "the command to be killed")
    # a task that has ended cannot be marked while its run runs; not a 5xx either way
    status, doc = call(engine, "POST", f"/runs/{run_id}/tasks/hang/mark", {"state": "failed"})
    assert status == 409


def test_rerun_of_one_task_and_of_its_downstream(engine: LocalRuntime, tmp_path: Path) -> None:
    wf = unique_id("rerun")
    log = tmp_path / "log"
    upload(
        engine,
        wf,
        f"  - id: a\n    command: echo a >> {log}\n"
        f"  - id: b\n    depends: [a]\n    command: echo b >> {log}\n"
        f"  - id: c\n    depends: [b]\n    command: echo c >> {log}\n",
    )
    first = finished(engine, wf)
    run_id = first["run_id"]
    log.write_text("")
    status, doc = call(engine, "POST", f"/runs/{run_id}/tasks/b/rerun")
    assert status == 200 and doc["redrives"] == 1
    engine.wait(run_id, 30)
    assert log.read_text().split() == ["b"]
    assert call(engine, "GET", f"/runs/{run_id}")[1]["status"] == "succeeded"

    log.write_text("")
    status, doc = call(engine, "POST", f"/runs/{run_id}/tasks/a/rerun", {"downstream": True})
    assert status == 200 and doc["redrives"] == 2
    engine.wait(run_id, 30)
    assert log.read_text().split() == ["a", "b", "c"]

    status, doc = call(engine, "POST", f"/runs/{run_id}/tasks/a/rerun", {"everything": True})
    assert status == 400 and "everything" in doc["message"]
    assert call(engine, "POST", f"/runs/{run_id}/tasks/zz/rerun")[0] == 404


def test_the_tick_fails_a_run_past_its_timeout_with_no_attempt_running(
    engine: LocalRuntime,
) -> None:
    # GIVEN a run whose only task failed and waits an hour for its retry, with a 1 s timeout
    wf = unique_id("overdue")
    upload(
        engine,
        wf,
        "  - id: a\n    command: exit 1\n    retries: 1\n    retry_delay: 1h\n",
        head="timeout: 1s\n",
    )
    run_id = call(engine, "POST", f"/workflows/{wf}/runs")[1]["run_id"]
    ports = engine.ports
    assert ports is not None
    wait_until(
        lambda: ports.runs.get_task(run_id, "a").status.value == "up_for_retry",
        30,
        "the retry's wait",
    )
    run = ports.runs.get_run(run_id)
    assert run is not None and run.deadline is not None
    deadline = parse_iso(run.deadline)
    assert deadline is not None
    wait_until(lambda: ports.clock.now() >= deadline, 10, "the deadline")
    # WHEN the scheduler ticks (no attempt runs to notice it)
    engine.tick()
    # THEN the run fails for its timeout, the waiting task cancelled
    engine.wait(run_id, 30)
    doc = call(engine, "GET", f"/runs/{run_id}")[1]
    assert (doc["status"], doc["reason"]) == ("failed", "run timed out after 1s")
    assert states(doc) == {"a": "cancelled"}
    # AND it is no longer listed as overdue (the entry is cleared just after the run's end
    # is announced): the next tick has nothing to do for it
    wait_until(
        lambda: run_id not in [r for r, _ in ports.runs.overdue_runs(iso(ports.clock.now()), 100)],
        10,
        "the overdue entry to be cleared",
    )
