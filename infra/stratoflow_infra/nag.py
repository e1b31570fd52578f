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
        "The runner's environment holds resource names and queue URLs only, no secrets; "
        "task env values in workflow files reference SSM/Secrets Manager (docs/security.md).",
    )
