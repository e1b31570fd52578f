"""Every resource of the stack with the properties the issue and docs/architecture.md ask for."""

from __future__ import annotations

import json

from aws_cdk.assertions import Match
from stratoflow_infra.contract import WORKFLOW_FILE_SUFFIXES

from stratoflow.config import (
    API_TIMEOUT_SECONDS,
    COMPLETION_TIMEOUT_SECONDS,
    DISPATCHER_TIMEOUT_SECONDS,
    EXECUTOR_TIMEOUT_SECONDS,
    LOADER_TIMEOUT_SECONDS,
    MAX_RECEIVE_COUNT,
    OUTPUT_API_URL,
    OUTPUT_BUCKET,
    OUTPUT_EVENT_BUS,
    TABLE_ATTRIBUTES,
    TABLE_KEY_SCHEMA,
    TABLE_TTL_ATTRIBUTE,
    WORKFLOWS_PREFIX,
    Resources,
)

from .conftest import Synthesized

NAMES = Resources.named()
FUNCTION_TIMEOUTS = {
    "dispatcher": DISPATCHER_TIMEOUT_SECONDS,
    "executor": EXECUTOR_TIMEOUT_SECONDS,
    "completion": COMPLETION_TIMEOUT_SECONDS,
    "loader": LOADER_TIMEOUT_SECONDS,
    "api": API_TIMEOUT_SECONDS,
}


# --- state -------------------------------------------------------------------------------


def test_table_uses_the_key_schema_of_stratoflow_config(synth: Synthesized) -> None:
    synth.template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "TableName": NAMES.table,
            "KeySchema": TABLE_KEY_SCHEMA,
            "AttributeDefinitions": TABLE_ATTRIBUTES,
        },
    )


def test_table_is_on_demand_encrypted_recoverable_and_expires_finished_runs(
    synth: Synthesized,
) -> None:
    synth.template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "BillingMode": "PAY_PER_REQUEST",
            "SSESpecification": {"SSEEnabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "TimeToLiveSpecification": {"AttributeName": TABLE_TTL_ATTRIBUTE, "Enabled": True},
        },
    )


def test_stateful_resources_are_retained_by_default(synth: Synthesized) -> None:
    synth.template.has_resource(
        "AWS::DynamoDB::Table",
        {"DeletionPolicy": "Retain", "Properties": {"DeletionProtectionEnabled": True}},
    )
    for bucket in synth.resources("AWS::S3::Bucket").values():
        assert bucket["DeletionPolicy"] == "Retain"


def test_removal_policy_destroy_is_a_context_setting(synth_custom: Synthesized) -> None:
    synth_custom.template.has_resource("AWS::DynamoDB::Table", {"DeletionPolicy": "Delete"})
    for bucket in synth_custom.resources("AWS::S3::Bucket").values():
        assert bucket["DeletionPolicy"] == "Delete"


def test_prefix_names_every_resource_like_the_local_runtime(synth_custom: Synthesized) -> None:
    names = Resources.named("acme-flow")
    synth_custom.template.has_resource_properties(
        "AWS::DynamoDB::Table", {"TableName": names.table}
    )
    for queue in (names.task_queue, names.completion_queue):
        for name in (queue.name, queue.dlq_name):
            synth_custom.template.has_resource_properties("AWS::SQS::Queue", {"QueueName": name})
    synth_custom.template.has_resource_properties(
        "AWS::Lambda::Function", {"FunctionName": "acme-flow-executor"}
    )


# --- queues ------------------------------------------------------------------------------


def test_each_work_queue_redrives_to_its_dead_letter_queue(synth: Synthesized) -> None:
    for queue, stack_queue in (
        (NAMES.task_queue, synth.stack.tasks),
        (NAMES.completion_queue, synth.stack.completions),
    ):
        synth.template.has_resource_properties(
            "AWS::SQS::Queue",
            {
                "QueueName": queue.name,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {
                        "Fn::GetAtt": [synth.logical_id(stack_queue.dead_letter_queue), "Arn"]
                    },
                    "maxReceiveCount": MAX_RECEIVE_COUNT,
                },
            },
        )


def test_visibility_timeout_is_at_least_six_times_the_consumers_timeout(
    synth: Synthesized,
) -> None:
    queues = {
        q["Properties"]["QueueName"]: q["Properties"]
        for q in synth.resources("AWS::SQS::Queue").values()
    }
    assert queues[NAMES.task_queue.name]["VisibilityTimeout"] >= 6 * EXECUTOR_TIMEOUT_SECONDS
    assert (
        queues[NAMES.completion_queue.name]["VisibilityTimeout"] >= 6 * COMPLETION_TIMEOUT_SECONDS
    )


