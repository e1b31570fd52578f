"""The one stratoflow stack: state, queues, bucket, functions, schedule, Fargate, REST API,
run events and dashboards."""

from __future__ import annotations

from typing import Any

from aws_cdk import ArnFormat, Aws, CfnOutput, Duration, IgnoreMode, Stack, Tags
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as event_sources
from constructs import Construct

from stratoflow.config import (
    API_TIMEOUT_SECONDS,
    COMPLETION_TIMEOUT_SECONDS,
    DEFINITIONS_PREFIX,
    DISPATCHER_TIMEOUT_SECONDS,
    ENV_BUCKET,
    ENV_COMPLETION_QUEUE_URL,
    ENV_TABLE,
    ENV_TASK_QUEUE_URL,
    ENV_TASK_ROLE_ARN,
    EXECUTOR_TIMEOUT_SECONDS,
    HANDLER_ENV_VARS,
    LOADER_TIMEOUT_SECONDS,
    WORKFLOWS_PREFIX,
    Resources,
)

from .api import StratoflowApi
from .bucket import WorkflowsBucket
from .bundling import REPO_ROOT, functions_code
from .contract import (
    ENV_EVENT_BUS,
    ENV_RUN_RETENTION_DAYS,
    FARGATE_ENV_VARS,
    FARGATE_LAUNCHERS,
    METRICS_NAMESPACE,
    OUTPUT_API_URL,
    OUTPUT_BUCKET,
    OUTPUT_EVENT_BUS,
    RUN_RETENTION_SETTERS,
)
from .fargate import FargateExecutor
from .functions import HandlerFunction, handler_environment
from .observability import Observability, dashboard_url
from .queues import WorkQueue
from .run_events import RunEvents
from .schedule import DispatcherSchedule
from .settings import StackSettings
from .state import StateTable

EXECUTOR_TABLE_WRITE_ACTIONS = (
    "dynamodb:UpdateItem",
    "dynamodb:PutItem",
    "dynamodb:ConditionCheckItem",
)
"""An executor claims its attempt and renews its lease with conditional writes; it may not
delete items nor batch-write. Deciding run and task state is the completion handler's
(invariant 10); see docs/security.md for what IAM does and does not enforce here."""

RUNNER_DOCKERFILE = "infra/runner/Dockerfile"
# The runner image's build context is the repository, reduced to what the Dockerfile copies.
RUNNER_CONTEXT_PATTERNS = [
    "*",
    "!shared/stratoflow",
    "!pyproject.toml",
    f"!{RUNNER_DOCKERFILE}",
    "**/__pycache__",
    "**/*.pyc",
]

FUNCTIONS = ("dispatcher", "executor", "completion", "loader", "api")
FUNCTION_MEMORY_MIB = {"dispatcher": 512, "completion": 512, "loader": 512, "api": 512}
FUNCTION_TIMEOUT_SECONDS = {
    "dispatcher": DISPATCHER_TIMEOUT_SECONDS,
    "executor": EXECUTOR_TIMEOUT_SECONDS,
    "completion": COMPLETION_TIMEOUT_SECONDS,
    "loader": LOADER_TIMEOUT_SECONDS,
    "api": API_TIMEOUT_SECONDS,
}
EVENT_PUBLISHERS = tuple(name for name, env in HANDLER_ENV_VARS.items() if ENV_EVENT_BUS in env)
"""Functions that finish runs, hence read the bus's name and put `Run Finished` events on it."""
TASK_LOG_READ_ACTIONS = ("logs:FilterLogEvents", "logs:GetLogEvents")
"""What the API needs to serve a task's output from the executors' log groups."""
COMPLETION_BATCH_SIZE = 10
# One task per invocation: a command may use the function's whole 15-minute timeout, and
# each task scales out to its own concurrent execution.
EXECUTOR_BATCH_SIZE = 1


