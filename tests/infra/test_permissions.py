"""Least privilege: each role's actions and resources, and invariant 10 for executors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from stratoflow_infra.stack import EXECUTOR_TABLE_WRITE_ACTIONS

from .conftest import Synthesized

TABLE_READ = {
    "dynamodb:BatchGetItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:Query",
    "dynamodb:Scan",
}
TABLE_WRITE_BEYOND_EXECUTOR = {"dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}
XRAY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}
SEND = {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
CONSUME = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
}


def statements(synth: Synthesized, role: Any) -> list[dict[str, Any]]:
    """Every Allow statement of the policies attached to `role`, one action per entry."""
    role_id = synth.logical_id(role)
    found = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} not in policy["Properties"]["Roles"]:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            actions = statement["Action"]
            resources = statement["Resource"]
            for action in [actions] if isinstance(actions, str) else actions:
                for resource in resources if isinstance(resources, list) else [resources]:
                    found.append(
                        {
                            "action": action,
                            "resource": resource,
                            "condition": statement.get("Condition"),
                        }
                    )
    return found


def actions_on(synth: Synthesized, role: Any, resource: Any) -> set[str]:
    return {s["action"] for s in statements(synth, role) if s["resource"] == resource}


def all_actions(synth: Synthesized, role: Any) -> set[str]:
    return {s["action"] for s in statements(synth, role)}


def arn_of(synth: Synthesized, construct: Any) -> dict[str, Any]:
    return {"Fn::GetAtt": [synth.logical_id(construct), "Arn"]}


def s3_objects(prefix: str, bucket_prefix: str = "stratoflow") -> dict[str, Any]:
    return {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                f":s3:::{bucket_prefix}-workflows-",
                {"Ref": "AWS::AccountId"},
                f"/{prefix}*",
            ],
        ]
    }


def role(synth: Synthesized, name: str) -> Any:
    if name == "fargate-task":
        return synth.stack.fargate.task_definition.task_role
    return synth.stack.functions[name].role


def s3_grants(synth: Synthesized, role: Any) -> set[tuple[str, str]]:
    """(action, resource as JSON) of every S3 action granted to `role`."""
    return {
        (s["action"], json.dumps(s["resource"]))
        for s in statements(synth, role)
        if s["action"].startswith("s3:")
    }


# --- everywhere --------------------------------------------------------------------------


def test_no_policy_in_the_stack_has_a_wildcard_action(synth: Synthesized) -> None:
    for policy in synth.resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"]
            for action in [actions] if isinstance(actions, str) else actions:
                assert "*" not in action, f"wildcard action {action}"


def test_resource_star_is_only_for_actions_without_resource_level_permissions(
    synth: Synthesized,
) -> None:
    allowed = XRAY | {"ecr:GetAuthorizationToken"}
    for policy in synth.resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Resource"] == "*":
                actions = statement["Action"]
                assert set([actions] if isinstance(actions, str) else actions) <= allowed


def test_function_roles_carry_no_managed_policy(synth: Synthesized) -> None:
    for function in synth.stack.functions.values():
        properties = synth.json["Resources"][synth.logical_id(function.role)]["Properties"]
        assert "ManagedPolicyArns" not in properties
        assert properties["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
            "Service": "lambda.amazonaws.com"
        }


@pytest.mark.parametrize("name", ["dispatcher", "executor", "completion", "loader", "api"])
def test_each_function_has_its_own_role_writing_its_own_log_group_and_traces(
    synth: Synthesized, name: str
) -> None:
    function = synth.stack.functions[name]
    function_resource = synth.json["Resources"][synth.logical_id(function.function)]
    assert function_resource["Properties"]["Role"] == arn_of(synth, function.role)
    assert actions_on(synth, function.role, arn_of(synth, function.log_group)) == LOGS
    assert actions_on(synth, function.role, "*") == XRAY


# --- executor: reports, never decides (invariant 10) -------------------------------------


@pytest.mark.parametrize("name", ["executor", "fargate-task"])
def test_executor_reads_the_table_and_may_only_claim_items(synth: Synthesized, name: str) -> None:
    table = arn_of(synth, synth.stack.state.table)
    granted = actions_on(synth, role(synth, name), table)
    assert granted == TABLE_READ | set(EXECUTOR_TABLE_WRITE_ACTIONS)
    assert not granted & TABLE_WRITE_BEYOND_EXECUTOR


@pytest.mark.parametrize("name", ["executor", "fargate-task"])
def test_executor_reports_to_the_completion_queue_and_cannot_enqueue_tasks(
    synth: Synthesized, name: str
) -> None:
    grantee = role(synth, name)
    assert actions_on(synth, grantee, arn_of(synth, synth.stack.completions.queue)) == SEND
    task_queue = actions_on(synth, grantee, arn_of(synth, synth.stack.tasks.queue))
    assert "sqs:SendMessage" not in task_queue


@pytest.mark.parametrize("name", ["executor", "fargate-task"])
def test_executor_reads_definitions_only(synth: Synthesized, name: str) -> None:
    s3 = s3_grants(synth, role(synth, name))
    assert s3 == {
        (a, json.dumps(s3_objects("definitions/"))) for a in ("s3:GetObject", "s3:GetObjectVersion")
    }


@pytest.mark.parametrize("name", ["executor", "fargate-task"])
def test_executor_cannot_start_tasks_or_pass_roles(synth: Synthesized, name: str) -> None:
    actions = all_actions(synth, role(synth, name))
    assert not {"ecs:RunTask", "ecs:StopTask", "iam:PassRole", "lambda:InvokeFunction"} & actions
    assert not {"events:PutEvents"} & actions  # the completion handler announces runs


def test_executor_consumes_the_task_queue(synth: Synthesized) -> None:
    executor = role(synth, "executor")
    assert actions_on(synth, executor, arn_of(synth, synth.stack.tasks.queue)) == CONSUME


# --- the deciders ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dispatcher", "completion", "api"])
def test_deciders_write_run_state_and_enqueue_tasks(synth: Synthesized, name: str) -> None:
    grantee = role(synth, name)
    table = actions_on(synth, grantee, arn_of(synth, synth.stack.state.table))
    assert table >= TABLE_WRITE_BEYOND_EXECUTOR
    assert "sqs:SendMessage" in actions_on(synth, grantee, arn_of(synth, synth.stack.tasks.queue))


@pytest.mark.parametrize("name", ["dispatcher", "completion", "api"])
def test_deciders_may_run_the_fargate_task_and_pass_only_its_roles_to_ecs(
    synth: Synthesized, name: str
) -> None:
    task_definition = synth.stack.fargate.task_definition
    grantee = role(synth, name)
    assert actions_on(synth, grantee, {"Ref": synth.logical_id(task_definition)}) == {"ecs:RunTask"}
    passes = [s for s in statements(synth, grantee) if s["action"] == "iam:PassRole"]
    assert {json.dumps(s["resource"]) for s in passes} == {
        json.dumps(arn_of(synth, task_definition.task_role)),
        json.dumps(arn_of(synth, task_definition.obtain_execution_role())),
    }
    for statement in passes:
        assert statement["condition"] == {
            "StringLike": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
        }


def test_dispatcher_may_report_dead_attempts_to_the_completion_queue_only_by_sending(
    synth: Synthesized,
) -> None:
    dispatcher = role(synth, "dispatcher")
    assert actions_on(synth, dispatcher, arn_of(synth, synth.stack.completions.queue)) == SEND


def test_completion_consumes_the_completion_queue(synth: Synthesized) -> None:
    completion = role(synth, "completion")
    assert actions_on(synth, completion, arn_of(synth, synth.stack.completions.queue)) >= CONSUME


# --- loader ------------------------------------------------------------------------------


def test_loader_reads_uploads_and_writes_definitions_and_reports_only(synth: Synthesized) -> None:
    s3 = s3_grants(synth, role(synth, "loader"))
    workflows, definitions = s3_objects("workflows/"), s3_objects("definitions/")
    assert s3 == {
        ("s3:GetObject", json.dumps(workflows)),
        ("s3:GetObjectVersion", json.dumps(workflows)),
        ("s3:PutObject", json.dumps(workflows)),
        ("s3:PutObject", json.dumps(definitions)),
    }


def test_loader_touches_no_queue_and_starts_nothing(synth: Synthesized) -> None:
    actions = all_actions(synth, role(synth, "loader"))
    assert not any(a.startswith(("sqs:", "ecs:", "iam:", "events:")) for a in actions)


def test_grants_follow_the_prefix(synth_custom: Synthesized) -> None:
    executor = synth_custom.stack.functions["executor"].role
    resources = {json.dumps(s["resource"]) for s in statements(synth_custom, executor)}
    assert json.dumps(s3_objects("definitions/", bucket_prefix="acme-flow")) in resources
