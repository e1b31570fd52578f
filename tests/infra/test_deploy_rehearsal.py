"""Deploy rehearsal: `cdklocal bootstrap` and `cdklocal deploy` into an embedded moto server.

moto's CloudFormation creates the tables, queues, buckets, functions, event source
mappings, rule, log groups, dashboard, VPC and ECS resources, and skips what it does not
implement (alarms, queue and bucket policies, SNS subscriptions, stack outputs) as well as
some properties (TTL, point-in-time recovery, bucket versioning and notifications, Lambda
architecture and tracing): docs/deploy.md lists them. So this checks that the template
deploys and that what moto records is right; the synth tests check the rest.

The rehearsal deploys with `stratoflow:skipBundling` (moto cannot run the functions, so
their dependencies would only cost time and network) and a registry image for the Fargate
runner (building the Dockerfile needs a Docker engine).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import boto3
import pytest
from stratoflow_infra.functions import LAMBDA_PROVIDED_ENV_VARS

from stratoflow.config import (
    API_ROUTES,
    EXECUTOR_TIMEOUT_SECONDS,
    HANDLER_ENV_VARS,
    MAX_RECEIVE_COUNT,
    TABLE_KEY_SCHEMA,
    Resources,
)

from .conftest import REPO_ROOT

CDKLOCAL = REPO_ROOT / "node_modules" / ".bin" / "cdklocal"
ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
STACK = "Stratoflow"
NAMES = Resources.named(account=ACCOUNT)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("node") is None or not CDKLOCAL.exists(),
        reason="needs Node.js and aws-cdk-local: run `npm ci`",
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server of our own on a free port (parallel runs do not share one)."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("moto server did not start")
                time.sleep(0.1)
        # cdklocal needs the host spelled `localhost`.
        yield f"http://localhost:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def _cdklocal(args: list[str], endpoint: str) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_S3_FORCE_PATH_STYLE": "1",
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "CDK_DISABLE_CLI_TELEMETRY": "true",
            "CDK_DISABLE_VERSION_CHECK": "1",
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        }
    )
    result = subprocess.run(
        ["npx", "--no-install", "cdklocal", *args, "--no-notices"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


@pytest.fixture(scope="module")
def deployed(endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Bootstraps and deploys the stack; returns boto3 clients on the emulator."""
    outdir = tmp_path_factory.mktemp("cdk-rehearsal")
    # An explicit environment: bootstrap then needs no synth of the app.
    _cdklocal(["bootstrap", f"aws://{ACCOUNT}/{REGION}", "-o", str(outdir / "bootstrap")], endpoint)
    _cdklocal(
        [
            "deploy",
            STACK,
            "--require-approval",
            "never",
            "-o",
            str(outdir / "app"),
            "-c",
            "stratoflow:skipBundling=true",
            "-c",
            "stratoflow:runnerImage=public.ecr.aws/docker/library/python:3.14-slim",
            "-c",
            "stratoflow:removalPolicy=destroy",
        ],
        endpoint,
    )
    session = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION
    )
    return {
        name: session.client(name, endpoint_url=endpoint)
        for name in (
            "apigateway",
            "cloudformation",
            "dynamodb",
            "sqs",
            "s3",
            "lambda",
            "events",
            "ecs",
            "logs",
            "cloudwatch",
        )
    }


def test_stack_is_deployed(deployed: dict) -> None:
    (stack,) = deployed["cloudformation"].describe_stacks(StackName=STACK)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"


def test_table_exists_with_its_key_schema(deployed: dict) -> None:
    table = deployed["dynamodb"].describe_table(TableName=NAMES.table)["Table"]
    assert table["KeySchema"] == TABLE_KEY_SCHEMA
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_queues_exist_with_visibility_redrive_and_encryption(deployed: dict) -> None:
    sqs = deployed["sqs"]
    url = sqs.get_queue_url(QueueName=NAMES.task_queue.name)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert int(attributes["VisibilityTimeout"]) >= 6 * EXECUTOR_TIMEOUT_SECONDS
    assert attributes["SqsManagedSseEnabled"] == "true"
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["maxReceiveCount"] == MAX_RECEIVE_COUNT
    assert redrive["deadLetterTargetArn"].endswith(f":{NAMES.task_queue.dlq_name}")
    for name in (
        NAMES.task_queue.dlq_name,
        NAMES.completion_queue.name,
        NAMES.completion_queue.dlq_name,
    ):
        sqs.get_queue_url(QueueName=name)


