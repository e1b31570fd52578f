"""Invariant 12 in the synthesized template: commands run as a task role that can do
nothing by itself; the executors may assume only task roles and read only the stack's
secrets; nothing else may do either."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from stratoflow_infra.stack import TASK_ROLE_TAG

from stratoflow.config import ENV_TASK_ROLE_ARN

from .conftest import Synthesized, synthesize
from .test_permissions import arn_of, role, statements

RUNNERS = ("executor", "fargate-task")
OTHERS = ("dispatcher", "completion", "loader", "api")
COMMAND_GRANTS = {"sts:AssumeRole", "ssm:GetParameter", "secretsmanager:GetSecretValue"}


def _role_arn(name: str) -> dict[str, Any]:
    return {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":iam::",
                {"Ref": "AWS::AccountId"},
                f":role/{name}",
            ],
        ]
    }


def _regional(service: str, resource: str) -> dict[str, Any]:
    return {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                f":{service}:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                f":{resource}",
            ],
        ]
    }


def _grants(synth: Synthesized, name: str, action: str) -> list[tuple[str, str | None]]:
    """(resource, condition) as JSON, of each grant of `action` to role `name`."""
    return sorted(
        (json.dumps(s["resource"], sort_keys=True), json.dumps(s["condition"], sort_keys=True))
        for s in statements(synth, role(synth, name))
        if s["action"] == action
    )


def _default_task_role(synth: Synthesized) -> dict[str, Any]:
    resource: dict[str, Any] = synth.json["Resources"][synth.logical_id(synth.stack.task_role)]
    return resource


def test_the_default_task_role_can_do_nothing_until_granted(synth: Synthesized) -> None:
    properties = _default_task_role(synth)["Properties"]
    assert properties["RoleName"] == "stratoflow-task-default"
    assert "ManagedPolicyArns" not in properties and "Policies" not in properties
    # No policy of the stack is attached to it: in particular no sqs:* on the task queue.
    assert statements(synth, synth.stack.task_role) == []
    assert properties["MaxSessionDuration"] == 3600


def test_the_default_task_role_trusts_the_two_executors_only(synth: Synthesized) -> None:
    (statement,) = _default_task_role(synth)["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Action"] == "sts:AssumeRole" and statement["Effect"] == "Allow"
    trusted = statement["Principal"]["AWS"]
    assert sorted(json.dumps(t, sort_keys=True) for t in trusted) == sorted(
        json.dumps(arn_of(synth, role(synth, name)), sort_keys=True) for name in RUNNERS
    )


@pytest.mark.parametrize("name", RUNNERS)
def test_an_executor_may_assume_only_task_roles(synth: Synthesized, name: str) -> None:
    default = arn_of(synth, synth.stack.task_role)
    tagged = {"StringEquals": {f"aws:ResourceTag/{TASK_ROLE_TAG}": "true"}}
    assert _grants(synth, name, "sts:AssumeRole") == sorted(
        (json.dumps(resource, sort_keys=True), json.dumps(condition, sort_keys=True))
        for resource, condition in (
            (default, None),
            (_role_arn("stratoflow-task-*"), None),
            (_role_arn("*"), tagged),
        )
    )


@pytest.mark.parametrize("name", RUNNERS)
def test_an_executor_reads_secrets_under_the_stacks_prefixes_only(
    synth: Synthesized, name: str
) -> None:
    assert _grants(synth, name, "ssm:GetParameter") == [
        (json.dumps(_regional("ssm", "parameter/stratoflow/*"), sort_keys=True), "null")
    ]
    assert _grants(synth, name, "secretsmanager:GetSecretValue") == [
        (json.dumps(_regional("secretsmanager", "secret:stratoflow/*"), sort_keys=True), "null")
    ]


@pytest.mark.parametrize("name", OTHERS)
def test_no_other_function_may_assume_roles_or_read_secrets(synth: Synthesized, name: str) -> None:
    granted = {s["action"] for s in statements(synth, role(synth, name))}
    assert not granted & COMMAND_GRANTS
    assert not any(a.startswith(("sts:", "ssm:", "secretsmanager:", "kms:")) for a in granted)


def test_both_executors_know_the_default_task_role(synth: Synthesized) -> None:
    expected = _role_arn("stratoflow-task-default")
    executor = synth.json["Resources"][synth.logical_id(synth.stack.functions["executor"].function)]
    assert executor["Properties"]["Environment"]["Variables"][ENV_TASK_ROLE_ARN] == expected
    (task_definition,) = synth.resources("AWS::ECS::TaskDefinition").values()
    (container,) = task_definition["Properties"]["ContainerDefinitions"]
    variables = {v["Name"]: v["Value"] for v in container["Environment"]}
    assert variables[ENV_TASK_ROLE_ARN] == expected
    # The ARN the executors are told is the role the stack makes.
    assert synth.stack.resolve(synth.stack.task_role.role_arn) == arn_of(
        synth, synth.stack.task_role
    )


def test_the_stack_outputs_the_roles_a_task_role_must_trust(synth: Synthesized) -> None:
    outputs = synth.json["Outputs"]
    assert outputs["DefaultTaskRoleArn"]["Value"] == arn_of(synth, synth.stack.task_role)
    assert outputs["ExecutorRoleArn"]["Value"] == arn_of(synth, role(synth, "executor"))
    assert outputs["FargateTaskRoleArn"]["Value"] == arn_of(synth, role(synth, "fargate-task"))


@pytest.fixture(scope="module")
def synth_prefixes(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(
        tmp_path_factory.mktemp("cdk-task-roles"),
        **{
            "stratoflow:taskRolePrefix": "etl-jobs-",
            "stratoflow:secretsParameterPrefix": "/etl/prod/",
            "stratoflow:secretsNamePrefix": "etl/prod/",
        },
    )


def test_the_prefixes_are_stack_settings_and_stay_cdk_nag_clean(
    synth_prefixes: Synthesized,
) -> None:
    # synthesize() runs cdk-nag: the acknowledgments follow the settings.
    assert _default_task_role(synth_prefixes)["Properties"]["RoleName"] == "etl-jobs-default"
    resources = {g[0] for g in _grants(synth_prefixes, "executor", "sts:AssumeRole")}
    assert json.dumps(_role_arn("etl-jobs-*"), sort_keys=True) in resources
    assert _grants(synth_prefixes, "executor", "ssm:GetParameter")[0][0] == json.dumps(
        _regional("ssm", "parameter/etl/prod/*"), sort_keys=True
    )
    assert _grants(synth_prefixes, "fargate-task", "secretsmanager:GetSecretValue")[0][0] == (
        json.dumps(_regional("secretsmanager", "secret:etl/prod/*"), sort_keys=True)
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("taskRolePrefix", ""),
        ("taskRolePrefix", "has space"),
        ("secretsParameterPrefix", "no-leading-slash/"),
        ("secretsParameterPrefix", "/"),
        ("secretsNamePrefix", "*"),
    ],
)
def test_a_prefix_that_would_grant_everything_is_refused(
    tmp_path: Path, key: str, value: str
) -> None:
    with pytest.raises(ValueError, match=f"stratoflow:{key} must match"):
        synthesize(tmp_path, **{f"stratoflow:{key}": value})