def test_every_queue_is_encrypted_and_refuses_plain_http(synth: Synthesized) -> None:
    queues = synth.resources("AWS::SQS::Queue")
    assert len(queues) == 4
    for queue in queues.values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
    policies = synth.resources("AWS::SQS::QueuePolicy").values()
    protected = {
        queue_ref["Ref"]
        for policy in policies
        if _denies_insecure_transport(policy["Properties"]["PolicyDocument"])
        for queue_ref in policy["Properties"]["Queues"]
    }
    assert protected == set(queues)


def _denies_insecure_transport(document: dict) -> bool:
    return any(
        statement["Effect"] == "Deny"
        and statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        for statement in document["Statement"]
    )


# --- bucket ------------------------------------------------------------------------------


def test_workflows_bucket_is_private_encrypted_versioned_and_logged(synth: Synthesized) -> None:
    synth.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": {"Fn::Join": ["", ["stratoflow-workflows-", {"Ref": "AWS::AccountId"}]]},
            "VersioningConfiguration": {"Status": "Enabled"},
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "LoggingConfiguration": {
                "DestinationBucketName": {
                    "Ref": synth.logical_id(synth.stack.workflows.access_logs)
                }
            },
        },
    )


def test_both_buckets_refuse_plain_http(synth: Synthesized) -> None:
    policies = synth.resources("AWS::S3::BucketPolicy").values()
    protected = {
        policy["Properties"]["Bucket"]["Ref"]
        for policy in policies
        if _denies_insecure_transport(policy["Properties"]["PolicyDocument"])
    }
    assert protected == set(synth.resources("AWS::S3::Bucket"))


def test_workflow_files_created_or_removed_under_the_prefix_notify_the_loader(
    synth: Synthesized,
) -> None:
    bucket_id = synth.logical_id(synth.stack.workflows.bucket)
    bucket = synth.json["Resources"][bucket_id]
    loader_arn = {"Fn::GetAtt": [synth.logical_id(synth.stack.functions["loader"].function), "Arn"]}
    configurations = bucket["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    seen = set()
    for configuration in configurations:
        assert configuration["Function"] == loader_arn
        rules = {rule["Name"]: rule["Value"] for rule in configuration["Filter"]["S3Key"]["Rules"]}
        assert rules["prefix"] == WORKFLOWS_PREFIX
        seen.add((configuration["Event"], rules["suffix"]))
    assert seen == {
        (event, suffix)
        for event in ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
        for suffix in WORKFLOW_FILE_SUFFIXES
    }
    # S3 validates the destination when the configuration is written: permission first.
    permission_id = next(iter(bucket["DependsOn"]))
    permission = synth.json["Resources"][permission_id]["Properties"]
    assert permission["Principal"] == "s3.amazonaws.com"
    assert permission["FunctionName"] == loader_arn


def test_no_lambda_backed_custom_resource_is_needed(synth: Synthesized) -> None:
    custom = [
        t
        for t in (r["Type"] for r in synth.json["Resources"].values())
        if t.startswith("Custom::") or t == "AWS::CloudFormation::CustomResource"
    ]
    assert custom == []


# --- functions ---------------------------------------------------------------------------


def test_five_functions_on_a_current_python_runtime_for_arm64(synth: Synthesized) -> None:
    functions = synth.resources("AWS::Lambda::Function")
    assert len(functions) == 5
    for name, timeout in FUNCTION_TIMEOUTS.items():
        synth.template.has_resource_properties(
            "AWS::Lambda::Function",
            {
                "FunctionName": f"stratoflow-{name}",
                "Handler": f"functions/{name}/handler.handler",
                "Runtime": "python3.14",
                "Architectures": ["arm64"],
                "Timeout": timeout,
                "TracingConfig": {"Mode": "Active"},
            },
        )


def test_functions_share_one_code_asset(synth: Synthesized) -> None:
    keys = {
        json.dumps(f["Properties"]["Code"]["S3Key"])
        for f in synth.resources("AWS::Lambda::Function").values()
    }
    assert len(keys) == 1


def test_each_function_logs_to_its_own_group_with_retention(synth: Synthesized) -> None:
    for name in FUNCTION_TIMEOUTS:
        synth.template.has_resource_properties(
            "AWS::Logs::LogGroup",
            {"LogGroupName": f"/aws/lambda/stratoflow-{name}", "RetentionInDays": 30},
        )
    for group in synth.resources("AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == 30


def test_log_retention_is_a_context_setting(synth_custom: Synthesized) -> None:
    for group in synth_custom.resources("AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == 90


def test_executor_concurrency_and_memory_are_context_settings(
    synth: Synthesized, synth_custom: Synthesized
) -> None:
    executor = synth.json["Resources"][synth.logical_id(synth.stack.functions["executor"].function)]
    assert "ReservedConcurrentExecutions" not in executor["Properties"]
    synth_custom.template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": "acme-flow-executor",
            "ReservedConcurrentExecutions": 20,
            "MemorySize": 2048,
        },
    )


def test_queues_feed_executor_one_task_at_a_time_and_completion_in_batches(
    synth: Synthesized,
) -> None:
    for function, queue, batch in (
        ("executor", synth.stack.tasks.queue, 1),
        ("completion", synth.stack.completions.queue, 10),
    ):
        synth.template.has_resource_properties(
            "AWS::Lambda::EventSourceMapping",
            {
                "FunctionName": {"Ref": synth.logical_id(synth.stack.functions[function].function)},
                "EventSourceArn": {"Fn::GetAtt": [synth.logical_id(queue), "Arn"]},
                "BatchSize": batch,
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
            },
        )
    synth.template.resource_count_is("AWS::Lambda::EventSourceMapping", 2)


# --- schedule ----------------------------------------------------------------------------


def test_an_eventbridge_rule_ticks_the_dispatcher_every_minute(synth: Synthesized) -> None:
    dispatcher = synth.logical_id(synth.stack.functions["dispatcher"].function)
    synth.template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "rate(1 minute)",
            "State": "ENABLED",
            "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [dispatcher, "Arn"]}})],
        },
    )
    synth.template.has_resource_properties(
        "AWS::Lambda::Permission",
        {"Principal": "events.amazonaws.com", "FunctionName": {"Fn::GetAtt": [dispatcher, "Arn"]}},
    )


