"""The REST API: every method signed (SigV4) and proxied to the api function, requests
validated, the stage throttled and logged; the api function's environment and grants."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk import App
from stratoflow_infra.functions import LAMBDA_PROVIDED_ENV_VARS
from stratoflow_infra.settings import StackSettings

from stratoflow.config import API_ROUTES, API_TIMEOUT_SECONDS, HANDLER_ENV_VARS, OUTPUT_API_URL

from .conftest import Synthesized
from .test_permissions import (
    SEND,
    TABLE_READ,
    actions_on,
    arn_of,
    s3_grants,
    s3_objects,
    statements,
)

ROUTES = set(API_ROUTES)
START_RUN = ("POST", "/workflows/{workflow_id}/runs")
TASK_LOGS = {"logs:FilterLogEvents", "logs:GetLogEvents"}


def resource_paths(synth: Synthesized) -> dict[str, str]:
    """Logical id of each API Gateway resource → its path, e.g. `/runs/{run_id}`."""
    resources = synth.resources("AWS::ApiGateway::Resource")

    def path(logical_id: str) -> str:
        properties = resources[logical_id]["Properties"]
        parent = properties["ParentId"]
        prefix = path(parent["Ref"]) if "Ref" in parent else ""  # else: the root resource
        return f"{prefix}/{properties['PathPart']}"

    return {logical_id: path(logical_id) for logical_id in resources}


def methods(synth: Synthesized) -> dict[tuple[str, str], dict[str, Any]]:
    """(HTTP method, path) → the method's properties."""
    paths = resource_paths(synth)
    return {
        (m["Properties"]["HttpMethod"], paths[m["Properties"]["ResourceId"]["Ref"]]): m[
            "Properties"
        ]
        for m in synth.resources("AWS::ApiGateway::Method").values()
    }


def stage(synth: Synthesized) -> dict[str, Any]:
    (resource,) = synth.resources("AWS::ApiGateway::Stage").values()
    return resource["Properties"]


def stage_settings(synth: Synthesized) -> dict[str, Any]:
    (settings,) = stage(synth)["MethodSettings"]
    assert (settings["HttpMethod"], settings["ResourcePath"]) == ("*", "/*")
    return settings


def api_function(synth: Synthesized) -> dict[str, Any]:
    function = synth.stack.functions["api"].function
    return synth.json["Resources"][synth.logical_id(function)]["Properties"]


# --- routes ------------------------------------------------------------------------------


def test_the_api_has_exactly_the_routes_of_the_issue(synth: Synthesized) -> None:
    assert set(methods(synth)) == ROUTES


def test_every_method_requires_iam_authorization(synth: Synthesized) -> None:
    for route, method in methods(synth).items():
        assert method["AuthorizationType"] == "AWS_IAM", route


def test_every_method_is_a_lambda_proxy_to_the_api_function(synth: Synthesized) -> None:
    api = synth.logical_id(synth.stack.functions["api"].function)
    for route, method in methods(synth).items():
        integration = method["Integration"]
        assert integration["Type"] == "AWS_PROXY", route
        assert integration["IntegrationHttpMethod"] == "POST", route
        assert {"Fn::GetAtt": [api, "Arn"]} in integration["Uri"]["Fn::Join"][1], route


