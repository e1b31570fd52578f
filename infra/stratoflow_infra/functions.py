"""A stratoflow Lambda function: its own role, its own log group, traced, arm64."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stratoflow.config import ENV_REGION, HANDLER_ENV_VARS

from .bundling import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME, handler_path

LAMBDA_PROVIDED_ENV_VARS = frozenset({ENV_REGION})
"""Set by the Lambda service itself (and reserved: a function may not set them)."""


def handler_environment(
    function: str, available: Mapping[str, str], extra: Iterable[str] = ()
) -> dict[str, str]:
    """The environment of `function`: exactly the settings HANDLER_ENV_VARS says it reads
    (plus `extra`), with their values taken from `available`.

    A name the stack cannot provide is a synth error rather than a handler failing at run
    time: that is what keeps `stratoflow.config` and the stack from drifting apart.
    """
    needed = [*HANDLER_ENV_VARS[function], *extra]
    missing = [
        name for name in needed if name not in available and name not in LAMBDA_PROVIDED_ENV_VARS
    ]
    if missing:
        raise ValueError(
            f"function {function} reads {missing}, which the stack does not provide; "
            f"add them to the environment built in infra/stratoflow_infra/stack.py"
        )
    return {name: available[name] for name in needed if name not in LAMBDA_PROVIDED_ENV_VARS}


class HandlerFunction(Construct):
    """functions/<name>/handler.py as a Lambda function.

    The role starts empty (no AWS managed policy): it may write to its own log group and
    send X-Ray segments, and every other permission is a grant made by the stack.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        function_name: str,
        code: lambda_.Code,
        timeout_seconds: int,
        memory_mib: int,
        environment: Mapping[str, str],
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        reserved_concurrency: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.name = name
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            log_group_name=f"/aws/lambda/{function_name}",
            retention=log_retention,
            removal_policy=removal_policy,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"stratoflow {name} function",
        )
        self.log_group.grant_write(self.role)
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=function_name,
            description=f"stratoflow {name}",
            runtime=LAMBDA_RUNTIME,
            architecture=LAMBDA_ARCHITECTURE,
            code=code,
            handler=handler_path(name),
            timeout=Duration.seconds(timeout_seconds),
            memory_size=memory_mib,
            environment=dict(environment),
            role=self.role,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=reserved_concurrency,
        )
