"""Invariant 12 on the executor path: a command runs as its task role, never as the
executor, and gets its secrets for itself alone (masked in its output, stored nowhere).

On the AWS adapters (moto's STS, SSM and Secrets Manager on the embedded emulator) and on
the embedded engine (its local secret source), with real commands.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from stratoflow import bootstrap, services
from stratoflow.core.model import Workflow
from stratoflow.core.records import AttemptReport, TaskMessage
from stratoflow.handlers import api
from stratoflow.local.events import LambdaContext, api_gateway_event
from stratoflow.local.runtime import LocalRuntime
from stratoflow.services import Ports
from stratoflow.services.execution import role_session_name
from tests.support import run_workflow, unique_id

TASK_ROLE = "arn:aws:iam::123456789012:role/stratoflow-task-default"
EXECUTOR_SECRETS = {
    # What an executor's own environment holds on Lambda and Fargate.
    "AWS_SESSION_TOKEN": "executor-session-token",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/executor-guid",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN": "executor-container-token",
    "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
    "ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/executor",
}


# ---- helpers ----------------------------------------------------------------------------


def _aws_ports(rt: LocalRuntime) -> Ports:
    """The AWS adapters as an executor on Lambda wires them: with a default task role."""
    assert rt.settings is not None and rt.clients is not None
    return bootstrap.build_ports(
        replace(rt.settings, task_role_arn=TASK_ROLE),
        clients=rt.clients,  # type: ignore[arg-type]
    )


def _drain(rt: LocalRuntime, url: str) -> list[dict[str, Any]]:
    assert rt.clients is not None
    out: list[dict[str, Any]] = []
    while msgs := rt.clients.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        out += msgs
        for m in msgs:
            rt.clients.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return out


def _execute_one(
    rt: LocalRuntime,
    ports: Ports,
    spec: dict[str, Any],
    workdir: Path,
    params: dict[str, str] | None = None,
) -> tuple[str, TaskMessage, AttemptReport]:
    """Start a one-task run and execute its attempt with `ports` (as the executor would);
    the report is recorded by the completion use case. Returns (run id, message, report)."""
    assert rt.settings is not None and rt.runner is not None
    _drain(rt, rt.settings.task_queue_url), _drain(rt, rt.settings.completion_queue_url)
    wf = Workflow.model_validate({**spec, "id": unique_id(spec.get("id", "cred"))})
    version = rt.register(wf, "test")
    plan = ports.definitions.get_plan(wf.id, version)
    run, _ = services.start_run(ports, plan, params=params, workdir=str(workdir))
    (message,) = _drain(rt, rt.settings.task_queue_url)
    msg = TaskMessage.from_json(message["Body"])
    result = services.execute_task(ports, msg, rt.runner)
    assert result.report is not None
    for sent in _drain(rt, rt.settings.completion_queue_url):
        services.record_completion(ports, AttemptReport.from_json(sent["Body"]))
    return run.run_id, msg, result.report


def _printed_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _log(rt: LocalRuntime, msg: TaskMessage) -> str:
    assert rt.runner is not None
    ref = rt.runner.log_ref(services.attempt_log_name(msg))
    return Path(ref.removeprefix("file:")).read_text()


def _api(
    rt: LocalRuntime, method: str, path: str, query: list[tuple[str, str]] | None = None
) -> tuple[int, str]:
    resp = api.handle(
        api_gateway_event(method, path, query=query), LambdaContext("stratoflow-api", 29), rt.wiring
    )
    return resp["statusCode"], resp["body"]


def _answers(rt: LocalRuntime, run_id: str, workflow_id: str, task_id: str) -> list[str]:
    """GET /runs/{id}, the task's logs and GET /workflows/{id}, each answering 200."""
    bodies = []
    for path in (
        f"/runs/{run_id}",
        f"/runs/{run_id}/tasks/{task_id}/logs",
        f"/workflows/{workflow_id}",
    ):
        status, body = _api(rt, "GET", path)
        assert status == 200, (path, body)
        bodies.append(body)
    return bodies


# ---- credentials (AWS adapters, moto STS) -----------------------------------------------