def test_workflows_bucket_exists_encrypted(deployed: dict) -> None:
    encryption = deployed["s3"].get_bucket_encryption(Bucket=NAMES.bucket)
    (rule,) = encryption["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_functions_exist_with_handler_runtime_and_environment(deployed: dict) -> None:
    functions = {f["FunctionName"]: f for f in deployed["lambda"].list_functions()["Functions"]}
    for name, needed in HANDLER_ENV_VARS.items():
        function = functions[f"stratoflow-{name}"]
        assert function["Handler"] == f"functions/{name}/handler.handler"
        assert function["Runtime"] == "python3.14"
        variables = function["Environment"]["Variables"]
        assert set(needed) - LAMBDA_PROVIDED_ENV_VARS <= set(variables)
    executor = functions["stratoflow-executor"]
    assert executor["Timeout"] == EXECUTOR_TIMEOUT_SECONDS
    assert executor["Environment"]["Variables"]["STRATOFLOW_TABLE"] == NAMES.table


def test_queues_are_wired_to_their_consumers(deployed: dict) -> None:
    mappings = deployed["lambda"].list_event_source_mappings()["EventSourceMappings"]
    wiring = {
        (
            m["EventSourceArn"].rsplit(":", 1)[1],
            m["FunctionArn"].rsplit(":", 1)[1],
            m["BatchSize"],
            tuple(m.get("FunctionResponseTypes", ())),
        )
        for m in mappings
    }
    assert wiring == {
        (NAMES.task_queue.name, "stratoflow-executor", 1, ("ReportBatchItemFailures",)),
        (NAMES.completion_queue.name, "stratoflow-completion", 10, ("ReportBatchItemFailures",)),
    }


def test_dispatcher_rule_ticks_every_minute(deployed: dict) -> None:
    rules = deployed["events"].list_rules()["Rules"]
    assert ("stratoflow-dispatcher-tick", "rate(1 minute)") in {
        (r["Name"], r.get("ScheduleExpression")) for r in rules
    }


def test_fargate_cluster_and_task_definition_exist(deployed: dict) -> None:
    ecs = deployed["ecs"]
    assert len(ecs.list_clusters()["clusterArns"]) == 1
    (arn,) = ecs.list_task_definitions()["taskDefinitionArns"]
    definition = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    (container,) = definition["containerDefinitions"]
    assert container["name"] == "runner"
    assert container["memory"] > 0  # moto's RunTask requires it


def test_log_groups_have_retention(deployed: dict) -> None:
    groups = deployed["logs"].describe_log_groups()["logGroups"]
    lambda_groups = {
        g["logGroupName"]: g.get("retentionInDays")
        for g in groups
        if g["logGroupName"].startswith("/aws/lambda/stratoflow-")
    }
    assert len(lambda_groups) == 5
    assert set(lambda_groups.values()) == {30}


def test_dashboard_exists(deployed: dict) -> None:
    dashboards = deployed["cloudwatch"].list_dashboards()["DashboardEntries"]
    names = [d["DashboardName"] for d in dashboards]
    assert "stratoflow" in names


def test_rest_api_exists_with_its_routes_signed(deployed: dict) -> None:
    apigateway = deployed["apigateway"]
    (api,) = [a for a in apigateway.get_rest_apis()["items"] if a["name"] == "stratoflow"]
    resources = apigateway.get_resources(restApiId=api["id"], embed=["methods"])["items"]
    routes = {
        (verb, resource["path"]): method["authorizationType"]
        for resource in resources
        for verb, method in resource.get("resourceMethods", {}).items()
    }
    assert len(routes) == len(API_ROUTES)
    assert ("POST", "/workflows/{workflow_id}/runs") in routes
    assert set(routes.values()) == {"AWS_IAM"}


def test_run_events_bus_exists(deployed: dict) -> None:
    assert deployed["events"].describe_event_bus(Name="stratoflow")["Name"] == "stratoflow"
