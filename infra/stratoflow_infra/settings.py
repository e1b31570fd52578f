"""The stack's settings, read from CDK context (`cdk.json` or `-c stratoflow:KEY=VALUE`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from constructs import Node

from stratoflow.config import DEFAULT_PREFIX

CONTEXT_PREFIX = "stratoflow:"

# CloudWatch Logs accepts only these retention periods (days), in RetentionDays' order.
_CLOUDWATCH_RETENTION_PERIODS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
_LOG_RETENTION_DAYS = dict(
    zip(_CLOUDWATCH_RETENTION_PERIODS, list(logs.RetentionDays)[:-1], strict=True)  # -1: INFINITE
)


@dataclass(frozen=True)
class StackSettings:
    """Everything an operator may choose per installation; defaults suit a first deploy."""

    stack_name: str = "Stratoflow"
    prefix: str = DEFAULT_PREFIX
    """Resource names start with this; also the Powertools service name (metric dimension)."""
    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN
    """For the table and buckets. `destroy` suits throw-away stacks (tests, rehearsals)."""
    run_retention_days: int = 30
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH
    log_level: str = "INFO"
    executor_memory_mib: int = 1024
    executor_reserved_concurrency: int | None = None
    alarm_email: str | None = None
    failed_run_email: str | None = None
    """Subscribes this address to failed runs' `Run Finished` events (an SNS topic)."""
    task_role_prefix: str | None = None
    """Roles whose name starts with this (default `<prefix>-task-`) may be a task's `role`:
    the executors may assume them (so may roles tagged `stratoflow:task-role=true`)."""
    secrets_parameter_prefix: str | None = None
    """SSM parameters the executors may read for `secrets:` (default `/<prefix>/`)."""
    secrets_name_prefix: str | None = None
    """Secrets Manager secrets the executors may read for `secrets:` (default `<prefix>/`)."""

    @property
    def task_roles(self) -> str:
        """The name prefix of the roles tasks may run as."""
        return self.task_role_prefix or f"{self.prefix}-task-"

    @property
    def secret_parameters(self) -> str:
        """The SSM parameter path prefix secrets may be read under."""
        return self.secrets_parameter_prefix or f"/{self.prefix}/"

    @property
    def secret_names(self) -> str:
        """The Secrets Manager name prefix secrets may be read under."""
        return self.secrets_name_prefix or f"{self.prefix}/"

    api_throttle_rate_limit: int = 50
    """Steady-state requests per second the REST API's stage admits (all methods)."""
    api_throttle_burst_limit: int = 100
    """Requests the stage admits in a burst above the steady rate."""
    oldest_task_age_alarm_seconds: int = 900
    nat_gateways: int = 0
    """NAT gateways of the Fargate tasks' VPC (≥1 serves `fargate_subnets="private"`)."""
    fargate_subnets: str = "public"
    """Where Fargate tasks run. `public`: public subnets with a public IP (no NAT cost),
    behind a security group without ingress rules. `private`: private subnets without
    public IPs, reaching AWS through the NAT gateways if `nat_gateways` ≥ 1, else (no route
    out at all) through interface VPC endpoints of the services the runner calls. Default:
    `public` without NAT gateways, `private` with them."""
    runner_image: str | None = None
    """An image URI for the Fargate runner; unset builds infra/runner/Dockerfile at deploy."""
    skip_bundling: bool = False
    """Package the handlers and `stratoflow` without third-party dependencies (no pip, no
    network): fast synths for tests and emulator rehearsals. Such functions cannot run."""

    @classmethod
    def from_context(cls, node: Node) -> StackSettings:
        """Settings from the `stratoflow:*` context values, validated with clear messages."""

        def get(key: str) -> Any:
            return node.try_get_context(CONTEXT_PREFIX + key)

        defaults = cls()
        return cls(
            stack_name=_text(get("stackName"), defaults.stack_name, "stackName"),
            prefix=_text(get("prefix"), defaults.prefix, "prefix"),
            removal_policy=_removal_policy(get("removalPolicy"), defaults.removal_policy),
            run_retention_days=_integer(
                get("runRetentionDays"), defaults.run_retention_days, "runRetentionDays", minimum=1
            ),
            log_retention=_log_retention(get("logRetentionDays"), defaults.log_retention),
            log_level=_text(get("logLevel"), defaults.log_level, "logLevel").upper(),
            executor_memory_mib=_integer(
                get("executorMemoryMiB"),
                defaults.executor_memory_mib,
                "executorMemoryMiB",
                minimum=128,
            ),
            executor_reserved_concurrency=_optional_integer(
                get("executorReservedConcurrency"), "executorReservedConcurrency", minimum=1
            ),
            alarm_email=_text(get("alarmEmail"), None, "alarmEmail") or None,
            failed_run_email=_text(get("failedRunEmail"), None, "failedRunEmail") or None,
            task_role_prefix=_name_prefix(get("taskRolePrefix"), "taskRolePrefix", _ROLE_PREFIX),
            secrets_parameter_prefix=_name_prefix(
                get("secretsParameterPrefix"), "secretsParameterPrefix", _PARAMETER_PREFIX
            ),
            secrets_name_prefix=_name_prefix(
                get("secretsNamePrefix"), "secretsNamePrefix", _SECRET_PREFIX
            ),
            api_throttle_rate_limit=_integer(
                get("apiThrottleRateLimit"),
                defaults.api_throttle_rate_limit,
                "apiThrottleRateLimit",
                minimum=1,
            ),
            api_throttle_burst_limit=_integer(
                get("apiThrottleBurstLimit"),
                defaults.api_throttle_burst_limit,
                "apiThrottleBurstLimit",
                minimum=1,
            ),
            oldest_task_age_alarm_seconds=_integer(
                get("oldestTaskAgeAlarmSeconds"),
                defaults.oldest_task_age_alarm_seconds,
                "oldestTaskAgeAlarmSeconds",
                minimum=60,
            ),
            nat_gateways=(
                nat := _integer(get("natGateways"), defaults.nat_gateways, "natGateways", minimum=0)
            ),
            fargate_subnets=_choice(
                get("fargateSubnets"),
                "private" if nat else "public",
                "fargateSubnets",
                ("public", "private"),
            ),
            runner_image=_text(get("runnerImage"), None, "runnerImage") or None,
            skip_bundling=_boolean(get("skipBundling"), defaults.skip_bundling, "skipBundling"),
        )