def test_a_command_on_the_executor_path_runs_as_the_task_role_not_as_the_executor(
    emulator_bare: LocalRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = emulator_bare
    ports = _aws_ports(rt)
    for name, value in EXECUTOR_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STRATOFLOW_TABLE", "the-executors-table")
    executor_key = os.environ["AWS_ACCESS_KEY_ID"]

    _, msg, report = _execute_one(
        rt, ports, {"tasks": [{"id": "whoami", "command": "env"}]}, tmp_path
    )

    assert report.exit_code == 0, report.output_tail
    env = _printed_env(_log(rt, msg))
    # Nothing of the executor's own identity reaches the command...
    for name, value in EXECUTOR_SECRETS.items():
        assert env.get(name) != value, name
        assert value not in _log(rt, msg)
    assert not any(k.startswith(("AWS_LAMBDA_", "AWS_CONTAINER_", "ECS_")) for k in env)
    assert "STRATOFLOW_TABLE" not in env
    assert env["AWS_ACCESS_KEY_ID"] != executor_key
    # ...but the assumed task role's credentials do, for this attempt's session.
    assert env["AWS_SESSION_TOKEN"] and env["AWS_SECRET_ACCESS_KEY"]
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["STRATOFLOW_TASK_ID"] == "whoami"
    sts = _sts_as(rt, env)
    identity = sts.get_caller_identity()
    assert identity["Arn"] == (
        "arn:aws:sts::123456789012:assumed-role/stratoflow-task-default/"
        + role_session_name(msg, 1)
    )
    assert msg.task_id in identity["Arn"] and msg.run_id.split("@")[0] in identity["Arn"]


def _sts_as(rt: LocalRuntime, env: dict[str, str]) -> Any:
    import boto3

    assert rt.clients is not None
    return boto3.client(
        "sts",
        region_name="us-east-1",
        endpoint_url=rt.clients.endpoint_url,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=env["AWS_SESSION_TOKEN"],
    )


def test_a_task_role_given_by_name_is_assumed_in_the_default_roles_account(
    emulator_bare: LocalRuntime, tmp_path: Path
) -> None:
    rt = emulator_bare
    spec = {"role": "stratoflow-task-etl", "tasks": [{"id": "named", "command": "env"}]}

    _, msg, report = _execute_one(rt, _aws_ports(rt), spec, tmp_path)

    assert report.exit_code == 0, report.output_tail
    arn = _sts_as(rt, _printed_env(_log(rt, msg))).get_caller_identity()["Arn"]
    assert arn.startswith("arn:aws:sts::123456789012:assumed-role/stratoflow-task-etl/")


def test_an_executor_on_aws_without_a_task_role_refuses_to_run_the_command(
    emulator_bare: LocalRuntime, tmp_path: Path
) -> None:
    from stratoflow.aws.credentials import NoTaskRole

    rt = emulator_bare
    marker = tmp_path / "ran"
    ports = replace(_aws_ports(rt), credentials=NoTaskRole())

    _, _, report = _execute_one(
        rt, ports, {"tasks": [{"id": "refused", "command": f"touch {marker}"}]}, tmp_path
    )

    assert not marker.exists()
    assert not report.succeeded
    assert "no task role configured" in report.output_tail


# ---- secrets (AWS adapters, moto SSM and Secrets Manager) -------------------------------


def test_secrets_from_ssm_and_secrets_manager_reach_the_command_masked_and_stored_nowhere(
    emulator_bare: LocalRuntime, tmp_path: Path
) -> None:
    rt = emulator_bare
    assert rt.clients is not None and rt.settings is not None
    stem = unique_id("sec")
    db_password, api_key, token = f"pw-{stem}-s3cr3t", f"key-{stem}-a9", f"tok-{stem}-77"
    rt.clients.client("ssm").put_parameter(
        Name=f"/stratoflow/{stem}/db", Value=db_password, Type="SecureString"
    )
    rt.clients.client("secretsmanager").create_secret(
        Name=f"stratoflow/{stem}/api", SecretString=json.dumps({"key": api_key, "user": "u"})
    )
    spec = {
        "params": {"TOKEN": {"secret": True}},
        "secrets": {"DB_PASSWORD": f"ssm:/stratoflow/{stem}/db"},
        "tasks": [
            {
                "id": "use",
                "command": _PRINTS_SECRETS,
                "secrets": {"API_KEY": f"secretsmanager:stratoflow/{stem}/api#key"},
            }
        ],
    }

    run_id, msg, report = _execute_one(rt, _aws_ports(rt), spec, tmp_path, params={"TOKEN": token})

    assert report.exit_code == 0, report.output_tail
    log = _log(rt, msg)
    # The command got the values (it checked them against their lengths and hashes)...
    assert "db ok" in log and "api ok" in log and "token ok" in log
    # ...and every one of them is masked in what it printed, even split across writes.
    for text in (log, report.output_tail):
        for value in (db_password, api_key, token):
            assert value not in text
        assert text.count("***") >= 4
    doc = services.run_status(rt.ports, run_id)  # type: ignore[arg-type]
    assert doc is not None and doc["params"]["TOKEN"] == "***"
    items = rt.clients.dynamodb.scan(TableName=rt.settings.table)["Items"]
    answers = _answers(rt, run_id, msg.workflow_id, "use")
    assert json.loads(answers[0])["params"]["TOKEN"] == "***"
    for where in (json.dumps(items), report.to_json(), *answers):
        assert db_password not in where and api_key not in where


def test_a_secret_that_cannot_be_resolved_fails_the_attempt_naming_it(
    emulator_bare: LocalRuntime, tmp_path: Path
) -> None:
    rt = emulator_bare
    marker = tmp_path / "ran"
    spec = {
        "tasks": [
            {
                "id": "needs",
                "command": f"touch {marker}",
                "secrets": {"DB_PASSWORD": "ssm:/stratoflow/does/not/exist"},
            }
        ]
    }

    _, _, report = _execute_one(rt, _aws_ports(rt), spec, tmp_path)

    assert not marker.exists() and not report.succeeded
    assert "DB_PASSWORD" in report.output_tail
    assert "ssm:/stratoflow/does/not/exist" in report.output_tail
    assert "does not exist" in report.output_tail


# A command that checks each secret's value without printing it whole, then prints each
# one: whole, and cut in two writes a moment apart (two reads of the pipe, so the masker
# sees the value split across chunks).
_PRINTS_SECRETS = r"""
expect() { [ "$(printf %s "$2" | wc -c)" -gt 8 ] && echo "$1 ok"; }
expect db "$DB_PASSWORD"; expect api "$API_KEY"; expect token "$STRATOFLOW_PARAM_TOKEN"
echo "db=$DB_PASSWORD api=$API_KEY token=$STRATOFLOW_PARAM_TOKEN"
half="${DB_PASSWORD%????????}"
printf 'split=%s' "$half"; sleep 0.3; printf '%s\n' "${DB_PASSWORD#"$half"}"
"""


# ---- the embedded engine: local secrets, the user's environment ---------------------------


def test_local_secrets_from_the_homes_file_are_masked_and_absent_from_the_database(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    stem = unique_id("local")
    value = f"local-{stem}-hunter2"
    reference = f"ssm:/stratoflow/{stem}/db"
    secrets_file = runtime.state_dir / "secrets.json"
    entries = json.loads(secrets_file.read_text()) if secrets_file.exists() else {}
    secrets_file.write_text(json.dumps({**entries, reference: value}))
    secrets_file.chmod(0o600)
    spec = {
        "id": stem,
        "tasks": [
            {
                "id": "use",
                # The value's length, not the value: the command is stored and shown.
                "command": f'[ ${{#DB_PASSWORD}} -eq {len(value)} ] && echo "db=$DB_PASSWORD"',
                "secrets": {"DB_PASSWORD": reference},
            }
        ],
    }

    doc = run_workflow(runtime, spec, tmp_path)

    task = doc["tasks"]["use"]
    assert task["status"] == "succeeded", task
    assert task["output_tail"] == "db=***\n"
    answers = _answers(runtime, doc["run_id"], doc["workflow_id"], "use")
    assert "db=***" in json.loads(answers[1])["text"]
    stored = b"".join(p.read_bytes() for p in runtime.state_dir.glob("engine.db*"))
    assert stored, "the engine's database files were not found"
    for where in (stored, *(a.encode() for a in answers)):
        assert value.encode() not in where


def test_a_secrets_file_others_may_read_is_refused(tmp_path: Path) -> None:
    from stratoflow.embedded.secrets import LocalSecretSource
    from stratoflow.ports import SecretUnavailable

    (tmp_path / "secrets.json").write_text(json.dumps({"ssm:/x/y": "v4lue-open"}))
    (tmp_path / "secrets.json").chmod(0o644)
    source = LocalSecretSource(tmp_path, environ={})

    with pytest.raises(SecretUnavailable) as caught:
        source.resolve("DB", "ssm:/x/y")

    assert "chmod 600" in str(caught.value) and "0644" in str(caught.value)
    assert "v4lue-open" not in str(caught.value)


def test_locally_commands_keep_the_users_environment_but_not_other_secrets(
    runtime: LocalRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATOFLOW_SECRET_UNRELATED", "not-for-this-task")
    monkeypatch.setenv("MY_OWN_SETTING", "kept")
    spec = {"role": "stratoflow-task-etl", "tasks": [{"id": "look", "command": "env | sort"}]}

    doc = run_workflow(runtime, spec, tmp_path)

    assert doc["tasks"]["look"]["status"] == "succeeded"
    text = json.loads(_answers(runtime, doc["run_id"], doc["workflow_id"], "look")[1])["text"]
    env = _printed_env(text)
    assert env["MY_OWN_SETTING"] == "kept"
    assert "STRATOFLOW_SECRET_UNRELATED" not in env
    assert "not-for-this-task" not in text


# ---- the executor's own process ---------------------------------------------------------

_SEALED = """
import sys
from stratoflow.aws.credentials import seal_process
from stratoflow.runner.process import run_command
assert seal_process()
result = run_command(
    'cat /proc/$PPID/environ >/dev/null 2>&1 && echo readable || echo sealed',
    env={"PATH": "/usr/bin:/bin"},
    timeout=10,
)
sys.stdout.write(result.output_tail)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_sealed_executors_environment_cannot_be_read_by_its_commands() -> None:
    # As on Lambda and Fargate, the executor and its command share an unprivileged user
    # (root here could read anything through CAP_SYS_PTRACE, which those sandboxes lack).
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and no setpriv to run as another user")
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": "executor-secret"}

    def run(script: str) -> str:
        done = subprocess.run(
            [*as_user, sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    # Control: without the seal, a command can read its parent's environment.
    assert run(_SEALED.replace("assert seal_process()", "")) == "readable"
    assert run(_SEALED) == "sealed"