def test_api_gateway_may_invoke_the_api_function_for_each_method_only(
    synth: Synthesized,
) -> None:
    api = arn_of(synth, synth.stack.functions["api"].function)
    permissions = [
        p["Properties"]
        for p in synth.resources("AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "apigateway.amazonaws.com"
    ]
    assert len(permissions) == len(ROUTES)
    stage_ref = {"Ref": synth.logical_id(synth.stack.api.stage)}
    for permission in permissions:
        assert permission["FunctionName"] == api
        assert stage_ref in permission["SourceArn"]["Fn::Join"][1]  # this stage, no test-invoke


# --- validation --------------------------------------------------------------------------


def test_every_path_parameter_is_required(synth: Synthesized) -> None:
    for (verb, path), method in methods(synth).items():
        required = {
            name for name, value in method.get("RequestParameters", {}).items() if value is True
        }
        for name in re.findall(r"\{(\w+)\}", path):
            assert f"method.request.path.{name}" in required, (verb, path)


def test_an_upload_requires_the_workflow_file_name(synth: Synthesized) -> None:
    upload = methods(synth)[("POST", "/workflows")]
    assert upload["RequestParameters"] == {"method.request.querystring.name": True}


def test_every_method_is_checked_by_a_validator_of_parameters_and_body(
    synth: Synthesized,
) -> None:
    ((validator_id, validator),) = synth.resources("AWS::ApiGateway::RequestValidator").items()
    assert validator["Properties"]["ValidateRequestParameters"] is True
    assert validator["Properties"]["ValidateRequestBody"] is True
    for route, method in methods(synth).items():
        assert method["RequestValidatorId"] == {"Ref": validator_id}, route


def test_starting_a_run_takes_an_object_with_optional_string_params(synth: Synthesized) -> None:
    ((model_id, model),) = synth.resources("AWS::ApiGateway::Model").items()
    assert methods(synth)[START_RUN]["RequestModels"] == {"application/json": {"Ref": model_id}}
    schema = model["Properties"]["Schema"]
    assert schema["type"] == "object"
    assert schema["properties"]["params"] == {
        "type": "object",
        "additionalProperties": {"type": "string"},
    }
    assert "required" not in schema
    for route, method in methods(synth).items():
        if route != START_RUN:
            assert "RequestModels" not in method, route


# --- stage -------------------------------------------------------------------------------


def test_stage_is_throttled_with_default_limits(synth: Synthesized) -> None:
    settings = stage_settings(synth)
    assert settings["ThrottlingRateLimit"] == 50
    assert settings["ThrottlingBurstLimit"] == 100


def test_throttling_limits_are_context_settings(synth_custom: Synthesized) -> None:
    settings = stage_settings(synth_custom)
    assert settings["ThrottlingRateLimit"] == 20
    assert settings["ThrottlingBurstLimit"] == 40


@pytest.mark.parametrize("key", ["apiThrottleRateLimit", "apiThrottleBurstLimit"])
@pytest.mark.parametrize("value", ["0", "fast", True])
def test_a_throttling_limit_must_be_a_positive_integer(key: str, value: Any) -> None:
    app = App(context={f"stratoflow:{key}": value})
    with pytest.raises(ValueError, match=f"stratoflow:{key} must be an integer"):
        StackSettings.from_context(app.node)


def test_stage_logs_errors_metrics_and_traces_but_no_bodies(synth: Synthesized) -> None:
    settings = stage_settings(synth)
    assert settings["LoggingLevel"] == "ERROR"
    assert settings["MetricsEnabled"] is True
    assert settings["DataTraceEnabled"] is False
    assert stage(synth)["TracingEnabled"] is True


def test_stage_writes_json_access_logs_to_a_log_group_of_its_own(synth: Synthesized) -> None:
    access = stage(synth)["AccessLogSetting"]
    access_logs = synth.stack.api.access_logs
    # The group's ARN without the ":*" that its Arn attribute ends with: API Gateway stores
    # it so, and drift detection then sees no change (flag logGroupDestinationArnWithoutWildcard).
    assert access["DestinationArn"] == {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":logs:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                ":log-group:",
                {"Ref": synth.logical_id(access_logs)},
            ],
        ]
    }
    fields = json.loads(access["Format"])
    assert {"requestId", "status", "userArn", "error"} <= set(fields)
    synth.template.has_resource_properties(
        "AWS::Logs::LogGroup",
        {"LogGroupName": "/aws/apigateway/stratoflow/access", "RetentionInDays": 30},
    )


def test_execution_logs_expire_like_every_log_group(synth: Synthesized) -> None:
    group = synth.json["Resources"][synth.logical_id(synth.stack.api.execution_logs)]
    name = group["Properties"]["LogGroupName"]["Fn::Join"][1]
    assert name[0] == "API-Gateway-Execution-Logs_"
    assert name[1] == {"Ref": synth.logical_id(synth.stack.api.api)}
    assert name[2] == f"/{stage(synth)['StageName']}"
    assert group["Properties"]["RetentionInDays"] == 30


