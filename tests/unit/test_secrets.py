"""Secrets and credentials without an engine: masking a command's output, the local secret
source, the STS request an attempt makes, and the session name it is known by."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from stratoflow.aws.credentials import (
    ROLE_CHAINING_MAX_SECONDS,
    AssumedRoleCredentials,
    command_base_environment,
)
from stratoflow.core.records import TaskMessage
from stratoflow.embedded.credentials import LocalCredentials
from stratoflow.embedded.secrets import LocalSecretSource
from stratoflow.ports import CommandIdentity, SecretUnavailable
from stratoflow.runner.output import Masker, masked_values
from stratoflow.runner.process import run_command
from stratoflow.services.execution import MAX_SESSION_NAME, role_session_name

# ---- masking ----------------------------------------------------------------------------


def _masked(values: list[str], chunks: list[bytes]) -> bytes:
    masker = Masker(values)
    return b"".join(masker.feed(c) for c in chunks) + masker.finish()


def test_a_value_is_masked_wherever_the_chunks_cut_it() -> None:
    text = b"before hunter22 middle hunter22 after"
    for cut in range(1, len(text)):
        assert _masked(["hunter22"], [text[:cut], text[cut:]]) == (
            b"before *** middle *** after"
        ), cut


def test_a_value_cut_into_single_bytes_is_still_masked() -> None:
    text = b"x=s3cr3t-value;"
    assert _masked(["s3cr3t-value"], [bytes([b]) for b in text]) == b"x=***;"


def test_masking_in_random_chunks_equals_masking_the_whole() -> None:
    values = ["abcd", "abcdefgh", "hunter22", "line-one\nline-two"]
    words = ["x", "yy", "abc", "abcd", "abcdefgh", "hunter2", "hunter22", "line-two", "\n"]
    rng = random.Random(12)
    for _ in range(500):
        text = "".join(rng.choice(words) for _ in range(rng.randint(0, 40))).encode()
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text), rng.randint(0, 8))))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert _masked(values, chunks) == _masked(values, [text])
        masked = _masked(values, chunks)
        assert b"abcd" not in masked and b"hunter22" not in masked and b"line-two" not in masked


def test_the_longer_of_two_values_starting_together_is_masked_whole() -> None:
    assert _masked(["abcd", "abcdefgh"], [b"[abcdef", b"gh]"]) == b"[***]"


def test_short_values_are_not_masked_and_each_line_of_a_long_one_is() -> None:
    values = masked_values(["abc", "-----BEGIN KEY-----\n  MIIEvQIB  \nxy\n"])
    assert b"abc" not in values
    assert b"MIIEvQIB" in values and b"-----BEGIN KEY-----" in values and b"xy" not in values


def test_the_runner_masks_the_log_file_and_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "attempt.log"
    # Two writes a moment apart: the value reaches the runner in two reads of the pipe.
    command = "printf 'token=s3cr'; sleep 0.2; printf 'et-v4lue done\\n'"

    result = run_command(
        command, env={"PATH": "/usr/bin:/bin"}, timeout=10, log_path=str(log), mask=["s3cret-v4lue"]
    )

    assert result.output_tail == "token=*** done\n"
    assert log.read_text() == "token=*** done\n"
    assert result.output_bytes == len("token=s3cret-v4lue done\n")


# ---- the local secret source -------------------------------------------------------------


def _secrets_file(home: Path, entries: dict[str, Any], mode: int = 0o600) -> Path:
    path = home / "secrets.json"
    path.write_text(json.dumps(entries))
    path.chmod(mode)
    return path


def test_a_local_secret_comes_from_the_environment_before_the_file(tmp_path: Path) -> None:
    _secrets_file(tmp_path, {"ssm:/app/db": "from-file"})
    source = LocalSecretSource(tmp_path, environ={"STRATOFLOW_SECRET_DB": "from-env"})

    assert source.resolve("DB", "ssm:/app/db") == "from-env"
    assert LocalSecretSource(tmp_path, environ={}).resolve("DB", "ssm:/app/db") == "from-file"


def test_a_missing_local_secret_says_both_ways_to_set_it(tmp_path: Path) -> None:
    with pytest.raises(SecretUnavailable) as caught:
        LocalSecretSource(tmp_path, environ={}).resolve("API_KEY", "secretsmanager:app/key")

    message = str(caught.value)
    assert "STRATOFLOW_SECRET_API_KEY" in message
    assert '"secretsmanager:app/key"' in message and str(tmp_path / "secrets.json") in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [("[1, 2]", "JSON object"), ("{not json", "cannot read"), ('{"ssm:/a": 5}', "a string")],
)
def test_a_malformed_secrets_file_is_named_without_its_content(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(content)
    path.chmod(0o600)

    with pytest.raises(SecretUnavailable) as caught:
        LocalSecretSource(tmp_path, environ={}).resolve("A", "ssm:/a")

    assert expected in str(caught.value) and str(path) in str(caught.value)


def test_local_commands_get_the_users_environment_without_stratoflow_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = LocalCredentials(
        environ={"PATH": "/bin", "AWS_PROFILE": "me", "STRATOFLOW_SECRET_DB": "pw"}
    )
    identity = CommandIdentity(role="stratoflow-task-etl", session_name="s", duration_seconds=1)

    with caplog.at_level("WARNING"):
        first = source.environment(identity)
        source.environment(identity)

    assert first == {"PATH": "/bin", "AWS_PROFILE": "me"}
    ignored = [r for r in caplog.records if "ignored locally" in r.getMessage()]
    assert len(ignored) == 1 and "stratoflow-task-etl" in ignored[0].getMessage()


# ---- the AWS credential source ----------------------------------------------------------


class _RecordingSts:
    """Records AssumeRole requests and answers them (what moto cannot show: the
    DurationSeconds asked for)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def client(self, service: str) -> _RecordingSts:
        assert service == "sts"
        return self

    def assume_role(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        return {
            "Credentials": {
                "AccessKeyId": "ASIATASK",
                "SecretAccessKey": "task-secret",
                "SessionToken": "task-token",
            }
        }


@pytest.mark.parametrize(
    ("asked", "duration"),
    [(60, 900), (1200, 1200), (7200, ROLE_CHAINING_MAX_SECONDS)],
)
def test_the_credentials_last_the_attempt_within_what_sts_allows(asked: int, duration: int) -> None:
    sts = _RecordingSts()
    source = AssumedRoleCredentials(
        sts, "arn:aws:iam::123456789012:role/stratoflow-task-default", "eu-west-1", environ={}
    )

    source.environment(CommandIdentity(role=None, session_name="s", duration_seconds=asked))

    assert sts.requests[0]["DurationSeconds"] == duration


def test_a_role_name_is_taken_in_the_default_roles_account_and_partition() -> None:
    source = AssumedRoleCredentials(
        _RecordingSts(), "arn:aws-cn:iam::123456789012:role/stratoflow-task-default", "cn-north-1"
    )
    assert source.role_arn("etl-reader") == "arn:aws-cn:iam::123456789012:role/etl-reader"
    assert source.role_arn(None) == "arn:aws-cn:iam::123456789012:role/stratoflow-task-default"
    other = "arn:aws:iam::210987654321:role/x"
    assert source.role_arn(other) == other


def test_the_environment_is_built_from_scratch() -> None:
    executor = {
        "PATH": "/var/lang/bin:/usr/bin",
        "LD_LIBRARY_PATH": "/var/lang/lib",
        "LC_ALL": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": "ASIAEXECUTOR",
        "AWS_SECRET_ACCESS_KEY": "executor-secret",
        "AWS_SESSION_TOKEN": "executor-token",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "AWS_LAMBDA_FUNCTION_NAME": "stratoflow-executor",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x",
        "ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/x",
        "STRATOFLOW_TABLE": "stratoflow",
        "_X_AMZN_TRACE_ID": "Root=1-x",
    }
    env = AssumedRoleCredentials(
        _RecordingSts(), "arn:aws:iam::123456789012:role/r", "eu-west-1", environ=executor
    ).environment(CommandIdentity(role=None, session_name="s", duration_seconds=900))

    assert env == {
        "PATH": "/var/lang/bin:/usr/bin",
        "LD_LIBRARY_PATH": "/var/lang/lib",
        "LC_ALL": "C.UTF-8",
        "HOME": env["HOME"],
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "ASIATASK",
        "AWS_SECRET_ACCESS_KEY": "task-secret",
        "AWS_SESSION_TOKEN": "task-token",
    }
    assert command_base_environment({"HOME": "/home/x"}, "r")["HOME"] == "/home/x"


# ---- the session name -------------------------------------------------------------------


def _message(run_id: str, task_id: str, kind: str = "task") -> TaskMessage:
    return TaskMessage(
        run_id=run_id,
        workflow_id="wf",
        version=1,
        task_id=task_id,
        attempt=1,
        logical_date="2024-01-01T00:00:00Z",
        params={},
        kind=kind,
    )


def test_the_session_name_names_run_task_and_attempt_in_stss_alphabet() -> None:
    name = role_session_name(_message("etl@2024-01-01T02:00:00Z", "load"), 3)
    assert name == "etl@2024-01-01T02-00-00Z.load.a3"
    assert role_session_name(_message("r", "t", kind="compensate"), 1) == "r.t.c1"


def test_a_long_session_name_keeps_its_end_and_stays_unique() -> None:
    long_task = "t" * 120
    one = role_session_name(_message("run-a", long_task), 2)
    two = role_session_name(_message("run-b", long_task), 2)
    assert len(one) == MAX_SESSION_NAME and one.endswith(".a2") and one != two
