"""Operating runs from the CLI and over HTTP against a real `stratoflow local up`, and the
Fargate runner's side of a cancel (its task ARN recorded, SIGTERM taken as a cancel)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stratoflow import services
from stratoflow.config import ENV_TASK_MESSAGE
from stratoflow.core.model import Workflow
from stratoflow.core.records import AttemptReport
from stratoflow.local.emulator import package_root
from stratoflow.local.runtime import LocalRuntime
from tests.support import alive, http_json, local_up, unique_id, wait_until
from tests.support import cli as run_cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`stratoflow local up` on a folder, its API on a free port."""
    base = tmp_path_factory.mktemp("ops")
    folder, home = base / "flows", base / "home"
    folder.mkdir()
    with local_up(folder, home) as up:
        yield {"home": home, "folder": folder, "api": up.api, "base": base}


def cli(srv: dict[str, Any], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return run_cli(srv["home"], *args, timeout=timeout)


def test_upload_trigger_status_logs_runs_over_the_local_api(server: dict[str, Any]) -> None:
    wf = unique_id("hello")
    src = server["base"] / f"{wf}.yaml"
    src.write_text(
        f"id: {wf}\nparams: {{who: world}}\ntasks:\n"
        '  - id: greet\n    command: echo "hello $STRATOFLOW_PARAM_WHO"\n'
        "  - id: after\n    depends: [greet]\n    command: echo done\n"
    )
    up = cli(server, "upload", str(src), "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout) == {"workflow_id": wf, "version": 1, "key": f"workflows/{wf}.yaml"}
    assert (server["folder"] / f"{wf}.yaml").read_text() == src.read_text()  # in the folder

    status, detail = http_json(server["api"], "GET", f"/workflows/{wf}")
    assert status == 200 and detail["active_version"] == 1

    trig = cli(server, "trigger", wf, "--param", "who=ops", "--wait", "--json")
    assert trig.returncode == 0, trig.stderr
    doc = json.loads(trig.stdout)
    assert doc["status"] == "succeeded" and doc["tasks"]["greet"]["output_tail"] == "hello ops\n"
    run_id = doc["run_id"]

    st = cli(server, "status", run_id, "--json")
    assert st.returncode == 0 and json.loads(st.stdout) == doc
    assert http_json(server["api"], "GET", f"/runs/{run_id}") == (200, doc)

    logs = cli(server, "logs", run_id, "greet")
    assert (logs.returncode, logs.stdout) == (0, "hello ops\n")

    runs = cli(server, "runs", wf, "--json")
    assert [r["run_id"] for r in json.loads(runs.stdout)] == [run_id]

    assert cli(server, "pause", wf).returncode == 0
    assert http_json(server["api"], "GET", f"/workflows/{wf}")[1]["paused"] is True
    assert cli(server, "unpause", wf).returncode == 0

    # the caller's mistakes: exit 2, one line naming what was wrong, nothing done
    missing = cli(server, "status", "no-such-run")
    assert missing.returncode == 2 and "no-such-run" in missing.stderr
    bad = server["base"] / "bad.yaml"
    bad.write_text(f"id: {wf}\ntasks:\n  - id: a\n    command: x\n    timeout: soon\n")
    rejected = cli(server, "upload", str(bad))
    assert rejected.returncode == 2 and "timeout" in rejected.stderr and "soon" in rejected.stderr
    assert http_json(server["api"], "GET", f"/workflows/{wf}")[1]["latest_version"] == 1


def test_fail_fix_retry_from_the_cli(server: dict[str, Any]) -> None:
    wf = unique_id("fixme")
    flag = server["base"] / f"{wf}.fixed"
    ran = server["base"] / f"{wf}.ran"
    src = server["base"] / f"{wf}.yaml"
    src.write_text(
        f"id: {wf}\ntasks:\n"
        f"  - id: first\n    command: echo first >> {ran}\n"
        f"  - id: flaky\n    depends: [first]\n    command: echo flaky >> {ran}; test -f {flag}\n"
        f"  - id: last\n    depends: [flaky]\n    command: echo last >> {ran}\n"
    )
    assert cli(server, "upload", str(src)).returncode == 0
    failed = cli(server, "trigger", wf, "--wait", "--json")
    assert failed.returncode == 1
    doc = json.loads(failed.stdout)
    assert doc["status"] == "failed" and doc["tasks"]["last"]["status"] == "upstream_failed"

    flag.touch()
    ran.write_text("")
    retried = cli(server, "retry", doc["run_id"], "--wait", "--json")
    assert retried.returncode == 0, retried.stderr
    after = json.loads(retried.stdout)
    assert after["status"] == "succeeded" and after["redrives"] == 1
    assert ran.read_text().split() == ["flaky", "last"]  # `first` was kept, not rerun
    assert after["tasks"]["first"] == doc["tasks"]["first"]
    again = cli(server, "retry", doc["run_id"])
    assert again.returncode == 2 and "nothing to retry" in again.stderr


def test_cancel_and_follow_logs_from_the_cli(server: dict[str, Any]) -> None:
    wf = unique_id("long")
    src = server["base"] / f"{wf}.yaml"
    src.write_text(
        f"id: {wf}\ntasks:\n"
        "  - id: talk\n    command: for i in 1 2 3; do echo line $i; sleep 0.3; done\n"
        "  - id: hang\n    depends: [talk]\n    command: echo waiting; sleep 300\n"
        "  - id: never\n    depends: [hang]\n    command: echo never\n"
    )
    assert cli(server, "upload", str(src)).returncode == 0
    run_id = cli(server, "trigger", wf).stdout.strip()
    follow = cli(server, "logs", run_id, "talk", "--follow")
    assert follow.returncode == 0 and follow.stdout == "line 1\nline 2\nline 3\n"
    wait_until(
        lambda: (
            http_json(server["api"], "GET", f"/runs/{run_id}")[1]["tasks"]["hang"]["attempts"] == 1
        ),
        30,
        "hang to start",
    )
    cancelled = cli(server, "cancel", run_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stderr

    def cancelled_run() -> dict[str, Any] | None:
        d = http_json(server["api"], "GET", f"/runs/{run_id}")[1]
        if d["status"] == "cancelled" and d["tasks"]["hang"]["status"] == "cancelled":
            return d
        return None

    doc = wait_until(cancelled_run, 10, "the cancelled attempt")
    assert doc["tasks"]["never"]["attempts"] == 0
    twice = cli(server, "cancel", run_id)
    assert twice.returncode == 0 and "already cancelled" in twice.stderr
    status = cli(server, "status", run_id)
    assert status.returncode == 1  # as for `run`: a cancelled run is not a success


# --------------------------------------------------------------------------- Fargate runner


class _Metadata(BaseHTTPRequestHandler):
    """The ECS task metadata endpoint (v4) of one task."""

    def do_GET(self) -> None:
        if self.path.endswith("/task"):
            doc = {"TaskARN": "arn:aws:ecs:eu-west-1:123456789012:task/stratoflow/0f9e8d7c"}
        else:
            doc = {
                "LogOptions": {
                    "awslogs-group": "/stratoflow/runner",
                    "awslogs-stream": "r/c/0f9e8d7c",
                }
            }
        data = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def metadata_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Metadata)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v4/container"
    httpd.shutdown()


def test_the_fargate_runner_records_its_task_and_takes_sigterm_as_a_cancel(
    bare: LocalRuntime, metadata_url: str, tmp_path: Path
) -> None:
    assert bare.ports is not None and bare.settings is not None and bare.clients is not None
    pids = tmp_path / "pids"
    wf = Workflow.model_validate(
        {
            "id": unique_id("heavy"),
            "tasks": [
                {
                    "id": "crunch",
                    "executor": "fargate",
                    "retries": 3,
                    "command": f"sleep 300 & echo $! > {pids}; wait",
                }
            ],
        }
    )
    meta = services.register_workflow(bare.ports, wf, "test")
    run, _ = services.start_run(bare.ports, bare.ports.definitions.get_plan(wf.id, 1))
    assert meta.active_version == 1
    [message] = bare.clients.sqs.receive_message(
        QueueUrl=bare.settings.task_queue_url, WaitTimeSeconds=1
    )["Messages"]
    env = {
        **os.environ,
        **bare.settings.as_env(),
        ENV_TASK_MESSAGE: message["Body"],
        "ECS_CONTAINER_METADATA_URI_V4": metadata_url,
        "PYTHONPATH": package_root(),
    }
    container = subprocess.Popen([sys.executable, "-m", "stratoflow.runner.fargate"], env=env)
    try:
        wait_until(lambda: pids.exists() and pids.read_text().strip(), 30, "the command to start")
        task = bare.ports.runs.get_task(run.run_id, "crunch")
        assert task.worker == "arn:aws:ecs:eu-west-1:123456789012:task/stratoflow/0f9e8d7c"
        container.send_signal(signal.SIGTERM)  # what ECS StopTask does first
        assert container.wait(10) == 0
    finally:
        container.kill()
    grandchild = int(pids.read_text())
    wait_until(lambda: not alive(grandchild), 5, "the tree to die")
    [report_msg] = bare.clients.sqs.receive_message(
        QueueUrl=bare.settings.completion_queue_url, WaitTimeSeconds=1
    )["Messages"]
    report = AttemptReport.from_json(report_msg["Body"])
    assert (report.task_id, report.cancelled, report.exit_code) == ("crunch", True, None)


def test_run_a_file_on_an_api_uploads_triggers_and_follows(server: dict[str, Any]) -> None:
    """`run FILE --api URL` is what `run FILE --stack NAME` does once the URL is known."""
    wf = unique_id("remote")
    src = server["base"] / f"{wf}.yaml"
    src.write_text(f"id: {wf}\ntasks:\n  - id: a\n    command: echo remote\n")
    done = cli(server, "run", str(src), "--api", server["api"], "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["workflow_id"] == wf and doc["status"] == "succeeded"
    assert doc["tasks"]["a"]["output_tail"] == "remote\n"
    failing = server["base"] / f"{wf}-fails.yaml"
    failing.write_text(f"id: {wf}-fails\ntasks:\n  - id: a\n    command: exit 4\n")
    assert cli(server, "run", str(failing), "--api", server["api"]).returncode == 1
    invalid = server["base"] / f"{wf}-invalid.yaml"
    invalid.write_text(f"id: {wf}-invalid\ntasks: []\n")
    rejected = cli(server, "run", str(invalid), "--api", server["api"])
    assert rejected.returncode == 2 and "tasks" in rejected.stderr


@pytest.fixture(scope="module")
def emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`stratoflow local up --emulator`: the AWS adapters on the embedded moto server."""
    base = tmp_path_factory.mktemp("ops-emulator")
    folder, home = base / "flows", base / "home"
    folder.mkdir()
    with local_up(folder, home, "--emulator") as up:
        yield {"home": home, "folder": folder, "api": up.api, "base": base}


def test_an_aws_endpoint_is_operated_with_the_api_handler_in_process(
    emulator_server: dict[str, Any],
) -> None:
    """`--endpoint-url` (LocalStack's way): no HTTP API to talk to, so the CLI runs the API
    handler itself against that endpoint's resources; same documents, same exit codes."""
    server = emulator_server
    endpoint = json.loads((server["home"] / "local.json").read_text())["endpoint_url"]
    wf = unique_id("inproc")
    src = server["base"] / f"{wf}.yaml"
    src.write_text(f"id: {wf}\ntasks:\n  - id: a\n    command: echo in-process\n")
    assert cli(server, "upload", str(src), "--endpoint-url", endpoint).returncode == 0
    run_id = cli(server, "trigger", wf, "--endpoint-url", endpoint).stdout.strip()
    # local up's runtime executes it; the in-process API reads the same table

    def succeeded_run() -> dict[str, Any] | None:
        d = json.loads(cli(server, "status", run_id, "--json", "--endpoint-url", endpoint).stdout)
        return d if d["status"] == "succeeded" else None

    doc = wait_until(succeeded_run, 30, "the run")
    assert doc == http_json(server["api"], "GET", f"/runs/{run_id}")[1]
    missing = cli(server, "status", "no-such-run", "--endpoint-url", endpoint)
    assert missing.returncode == 2 and "no-such-run" in missing.stderr
