"""cdk-nag (AwsSolutions) findings accepted on purpose, each with its reason.

Every acknowledgment names one rule and, for rules that report several findings per
resource (IAM5), the exact finding, on the narrowest construct that carries it. Anything
not listed here fails the synth, so a new wildcard cannot slip in unreviewed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, CfnElement, Validations
from constructs import IConstruct

from stratoflow.config import DEFINITIONS_PREFIX, WORKFLOWS_PREFIX, Resources

if TYPE_CHECKING:
    from .stack import StratoflowStack

PACK = "AwsSolutions"

XRAY_REASON = (
    "Active tracing: xray:PutTraceSegments and xray:PutTelemetryRecords support no "
    "resource-level permissions, so AWS requires Resource '*' for them."
)


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accept cdk-nag finding `rule` (e.g. "AwsSolutions-IAM5[Resource::*]") on `scope`."""
    Validations.of(scope).acknowledge(Acknowledgment(id=f"{PACK}::{rule}", reason=reason))


def _objects_finding(prefix: str, key_prefix: str) -> str:
    # cdk-nag renders tokens as <Logical::Id>; the bucket is addressed by name.
    bucket = Resources.named(prefix, account="<AWS::AccountId>").bucket
    return f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{bucket}/{key_prefix}*]"


def acknowledge_findings(stack: StratoflowStack, prefix: str) -> None:
    """The stack's accepted findings."""
    definitions = _objects_finding(prefix, DEFINITIONS_PREFIX)
    workflows = _objects_finding(prefix, WORKFLOWS_PREFIX)

    table = stack.state.table.node.default_child
    assert isinstance(table, CfnElement)
    indexes = f"AwsSolutions-IAM5[Resource::<{stack.get_logical_id(table)}.Arn>/index/*]"
    indexes_reason = (
        "Table grants cover the table's indexes (`<table>/index/*`); the only index is the "
        "sparse schedule index `due`, in the same table the role already uses."
    )
    for role in [f.role for f in stack.functions.values()] + [
        stack.fargate.task_definition.task_role
    ]:
        acknowledge(role, indexes, indexes_reason)
    for function in stack.functions.values():
        acknowledge(function.role, "AwsSolutions-IAM5[Resource::*]", XRAY_REASON)
        acknowledge(
            function.role,
            definitions,
            f"Definitions too large for a DynamoDB item are S3 objects under "
            f"{DEFINITIONS_PREFIX} (one per workflow version); access is limited to that "
            "prefix and to GetObject/GetObjectVersion (the loader: PutObject).",
        )
    acknowledge(
        stack.functions["loader"].role,
        workflows,
        f"The loader reads the uploaded workflow files under {WORKFLOWS_PREFIX}, whose "
        "names users choose, and writes each one's error report beside it.",
    )
    _acknowledge_api(stack, workflows)

    _acknowledge_task_roles(stack)

    task_definition = stack.fargate.task_definition
    acknowledge(
        task_definition.task_role,
        definitions,
        f"The Fargate runner reads workflow definitions stored under {DEFINITIONS_PREFIX}, "
        "read-only, like the Lambda executor.",
    )
    acknowledge(
        task_definition.obtain_execution_role(),
        "AwsSolutions-IAM5[Resource::*]",
        "ecr:GetAuthorizationToken, needed to pull the runner image, supports no "
        "resource-level permission; image pulls themselves are limited to the asset "
        "repository.",
    )
    acknowledge(
        task_definition,
        "AwsSolutions-ECS2",
        "The runner's environment holds resource names, queue URLs and the default task "
        "role's ARN only, no secrets; a task's `secrets:` are read by the runner when its "
        "attempt starts and given to its command alone (docs/security.md).",
    )


def _acknowledge_task_roles(stack: StratoflowStack) -> None:
    """The executors assume task roles and read secrets, by prefix (invariant 12)."""
    prefixes = stack.task_grant_prefixes
    iam_roles = "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iam::<AWS::AccountId>:role/"
    region = "<AWS::Partition>:{}:<AWS::Region>:<AWS::AccountId>"
    findings = {
        f"{iam_roles}{prefixes['roles']}*]": (
            f"A task's `role` may be any role whose name starts with {prefixes['roles']} (a "
            "stack setting): workflows name their roles, which are made after the stack. "
            "Only sts:AssumeRole; each role must also trust the executor in its own policy."
        ),
        f"{iam_roles}*]": (
            "sts:AssumeRole on roles of this account only when tagged "
            "stratoflow:task-role=true (aws:ResourceTag condition): tagging a role is what "
            "makes it a task role; each role must also trust the executor."
        ),
        f"AwsSolutions-IAM5[Resource::arn:{region.format('ssm')}:parameter/"
        f"{prefixes['parameters']}/*]": (
            f"Workflows name their secrets; ssm:GetParameter is limited to the parameters "
            f"under /{prefixes['parameters']}/ (a stack setting)."
        ),
        f"AwsSolutions-IAM5[Resource::arn:{region.format('secretsmanager')}:secret:"
        f"{prefixes['secrets']}*]": (
            f"Workflows name their secrets; secretsmanager:GetSecretValue is limited to the "
            f"secrets named {prefixes['secrets']}* (a stack setting; names end in a random "
            "suffix)."
        ),
    }
    for runner in (stack.functions["executor"].role, stack.fargate.task_definition.task_role):
        for finding, reason in findings.items():
            acknowledge(runner, finding, reason)


def _acknowledge_api(stack: StratoflowStack, workflows: str) -> None:
    """The REST API and its function."""
    api_role = stack.functions["api"].role
    acknowledge(
        api_role,
        workflows,
        f"The API uploads workflow files under {WORKFLOWS_PREFIX} (PutObject, names chosen by "
        "the caller) and reads them back (GetObject/GetObjectVersion); no delete, no list.",
    )
    cluster = stack.fargate.cluster.node.default_child
    assert isinstance(cluster, CfnElement)
    # The API cancels; the completion handler does the per-task work the cancel hands off.
    for role in (api_role, stack.functions["completion"].role):
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ecs:<AWS::Region>:"
            f"<AWS::AccountId>:task/<{stack.get_logical_id(cluster)}>/*]",
            "Cancelling a run stops its Fargate tasks, whose ids are only known at run time: "
            "ecs:StopTask on the runner cluster's tasks, with an ecs:cluster condition too.",
        )

    rest_api = stack.api.api
    cloud_watch_role = rest_api.node.find_child("CloudWatchRole")
    acknowledge(
        cloud_watch_role,
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
        "AmazonAPIGatewayPushToCloudWatchLogs]",
        "The account-level role API Gateway assumes to write execution logs (required for "
        "the stage's execution logging) uses the AWS managed policy made for exactly that.",
    )
    acknowledge(
        rest_api.deployment_stage,
        "AwsSolutions-APIG3",
        "WAF is optional for this API: every method requires IAM authorization (SigV4), so "
        "unsigned requests are refused by API Gateway, and the stage is throttled.",
    )
    acknowledge(
        rest_api,
        "AwsSolutions-COG4",
        "Not applicable: the callers are IAM principals (operators, CI, the CLI) and every "
        "method uses IAM authorization (SigV4), not a Cognito user pool.",
    )