def _text(value: Any, default: str | None, key: str) -> str | None:
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"context {CONTEXT_PREFIX}{key} must be a string, got {value!r}")
    return value.strip()


_ROLE_PREFIX = r"[A-Za-z0-9+=,.@_-]{1,57}"  # + "default": IAM allows 64
_PARAMETER_PREFIX = r"/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/"
_SECRET_PREFIX = r"[A-Za-z0-9/_+=.@-]{1,200}"


def _name_prefix(value: Any, key: str, pattern: str) -> str | None:
    """A prefix the executors' grants end in `*`: non-empty, so never every role or secret."""
    text = _text(value, None, key)
    if text is None:
        return None
    if not re.fullmatch(pattern, text):
        raise ValueError(
            f"context {CONTEXT_PREFIX}{key} must match {pattern} (a non-empty prefix, so that "
            f"the grant cannot cover everything), got {value!r}"
        )
    return text


def _choice(value: Any, default: str, key: str, choices: tuple[str, ...]) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise ValueError(
            f"context {CONTEXT_PREFIX}{key} must be one of {', '.join(choices)}, got {value!r}"
        )
    return value.strip().lower()


def _integer(value: Any, default: int, key: str, *, minimum: int) -> int:
    result = _optional_integer(value, key, minimum=minimum)
    return default if result is None else result


def _optional_integer(value: Any, key: str, *, minimum: int) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)  # `-c key=5` arrives as the string "5"
    except (TypeError, ValueError):
        number = None
    if isinstance(value, bool) or number is None or number < minimum:
        raise ValueError(
            f"context {CONTEXT_PREFIX}{key} must be an integer ≥ {minimum}, got {value!r}"
        )
    return number


def _boolean(value: Any, default: bool, key: str) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "1", "yes", "false", "0", "no"}:
        return value.lower() in {"true", "1", "yes"}
    raise ValueError(f"context {CONTEXT_PREFIX}{key} must be true or false, got {value!r}")


def _removal_policy(value: Any, default: RemovalPolicy) -> RemovalPolicy:
    if value is None:
        return default
    choices = {"retain": RemovalPolicy.RETAIN, "destroy": RemovalPolicy.DESTROY}
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(
            f"context {CONTEXT_PREFIX}removalPolicy must be retain or destroy, got {value!r}"
        )
    return choices[value.lower()]


def _log_retention(value: Any, default: logs.RetentionDays) -> logs.RetentionDays:
    if value is None:
        return default
    days = _integer(value, 0, "logRetentionDays", minimum=1)
    if days not in _LOG_RETENTION_DAYS:
        raise ValueError(
            f"context {CONTEXT_PREFIX}logRetentionDays must be one of "
            f"{sorted(_LOG_RETENTION_DAYS)} (CloudWatch Logs' periods), got {value!r}"
        )
    return _LOG_RETENTION_DAYS[days]