# --- fargate -----------------------------------------------------------------------------


def test_fargate_task_definition_runs_the_runner_on_arm64(synth: Synthesized) -> None:
    synth.template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "RequiresCompatibilities": ["FARGATE"],
            "NetworkMode": "awsvpc",
            "RuntimePlatform": {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"},
            "ContainerDefinitions": [
                Match.object_like(
                    {
                        "Name": "runner",
                        # moto's RunTask needs it; RunTask overrides resize it per task.
                        "Memory": Match.any_value(),
                        "LogConfiguration": Match.object_like({"LogDriver": "awslogs"}),
                    }
                )
            ],
        },
    )


def test_runner_image_is_built_from_the_repository_dockerfile(synth: Synthesized) -> None:
    manifest = (synth.outdir / f"{synth.stack.stack_name}.assets.json").read_text()
    assert "infra/runner/Dockerfile" in manifest
    assert '"platform": "linux/arm64"' in manifest


def test_runner_image_may_be_given_instead(synth_custom: Synthesized) -> None:
    synth_custom.template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {"ContainerDefinitions": [Match.object_like({"Image": "public.ecr.aws/example/runner:1"})]},
    )


def test_cluster_has_container_insights(synth: Synthesized) -> None:
    synth.template.has_resource_properties(
        "AWS::ECS::Cluster",
        {"ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]},
    )


def test_task_security_group_admits_no_ingress(synth: Synthesized) -> None:
    for group in synth.resources("AWS::EC2::SecurityGroup").values():
        assert "SecurityGroupIngress" not in group["Properties"]
    synth.template.resource_count_is("AWS::EC2::SecurityGroupIngress", 0)


def test_vpc_logs_flows_and_reaches_s3_and_dynamodb_through_gateway_endpoints(
    synth: Synthesized,
) -> None:
    synth.template.resource_count_is("AWS::EC2::FlowLog", 1)
    endpoints = synth.resources("AWS::EC2::VPCEndpoint").values()
    assert {e["Properties"]["VpcEndpointType"] for e in endpoints} == {"Gateway"}
    assert len(endpoints) == 2


def test_without_nat_gateways_tasks_get_public_ip_and_there_is_no_nat(
    synth: Synthesized,
) -> None:
    synth.template.resource_count_is("AWS::EC2::NatGateway", 0)
    assert synth.stack.fargate.assign_public_ip == "ENABLED"


def test_with_nat_gateways_tasks_run_in_private_subnets(synth_custom: Synthesized) -> None:
    synth_custom.template.resource_count_is("AWS::EC2::NatGateway", 1)
    assert synth_custom.stack.fargate.assign_public_ip == "DISABLED"


def test_outputs_name_what_an_operator_needs(synth: Synthesized) -> None:
    outputs = set(synth.json["Outputs"])
    assert {
        "TableName",
        "TaskQueueUrl",
        "CompletionQueueUrl",
        "WorkflowsBucketName",
        "UploadWorkflowCommand",
        "DashboardUrl",
        "ApiUrl",
        "EventBusName",
    } <= outputs


def test_the_outputs_the_cli_reads_have_the_keys_of_stratoflow_config(
    synth: Synthesized, synth_custom: Synthesized
) -> None:
    # The CLI's `--stack NAME` finds them by these keys, whatever the stack's name.
    for synthesized in (synth, synth_custom):
        assert {OUTPUT_API_URL, OUTPUT_BUCKET, OUTPUT_EVENT_BUS} <= set(synthesized.json["Outputs"])
    bucket = synth.json["Outputs"][OUTPUT_BUCKET]["Value"]
    assert bucket == {"Fn::Join": ["", ["stratoflow-workflows-", {"Ref": "AWS::AccountId"}]]}