def test_api_url_is_an_output_under_the_key_the_cli_reads(synth: Synthesized) -> None:
    url = synth.json["Outputs"][OUTPUT_API_URL]["Value"]["Fn::Join"][1]
    assert url[0] == "https://"
    assert {"Ref": synth.logical_id(synth.stack.api.api)} in url
    assert {"Ref": synth.logical_id(synth.stack.api.stage)} in url


# --- the api function --------------------------------------------------------------------


def test_api_function_ends_before_api_gateway_gives_up(synth: Synthesized) -> None:
    function = api_function(synth)
    assert function["Timeout"] == API_TIMEOUT_SECONDS
    assert function["MemorySize"] == 512
    assert function["Handler"] == "functions/api/handler.handler"


def test_api_function_has_exactly_the_environment_of_its_contract(synth: Synthesized) -> None:
    variables = set(api_function(synth)["Environment"]["Variables"])
    powertools = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "LOG_LEVEL"}
    assert variables - powertools == set(HANDLER_ENV_VARS["api"]) - LAMBDA_PROVIDED_ENV_VARS


def test_api_starts_runs_and_enqueues_tasks_and_completions(synth: Synthesized) -> None:
    api = synth.stack.functions["api"].role
    table = actions_on(synth, api, arn_of(synth, synth.stack.state.table))
    assert table >= TABLE_READ | {"dynamodb:PutItem", "dynamodb:UpdateItem"}
    assert actions_on(synth, api, arn_of(synth, synth.stack.tasks.queue)) == SEND
    assert actions_on(synth, api, arn_of(synth, synth.stack.completions.queue)) == SEND
    task_definition = {"Ref": synth.logical_id(synth.stack.fargate.task_definition)}
    assert actions_on(synth, api, task_definition) == {"ecs:RunTask"}


def test_api_reads_definitions_and_reads_and_writes_uploads(synth: Synthesized) -> None:
    s3 = s3_grants(synth, synth.stack.functions["api"].role)
    workflows, definitions = s3_objects("workflows/"), s3_objects("definitions/")
    assert s3 == {
        ("s3:GetObject", json.dumps(definitions)),
        ("s3:GetObjectVersion", json.dumps(definitions)),
        ("s3:GetObject", json.dumps(workflows)),
        ("s3:GetObjectVersion", json.dumps(workflows)),
        ("s3:PutObject", json.dumps(workflows)),
    }


@pytest.mark.parametrize("name", ["api", "completion"])
def test_api_and_completion_may_stop_only_the_tasks_of_the_runner_cluster(
    synth: Synthesized, name: str
) -> None:
    # The API cancels a run; the completion handler does the per-task work it hands off.
    cluster = synth.logical_id(synth.stack.fargate.cluster)
    (stop,) = [
        s
        for s in statements(synth, synth.stack.functions[name].role)
        if s["action"] == "ecs:StopTask"
    ]
    assert stop["condition"] == {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": [cluster, "Arn"]}}}
    arn = stop["resource"]["Fn::Join"][1]
    assert arn[-3:] == [":task/", {"Ref": cluster}, "/*"]


def test_only_the_api_and_completion_may_stop_tasks(synth: Synthesized) -> None:
    for name, function in synth.stack.functions.items():
        if name not in ("api", "completion"):
            assert "ecs:StopTask" not in {s["action"] for s in statements(synth, function.role)}


def test_api_reads_task_logs_from_the_executor_and_fargate_log_groups_only(
    synth: Synthesized,
) -> None:
    api = synth.stack.functions["api"].role
    for group in (synth.stack.functions["executor"].log_group, synth.stack.fargate.log_group):
        assert actions_on(synth, api, arn_of(synth, group)) == TASK_LOGS
    readable = {
        json.dumps(s["resource"]) for s in statements(synth, api) if s["action"] in TASK_LOGS
    }
    assert len(readable) == 2
