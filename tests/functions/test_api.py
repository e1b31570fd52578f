"""The REST API handler with API Gateway proxy events, and the same endpoints over HTTP.

Each endpoint test runs twice: once handing the `api` Lambda handler the event API Gateway
sends (REST API, proxy integration), once over HTTP through the local server's adapter
(what `stratoflow local up` serves). Commands really run on the embedded emulator.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stratoflow import services
from stratoflow.bootstrap import Wiring
from stratoflow.config import API_ROUTES
from stratoflow.handlers import api
from stratoflow.local.events import LambdaContext, api_gateway_event
from stratoflow.local.http import ApiServer
from stratoflow.local.runtime import LocalRuntime
from tests.support import (
    alive,
    http_json,
    json_payload,
    remember_token,
    unique_id,
    wait_until,
)

EVENTS = Path(__file__).resolve().parents[1] / "events"
Call = Callable[..., tuple[int, Any]]


def _event_call(
    wiring: Wiring,
    method: str,
    path: str,
    *,
    body: Any = None,
    text: str | None = None,
    headers: dict[str, str] | None = None,
    query: list[tuple[str, str]] | None = None,
) -> tuple[int, Any]:
    event = api_gateway_event(
        method,
        path,
        query=query,
        headers={"Content-Type": "application/json", **(headers or {})},
        body=json_payload(body, text),
    )
    resp = api.handle(event, LambdaContext("stratoflow-api", 29), wiring)
    content_type = (resp.get("headers") or {}).get("Content-Type") or ",".join(
        (resp.get("multiValueHeaders") or {}).get("Content-Type", [])
    )
    assert content_type == "application/json"
    return resp["statusCode"], json.loads(resp["body"])


@pytest.fixture(scope="module")
def http_base(runtime: LocalRuntime) -> Iterator[str]:
    server = ApiServer(runtime.wiring, port=0).start()
    yield remember_token(server.url, server.token)
    server.stop()


@pytest.fixture(params=["event", "http"])
def call(request: pytest.FixtureRequest, runtime: LocalRuntime) -> Call:
    if request.param == "event":
        return functools.partial(_event_call, runtime.wiring)
    return functools.partial(http_json, request.getfixturevalue("http_base"))


def _upload(call: Call, text: str, name: str = "wf.yaml") -> dict[str, Any]:
    status, doc = call("POST", "/workflows", text=text, query=[("name", name)])
    assert status == 201, doc
    return dict(doc)


def _yaml(wf_id: str, tasks: str, extra: str = "") -> str:
    return f"id: {wf_id}\n{extra}tasks:\n{tasks}"


# --------------------------------------------------------------------------- workflows


def test_upload_registers_versions_and_lists_them(call: Call) -> None:
    wf = unique_id("up")
    first = _upload(call, _yaml(wf, "  - id: a\n    command: echo one\n"), f"{wf}.yaml")
    assert first == {"workflow_id": wf, "version": 1, "key": f"workflows/{wf}.yaml"}
    second = _upload(call, _yaml(wf, "  - id: a\n    command: echo two\n"), f"{wf}.yaml")
    assert second["version"] == 2

    status, listing = call("GET", "/workflows")
    assert status == 200
    [mine] = [w for w in listing["workflows"] if w["workflow_id"] == wf]
    assert (mine["active_version"], mine["latest_version"], mine["paused"]) == (2, 2, False)

    status, detail = call("GET", f"/workflows/{wf}")
    assert status == 200
    assert detail["definition"]["tasks"][0]["command"] == "echo two"
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    assert all(v["source"].endswith(f"workflows/{wf}.yaml") for v in detail["versions"])


def test_an_invalid_upload_is_a_400_naming_file_field_and_value(call: Call) -> None:
    wf = unique_id("bad")
    status, doc = call(
        "POST",
        "/workflows",
        text=_yaml(wf, "  - id: a\n    command: x\n    retries: lots\n"),
        query=[("name", f"{wf}.yaml")],
    )
    assert status == 400
    assert f"{wf}.yaml" in doc["message"] and "retries" in doc["message"]
    assert "lots" in doc["message"]
    assert call("GET", f"/workflows/{wf}")[0] == 404  # nothing registered


def test_pause_and_unpause(call: Call) -> None:
    wf = unique_id("sched")
    _upload(call, _yaml(wf, "  - id: a\n    command: 'true'\n", 'schedule: "0 3 * * *"\n'))
    assert call("POST", f"/workflows/{wf}/pause") == (200, {"workflow_id": wf, "paused": True})
    assert call("GET", f"/workflows/{wf}")[1]["paused"] is True
    assert call("GET", f"/workflows/{wf}")[1]["next_run"] is None
    assert call("POST", f"/workflows/{wf}/unpause")[1]["paused"] is False
    assert call("GET", f"/workflows/{wf}")[1]["next_run"] is not None
    status, doc = call("POST", "/workflows/no-such-workflow/pause")
    assert status == 404 and "no-such-workflow" in doc["message"]


# --------------------------------------------------------------------------- runs


def test_trigger_with_params_returns_the_run_document(call: Call, runtime: LocalRuntime) -> None:
    wf = unique_id("trig")
    _upload(
        call,
        _yaml(wf, '  - id: a\n    command: echo "$STRATOFLOW_PARAM_WHO"\n', "params: {who: x}\n"),
    )
    status, doc = call("POST", f"/workflows/{wf}/runs", body={"params": {"who": "api"}})
    # accepted at once: recorded queued, its start (and its tasks) handed to the engine
    assert status == 202
    assert doc["workflow_id"] == wf and doc["trigger"] == "api"
    assert doc["params"] == {"who": "api"} and doc["status"] == "queued" and doc["tasks"] == {}
    runtime.wait(doc["run_id"], 30)
    status, final = call("GET", f"/runs/{doc['run_id']}")
    assert status == 200 and final["status"] == "succeeded" and set(final["tasks"]) == {"a"}
    assert final["tasks"]["a"]["output_tail"] == "api\n"
    assert runtime.ports is not None
    assert final == services.run_status(runtime.ports, doc["run_id"])  # = `run --json`
    # The listing names each workflow's newest run (what `stratoflow workflows` shows).
    [summary] = [w for w in call("GET", "/workflows")[1]["workflows"] if w["workflow_id"] == wf]
    assert (summary["last_run"], summary["last_status"]) == (doc["run_id"], "succeeded")
    assert call("GET", f"/workflows/{wf}")[1]["last_run"] == doc["run_id"]


def test_an_idempotency_key_yields_one_run_however_often_it_is_sent(
    call: Call, runtime: LocalRuntime
) -> None:
    wf = unique_id("idem")
    _upload(call, _yaml(wf, "  - id: a\n    command: 'true'\n"))
    results: list[tuple[int, Any]] = []
    barrier = threading.Barrier(6)

    def send() -> None:
        barrier.wait()
        results.append(
            call(
                "POST",
                f"/workflows/{wf}/runs",
                body={"params": {"n": "1"}},
                headers={"Idempotency-Key": "nightly-2026-11-27"},
            )
        )

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(status for status, _ in results) == [200] * 5 + [202]
    assert len({doc["run_id"] for _, doc in results}) == 1
    status, page = call("GET", f"/workflows/{wf}/runs")
    assert status == 200 and len(page["runs"]) == 1
    # the same key with another body is the caller's mistake
    status, doc = call(
        "POST",
        f"/workflows/{wf}/runs",
        body={"params": {"n": "2"}},
        headers={"Idempotency-Key": "nightly-2026-11-27"},
    )
    assert status == 409 and "Idempotency-Key" in doc["message"]
    # without a key, every request is a new run
    assert call("POST", f"/workflows/{wf}/runs", body={})[0] == 202
    assert call("POST", f"/workflows/{wf}/runs")[0] == 202
    assert len(call("GET", f"/workflows/{wf}/runs")[1]["runs"]) == 3


def test_runs_are_listed_newest_first_in_pages(call: Call) -> None:
    wf = unique_id("page")
    _upload(call, _yaml(wf, "  - id: a\n    command: 'true'\n"))
    started = [call("POST", f"/workflows/{wf}/runs")[1]["run_id"] for _ in range(5)]
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        query = [("limit", "2")] + ([("next_token", token)] if token else [])
        status, page = call("GET", f"/workflows/{wf}/runs", query=query)
        assert status == 200 and len(page["runs"]) <= 2
        seen += [r["run_id"] for r in page["runs"]]
        pages += 1
        token = page["next_token"]
        if not token:
            break
    assert seen == list(reversed(started)) and pages >= 3
    assert call("GET", f"/workflows/{wf}/runs", query=[("next_token", "junk")])[0] == 400


def test_logs_of_each_attempt(call: Call, runtime: LocalRuntime, tmp_path: Path) -> None:
    wf = unique_id("logs")
    counter = tmp_path / "n"
    command = (
        f"echo attempt $STRATOFLOW_ATTEMPT; seq 1 3; echo oops >&2; "
        f"test -f {counter} || {{ touch {counter}; exit 1; }}"
    )
    _upload(
        call,
        _yaml(wf, f"  - id: a\n    retries: 1\n    retry_delay: 0\n    command: '{command}'\n"),
    )
    run_id = call("POST", f"/workflows/{wf}/runs")[1]["run_id"]
    runtime.wait(run_id, 30)
    status, last = call("GET", f"/runs/{run_id}/tasks/a/logs")
    assert status == 200
    assert (last["attempt"], last["attempts"], last["complete"], last["found"]) == (
        2,
        2,
        True,
        True,
    )
    assert last["text"] == "attempt 2\n1\n2\n3\noops\n"
    first = call("GET", f"/runs/{run_id}/tasks/a/logs", query=[("attempt", "1")])[1]
    assert first["text"] == "attempt 1\n1\n2\n3\noops\n" and first["attempt"] == 1
    status, doc = call("GET", f"/runs/{run_id}/tasks/a/logs", query=[("attempt", "3")])
    assert status == 404 and "2 attempt" in doc["message"]
    assert call("GET", f"/runs/{run_id}/tasks/zz/logs")[0] == 404
    assert call("GET", "/runs/nope/tasks/a/logs")[0] == 404


def test_cancel_kills_the_process_tree_and_starts_nothing_more(
    call: Call, runtime: LocalRuntime, tmp_path: Path
) -> None:
    wf = unique_id("cancel")
    pids = tmp_path / "pids"
    sleeper = f"sh -c 'sleep 300 & echo $! >> {pids}; wait' & echo $! >> {pids}; wait"
    _upload(
        call,
        _yaml(
            wf,
            f'  - id: slow\n    timeout: 600\n    command: "{sleeper}"\n'
            "  - id: after\n    command: 'true'\n    depends: [slow]\n"
            "  - id: anyway\n    command: 'true'\n    depends: [slow]\n"
            "    trigger_rule: all_done\n",
        ),
    )
    run_id = call("POST", f"/workflows/{wf}/runs")[1]["run_id"]
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, 30, "the sleepers")
    tree = [int(p) for p in pids.read_text().split()]
    assert all(alive(p) for p in tree)

    asked = time.monotonic()
    status, doc = call("POST", f"/runs/{run_id}/cancel")
    assert (status, doc) == (200, {"run_id": run_id, "status": "cancelled", "changed": True})
    wait_until(lambda: not any(alive(p) for p in tree), 5, "the process tree to die")
    assert time.monotonic() - asked < 5  # at the next status check, not at the timeout

    def settled() -> dict[str, Any] | None:
        d = call("GET", f"/runs/{run_id}")[1]
        return d if d["tasks"]["slow"]["attempts"] == 1 and runtime.progress.running == 0 else None

    wait_until(settled, 10, "the attempt's report")
    assert runtime.quiesce(10)
    final = call("GET", f"/runs/{run_id}")[1]
    assert final["status"] == "cancelled"
    assert final["tasks"]["slow"]["status"] == "cancelled"
    assert final["tasks"]["slow"]["exit_code"] is None
    # no dependent started, not even the all_done one
    assert final["tasks"]["after"]["attempts"] == 0 and final["tasks"]["anyway"]["attempts"] == 0
    assert runtime.ports is not None
    assert runtime.ports.runs.get_task(run_id, "slow").status.value == "cancelled"

    again = call("POST", f"/runs/{run_id}/cancel")
    assert again == (200, {"run_id": run_id, "status": "cancelled", "changed": False})
    assert call("GET", f"/runs/{run_id}")[1] == final


def test_a_cancel_racing_a_success_leaves_one_final_state(
    call: Call, runtime: LocalRuntime
) -> None:
    wf = unique_id("race")
    _upload(call, _yaml(wf, "  - id: a\n    command: 'true'\n  - id: b\n    command: 'true'\n"))
    outcomes: list[tuple[str, bool]] = []
    for _ in range(6):
        run_id = call("POST", f"/workflows/{wf}/runs")[1]["run_id"]
        status, doc = call("POST", f"/runs/{run_id}/cancel")
        assert status in (200, 409), doc
        runtime.wait(run_id, 30)
        first = call("GET", f"/runs/{run_id}")[1]
        assert runtime.quiesce(10)
        later = call("GET", f"/runs/{run_id}")[1]
        assert later["status"] == first["status"] and later["finished_at"] == first["finished_at"]
        changed = status == 200 and doc["changed"]
        assert later["status"] == ("cancelled" if changed else "succeeded")
        if later["status"] == "succeeded":
            assert {t["status"] for t in later["tasks"].values()} == {"succeeded"}
        outcomes.append((later["status"], changed))
    assert {s for s, _ in outcomes} <= {"cancelled", "succeeded"}


def test_retry_reruns_only_what_failed_with_the_pinned_version(
    call: Call, runtime: LocalRuntime, tmp_path: Path
) -> None:
    wf = unique_id("redrive")
    flag = tmp_path / "fixed"
    log = tmp_path / "ran"
    tasks = (
        f"  - id: extract\n    command: echo extract >> {log}\n"
        f"  - id: side\n    command: echo side >> {log}\n"
        f"  - id: load\n    depends: [extract]\n    retries: 1\n    retry_delay: 0\n"
        f"    command: echo load $STRATOFLOW_ATTEMPT >> {log}; test -f {flag}\n"
        f"  - id: report\n    depends: [load, side]\n    command: echo report >> {log}\n"
        f"  - id: on_failure\n    depends: [load]\n    trigger_rule: one_failed\n"
        f"    command: echo on_failure >> {log}\n"
    )
    _upload(call, _yaml(wf, tasks))
    run_id = call("POST", f"/workflows/{wf}/runs")[1]["run_id"]
    runtime.wait(run_id, 30)
    failed = call("GET", f"/runs/{run_id}")[1]
    assert failed["status"] == "failed"
    assert {t: s["status"] for t, s in failed["tasks"].items()} == {
        "extract": "succeeded",
        "side": "succeeded",
        "load": "failed",
        "report": "upstream_failed",
        "on_failure": "succeeded",
    }
    assert failed["tasks"]["load"]["attempts"] == 2
    # a new version of the workflow must not change what the retry runs
    _upload(call, _yaml(wf, "  - id: other\n    command: 'false'\n"))

    flag.write_text("fixed")
    log.write_text("")
    status, doc = call("POST", f"/runs/{run_id}/retry")
    assert status == 200 and doc["run_id"] == run_id and doc["status"] == "running"
    assert doc["redrives"] == 1 and doc["version"] == 1
    runtime.wait(run_id, 30)
    done = call("GET", f"/runs/{run_id}")[1]
    assert done["status"] == "succeeded" and done["redrives"] == 1
    # only the failed part ran again, as the run's third attempt of `load`
    assert sorted(log.read_text().splitlines()) == ["load 3", "report"]
    assert done["tasks"]["extract"] == failed["tasks"]["extract"]  # kept as it was
    assert done["tasks"]["on_failure"]["status"] == "succeeded"  # kept, not redone
    assert done["tasks"]["load"]["attempts"] == 3  # numbering goes on across the retry
    assert done["tasks"]["load"]["status"] == "succeeded"
    logs = call("GET", f"/runs/{run_id}/tasks/load/logs", query=[("attempt", "3")])[1]
    assert logs["text"] == "" and logs["found"] is True

    status, doc = call("POST", f"/runs/{run_id}/retry")
    assert status == 409 and "nothing to retry" in doc["message"]
    assert call("POST", "/runs/no-such-run/retry")[0] == 404


def test_retry_of_a_cancelled_run_runs_what_never_started(
    call: Call, runtime: LocalRuntime, tmp_path: Path
) -> None:
    wf = unique_id("again")
    gate = tmp_path / "gate"
    _upload(
        call,
        _yaml(
            wf,
            f"  - id: wait\n    command: while test ! -f {gate}; do sleep 0.1; done\n"
            "  - id: next\n    depends: [wait]\n    command: echo next\n",
        ),
    )
    run_id = call("POST", f"/workflows/{wf}/runs")[1]["run_id"]
    wait_until(
        lambda: call("GET", f"/runs/{run_id}")[1]["tasks"]["wait"]["attempts"] == 1, 30, "start"
    )
    status, doc = call("POST", f"/runs/{run_id}/retry")
    assert status == 409 and "running" in doc["message"]
    assert call("POST", f"/runs/{run_id}/cancel")[1]["changed"] is True
    runtime.wait(run_id, 30)
    assert runtime.quiesce(10)
    gate.write_text("open")
    assert call("POST", f"/runs/{run_id}/retry")[0] == 200
    runtime.wait(run_id, 30)
    done = call("GET", f"/runs/{run_id}")[1]
    assert done["status"] == "succeeded"
    assert done["tasks"]["next"]["output_tail"] == "next\n"
    assert done["tasks"]["wait"]["attempts"] == 2


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "words"),
    [
        ("GET", "/nowhere", {}, 404, "no route"),
        ("GET", "/runs/no-such-run", {}, 404, "no-such-run"),
        ("GET", "/workflows/no-such-wf", {}, 404, "no-such-wf"),
        ("GET", "/workflows/bad%20id!", {}, 400, "workflow_id"),
        ("POST", "/workflows/no-such-wf/runs", {}, 404, "no-such-wf"),
        ("GET", "/workflows/x/runs", {"query": [("limit", "0")]}, 400, "limit"),
        ("GET", "/workflows/x/runs", {"query": [("limit", "abc")]}, 400, "limit"),
        ("POST", "/workflows/x/runs", {"text": "{not json"}, 400, "not valid JSON"),
        ("POST", "/workflows/x/runs", {"body": {"params": {"a": 1}}}, 400, "params.a"),
        ("POST", "/workflows/x/runs", {"body": {"parms": {}}}, 400, "parms"),
        ("POST", "/workflows", {"text": "id: x", "query": [("name", "../x.yaml")]}, 400, "name"),
        ("POST", "/runs/no-such-run/cancel", {}, 404, "no-such-run"),
    ],
)
def test_bad_requests_get_a_4xx_naming_what_was_wrong(
    runtime: LocalRuntime, method: str, path: str, kwargs: dict[str, Any], status: int, words: str
) -> None:
    got, doc = _event_call(runtime.wiring, method, path, **kwargs)
    assert got == status, doc
    assert words in doc["message"]


def test_bad_params_of_a_known_workflow_are_a_400(call: Call) -> None:
    wf = unique_id("params")
    _upload(call, _yaml(wf, "  - id: a\n    command: 'true'\n"))
    status, doc = call("POST", f"/workflows/{wf}/runs", body={"params": {"bad-name": "x"}})
    assert status == 400 and "bad-name" in doc["message"]
    status, doc = call("POST", f"/workflows/{wf}/runs", body={"params": {"big": "x" * 40_000}})
    assert status == 400 and "bytes" in doc["message"]
    assert call("GET", f"/workflows/{wf}/runs")[1]["runs"] == []


def test_params_that_clash_with_the_workflows_own_are_a_400(call: Call) -> None:
    # Each is fine alone; with the workflow's defaults (region, a 30,000-byte note) one
    # differs only in case and the other makes the whole too large: refused, no run.
    wf = unique_id("params")
    extra = f"params:\n  region: eu\n  note: '{'n' * 30_000}'\n"
    _upload(call, _yaml(wf, "  - id: a\n    command: 'true'\n", extra))
    status, doc = call("POST", f"/workflows/{wf}/runs", body={"params": {"REGION": "us"}})
    assert status == 400 and "'region' and 'REGION'" in doc["message"]
    status, doc = call("POST", f"/workflows/{wf}/runs", body={"params": {"more": "m" * 3_000}})
    assert status == 400 and "bytes" in doc["message"]
    assert call("GET", f"/workflows/{wf}/runs")[1]["runs"] == []


def test_a_captured_api_gateway_event_is_served(runtime: LocalRuntime) -> None:
    """An event as API Gateway delivers it for an IAM-signed call (from AWS's docs sample,
    path and method changed): stage in requestContext, caller's IAM identity, multi-value
    headers."""
    event = json.loads((EVENTS / "apigw_rest_get_workflows.json").read_text())
    resp = api.handle(event, LambdaContext("stratoflow-api", 29), runtime.wiring)
    assert resp["statusCode"] == 200
    assert "workflows" in json.loads(resp["body"])


def test_the_openapi_document_in_docs_is_the_one_the_code_generates() -> None:
    kept = json.loads((Path(__file__).resolve().parents[2] / "docs/openapi.json").read_text())
    assert kept == api.openapi_document(), "run `make openapi` and commit docs/openapi.json"
    operations = {(m.upper(), p) for p, ops in kept["paths"].items() for m in ops}
    assert operations == set(API_ROUTES)


def test_an_unexpected_failure_is_a_500_that_keeps_its_details_in_the_log(
    runtime: LocalRuntime,
) -> None:
    class Broken:
        def list_workflows(self) -> None:
            raise RuntimeError("table arn:aws:dynamodb:secret-detail unreachable")

        def __getattr__(self, name: str) -> Any:
            return self.list_workflows

    broken = dataclasses.replace(
        runtime.wiring, ports=dataclasses.replace(runtime.wiring.ports, definitions=Broken())
    )
    status, doc = _event_call(broken, "GET", "/workflows")
    assert status == 500
    assert "secret-detail" not in doc["message"] and "request" in doc["message"]


def test_logs_of_a_compensation(call: Call, runtime: LocalRuntime) -> None:
    wf = unique_id("saga")
    _upload(
        call,
        _yaml(
            wf,
            "  - id: book\n    command: echo booked\n"
            "    compensate: echo undo $STRATOFLOW_TASK_ID\n"
            "  - id: pay\n    depends: [book]\n    command: exit 5\n",
        ),
    )
    run_id = call("POST", f"/workflows/{wf}/runs")[1]["run_id"]
    runtime.wait(run_id, 30)
    assert call("GET", f"/runs/{run_id}")[1]["compensations"][0]["status"] == "succeeded"
    status, doc = call("GET", f"/runs/{run_id}/tasks/book/logs", query=[("compensation", "true")])
    assert status == 200
    assert (doc["text"], doc["status"], doc["complete"]) == ("undo book\n", "succeeded", True)
    assert call("GET", f"/runs/{run_id}/tasks/book/logs")[1]["text"] == "booked\n"
    status, doc = call("GET", f"/runs/{run_id}/tasks/pay/logs", query=[("compensation", "true")])
    assert status == 404 and "not been compensated" in doc["message"]