class StratoflowStack(Stack):
    """Everything one stratoflow installation needs, named after `settings.prefix`."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: StackSettings, **kwargs: Any
    ) -> None:
        tags = {"project": "stratoflow", "stratoflow:prefix": settings.prefix}
        # Given to the stack itself as well: under @aws-cdk/core:explicitStackTags (cdk.json)
        # `Tags.of` tags only the resources, and a deployed stack would lose its tags.
        super().__init__(scope, construct_id, tags=tags, **kwargs)
        for key, value in tags.items():
            Tags.of(self).add(key, value)
        names = Resources.named(settings.prefix, account=Aws.ACCOUNT_ID)

        self.state = StateTable(
            self, "State", table_name=names.table, removal_policy=settings.removal_policy
        )
        self.tasks = WorkQueue(
            self,
            "TaskQueue",
            spec=names.task_queue,
            consumer_timeout_seconds=EXECUTOR_TIMEOUT_SECONDS,
        )
        self.completions = WorkQueue(
            self,
            "CompletionQueue",
            spec=names.completion_queue,
            consumer_timeout_seconds=COMPLETION_TIMEOUT_SECONDS,
        )
        self.workflows = WorkflowsBucket(
            self, "Workflows", bucket_name=names.bucket, removal_policy=settings.removal_policy
        )
        self.run_events = RunEvents(
            self,
            "RunEvents",
            bus_name=settings.prefix,
            failed_run_email=settings.failed_run_email,
        )

        # Every setting a handler may read, by environment variable name (stratoflow.config).
        available = {
            ENV_TABLE: self.state.table.table_name,
            ENV_TASK_QUEUE_URL: self.tasks.queue.queue_url,
            ENV_COMPLETION_QUEUE_URL: self.completions.queue.queue_url,
            # By name, not by reference: see WorkflowsBucket.grantable.
            ENV_BUCKET: names.bucket,
            ENV_EVENT_BUS: self.run_events.bus_name,
            ENV_RUN_RETENTION_DAYS: str(settings.run_retention_days),
            # Known before the role exists (it is made in _grant_task_roles): the Fargate
            # container's environment is fixed before the roles that role trusts exist.
            ENV_TASK_ROLE_ARN: self._default_task_role_arn(settings),
        }
        powertools = {
            "POWERTOOLS_SERVICE_NAME": settings.prefix,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "LOG_LEVEL": settings.log_level,
        }

        self.fargate = FargateExecutor(
            self,
            "FargateExecutor",
            image=_runner_image(settings),
            environment={**handler_environment("executor", available), **powertools},
            nat_gateways=settings.nat_gateways,
            subnets=settings.fargate_subnets,
            log_retention=settings.log_retention,
            removal_policy=settings.removal_policy,
        )
        available.update(self.fargate.launcher_environment())

        code = functions_code(install_dependencies=not settings.skip_bundling)
        self.functions: dict[str, HandlerFunction] = {}
        for name in FUNCTIONS:
            extra = [
                *(FARGATE_ENV_VARS if name in FARGATE_LAUNCHERS else ()),
                *((ENV_RUN_RETENTION_DAYS,) if name in RUN_RETENTION_SETTERS else ()),
            ]
            self.functions[name] = HandlerFunction(
                self,
                name.capitalize(),
                name=name,
                function_name=f"{settings.prefix}-{name}",
                code=code,
                timeout_seconds=FUNCTION_TIMEOUT_SECONDS[name],
                memory_mib=(
                    settings.executor_memory_mib
                    if name == "executor"
                    else FUNCTION_MEMORY_MIB[name]
                ),
                environment={**handler_environment(name, available, extra), **powertools},
                log_retention=settings.log_retention,
                removal_policy=settings.removal_policy,
                reserved_concurrency=(
                    settings.executor_reserved_concurrency if name == "executor" else None
                ),
            )
        self._grant()
        self._grant_task_roles(settings)
        self._connect()
        self.api = StratoflowApi(
            self,
            "RestApi",
            handler=self.functions["api"].function,
            api_name=settings.prefix,
            throttle_rate_limit=settings.api_throttle_rate_limit,
            throttle_burst_limit=settings.api_throttle_burst_limit,
            log_retention=settings.log_retention,
            removal_policy=settings.removal_policy,
        )
        DispatcherSchedule(
            self,
            "Schedule",
            dispatcher=self.functions["dispatcher"].function,
            rule_name=f"{settings.prefix}-dispatcher-tick",
        )

        dashboard_name = settings.prefix
        self.observability = Observability(
            self,
            "Observability",
            service=settings.prefix,
            dashboard_name=dashboard_name,
            functions={name: f.function for name, f in self.functions.items()},
            api=self.api.api,
            queues={"tasks": self.tasks.queue, "completions": self.completions.queue},
            dead_letter_queues={
                "tasks": self.tasks.dead_letter_queue,
                "completions": self.completions.dead_letter_queue,
            },
            task_queue=self.tasks.queue,
            oldest_task_age_alarm_seconds=settings.oldest_task_age_alarm_seconds,
            alarm_email=settings.alarm_email,
        )

        CfnOutput(self, "TableName", value=self.state.table.table_name)
        CfnOutput(self, "TaskQueueUrl", value=self.tasks.queue.queue_url)
        CfnOutput(self, "CompletionQueueUrl", value=self.completions.queue.queue_url)
        # Output keys are stratoflow.config's: the CLI's `--stack NAME` reads them by key.
        CfnOutput(self, OUTPUT_API_URL, value=self.api.url)
        CfnOutput(self, OUTPUT_EVENT_BUS, value=self.run_events.bus_name)
        CfnOutput(self, OUTPUT_BUCKET, value=names.bucket)
        CfnOutput(
            self,
            "UploadWorkflowCommand",
            value=f"aws s3 cp FILE.yaml s3://{names.bucket}/{WORKFLOWS_PREFIX}",
        )
        CfnOutput(self, "DashboardUrl", value=dashboard_url(dashboard_name))

    def _grant(self) -> None:
        """Each function's permissions: only what it touches (docs/security.md)."""
        table = self.state.table
        bucket = self.workflows
        dispatcher, executor, completion, loader, api = (
            self.functions[name].role for name in FUNCTIONS
        )

        table.grant_read_write_data(dispatcher)
        self.tasks.queue.grant_send_messages(dispatcher)
        # The tick reports attempts whose executor died (expired lease) as completions.
        self.completions.queue.grant_send_messages(dispatcher)
        bucket.grant_read_objects(dispatcher, DEFINITIONS_PREFIX)
        self.fargate.task_definition.grant_run(dispatcher)

        for runner in (executor, self.fargate.task_definition.task_role):
            self._grant_executor(runner)

        table.grant_read_write_data(completion)
        self.tasks.queue.grant_send_messages(completion)
        self.completions.queue.grant_send_messages(completion)
        bucket.grant_read_objects(completion, DEFINITIONS_PREFIX)
        self.fargate.task_definition.grant_run(completion)
        # It does the work the API hands off: a run's start, and a cancelled run's tasks.
        self._grant_stop_fargate_tasks(completion)

        table.grant_read_write_data(loader)
        bucket.grant_read_objects(loader, WORKFLOWS_PREFIX)
        bucket.grant_write_objects(loader, WORKFLOWS_PREFIX)  # error reports beside uploads
        bucket.grant_write_objects(loader, DEFINITIONS_PREFIX)

        table.grant_read_write_data(api)
        self.tasks.queue.grant_send_messages(api)
        self.completions.queue.grant_send_messages(api)
        bucket.grant_read_objects(api, DEFINITIONS_PREFIX)
        bucket.grant_read_objects(api, WORKFLOWS_PREFIX)
        bucket.grant_write_objects(api, WORKFLOWS_PREFIX)  # uploads
        self.fargate.task_definition.grant_run(api)  # a run's root tasks may be on Fargate
        self._grant_stop_fargate_tasks(api)  # cancelling a run
        for log_group in (self.functions["executor"].log_group, self.fargate.log_group):
            log_group.grant(api, *TASK_LOG_READ_ACTIONS)

        for name in EVENT_PUBLISHERS:
            self.run_events.bus.grant_put_events_to(self.functions[name].role)

    def _default_task_role_arn(self, settings: StackSettings) -> str:
        return self.format_arn(
            service="iam",
            region="",
            resource="role",
            resource_name=default_task_role_name(settings),
        )

    def _grant_task_roles(self, settings: StackSettings) -> None:
        """Commands run as a task role, never as their executor (invariant 12).

        The default task role may do nothing until its owner grants it something; both
        executors (the Lambda function's role and the Fargate task role) may assume it, and
        the roles a workflow names: those whose name starts with the task-role prefix, or
        tagged `stratoflow:task-role=true`, in this account. They also read the secrets
        workflows name, under the stack's SSM and Secrets Manager prefixes only.
        """
        runners = (self.functions["executor"].role, self.fargate.task_definition.task_role)
        self.task_grant_prefixes = {
            "roles": settings.task_roles,
            "parameters": settings.secret_parameters.strip("/"),
            "secrets": settings.secret_names,
        }
        """What the executors' wildcard grants end in (cdk-nag's acknowledgments name them)."""
        self.task_role = iam.Role(
            self,
            "DefaultTaskRole",
            role_name=default_task_role_name(settings),
            assumed_by=iam.CompositePrincipal(*runners),
            description="stratoflow: what a task's command may do when its workflow names no "
            "role (nothing, until you grant it)",
            max_session_duration=Duration.hours(1),
        )
        named = self.format_arn(
            service="iam", region="", resource="role", resource_name=f"{settings.task_roles}*"
        )
        any_role = self.format_arn(service="iam", region="", resource="role", resource_name="*")
        parameters = self.format_arn(
            service="ssm",
            resource="parameter",
            resource_name=f"{settings.secret_parameters.strip('/')}/*",
        )
        secrets = self.format_arn(
            service="secretsmanager",
            resource="secret",
            resource_name=f"{settings.secret_names}*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        for runner in runners:
            iam.Grant.add_to_principal(
                grantee=runner,
                actions=["sts:AssumeRole"],
                resource_arns=[self.task_role.role_arn, named],
            )
            iam.Grant.add_to_principal(
                grantee=runner,
                actions=["sts:AssumeRole"],
                resource_arns=[any_role],
                conditions={"StringEquals": {f"aws:ResourceTag/{TASK_ROLE_TAG}": "true"}},
            )
            iam.Grant.add_to_principal(
                grantee=runner, actions=["ssm:GetParameter"], resource_arns=[parameters]
            )
            iam.Grant.add_to_principal(
                grantee=runner, actions=["secretsmanager:GetSecretValue"], resource_arns=[secrets]
            )
        CfnOutput(self, "DefaultTaskRoleArn", value=self.task_role.role_arn)
        CfnOutput(self, "ExecutorRoleArn", value=runners[0].role_arn)
        CfnOutput(self, "FargateTaskRoleArn", value=runners[1].role_arn)

    def _grant_stop_fargate_tasks(self, grantee: iam.IGrantable) -> None:
        """ecs:StopTask on the runner cluster's tasks only (task ids are not known ahead)."""
        cluster = self.fargate.cluster
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["ecs:StopTask"],
            resource_arns=[
                self.format_arn(
                    service="ecs",
                    resource="task",
                    resource_name=f"{cluster.cluster_name}/*",
                    arn_format=ArnFormat.SLASH_RESOURCE_NAME,
                )
            ],
            conditions={"ArnEquals": {"ecs:cluster": cluster.cluster_arn}},
        )

    def _grant_executor(self, grantee: iam.IGrantable) -> None:
        """An executor (Lambda or Fargate task) reads, claims its attempt, and reports."""
        table = self.state.table
        table.grant_read_data(grantee)
        table.grant(grantee, *EXECUTOR_TABLE_WRITE_ACTIONS)
        self.completions.queue.grant_send_messages(grantee)
        self.workflows.grant_read_objects(grantee, DEFINITIONS_PREFIX)

    def _connect(self) -> None:
        """Event sources: the queues feed executor and completion, uploads feed the loader."""
        self.functions["executor"].function.add_event_source(
            event_sources.SqsEventSource(
                self.tasks.queue, batch_size=EXECUTOR_BATCH_SIZE, report_batch_item_failures=True
            )
        )
        self.functions["completion"].function.add_event_source(
            event_sources.SqsEventSource(
                self.completions.queue,
                batch_size=COMPLETION_BATCH_SIZE,
                report_batch_item_failures=True,
            )
        )
        self.workflows.notify_loader(self.functions["loader"].function)


TASK_ROLE_TAG = "stratoflow:task-role"
"""A role tagged with this key and the value `true` may be a task's `role`."""


def default_task_role_name(settings: StackSettings) -> str:
    """The default task role's name: fixed, so that its ARN is known before it is made."""
    return f"{settings.task_roles}default"


def _runner_image(settings: StackSettings) -> ecs.ContainerImage:
    """The Fargate runner image: a given URI, or infra/runner/Dockerfile built at deploy
    time by the CDK CLI (synth only stages the build context; it needs no Docker)."""
    if settings.runner_image:
        return ecs.ContainerImage.from_registry(settings.runner_image)
    return ecs.ContainerImage.from_asset(
        str(REPO_ROOT),
        file=RUNNER_DOCKERFILE,
        exclude=RUNNER_CONTEXT_PATTERNS,
        ignore_mode=IgnoreMode.DOCKER,
        platform=ecr_assets.Platform.LINUX_ARM64,
    )
