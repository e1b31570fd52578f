"""The workflow model: what a workflow file may say, its defaults and how a task inherits
them, and the checks that need the whole workflow (secrets against env, a Lambda task's
timeout).

The value types of its fields (durations, maps) are in `stratoflow.core.field_types`, the
checks of single values (param, variable and secret names, secret references, roles) in
`stratoflow.core.field_checks`; the params checks are re-exported here, where the API, the
services and the CLI have always imported them from. Graph-level checks (unknown or self
dependencies, duplicate ids, cycles) live in `stratoflow.core.dag`; reading files and
turning errors into messages in `stratoflow.core.loader`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from stratoflow.core.field_checks import PARAM_NAME_PATTERN as PARAM_NAME_PATTERN
from stratoflow.core.field_checks import (
    ROLE_PATTERN,
    checked_env,
    checked_role,
    checked_secrets,
    no_nul,
)
from stratoflow.core.field_checks import check_param_names_distinct as check_param_names_distinct
from stratoflow.core.field_checks import check_params_size as check_params_size
from stratoflow.core.field_checks import check_run_params as check_run_params
from stratoflow.core.field_types import (
    PARAMS_SCHEMA,
    NonNegativeDuration,
    PositiveDuration,
    SecretMap,
    TextMap,
    quoted,
    text_values,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
MAX_TASKS = 20_000
"""Tasks in one workflow: bounds the run's counters and the definition's size."""
DEFAULT_TIMEOUT_SECONDS = 600.0
LAMBDA_MAX_TIMEOUT_SECONDS = 880.0
"""Lambda stops a function at 900 s; the executor needs the rest to kill the command's
process tree and send its report, so a longer task must use `executor: fargate`."""
MAX_RETRY_DELAY_SECONDS = 3600.0
MAX_PRIORITY = 1_000_000

# A task's and the workflow's `secrets` and `role`, checked the same way at both levels.
CheckedSecrets = Annotated[SecretMap, AfterValidator(checked_secrets)]
RoleName = Annotated[
    str | None,
    AfterValidator(checked_role),
    Field(json_schema_extra={"pattern": f"^({ROLE_PATTERN})$"}),
]


class TriggerRule(StrEnum):
    """When a task may run, given its upstream tasks' states (Airflow's names and meaning)."""

    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    ONE_DONE = "one_done"
    NONE_FAILED = "none_failed"
    NONE_SKIPPED = "none_skipped"
    ALWAYS = "always"


class Executor(StrEnum):
    """Where a task's command runs on AWS."""

    LAMBDA = "lambda"
    FARGATE = "fargate"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TaskDefaults(_Strict):
    """Values every task inherits unless it sets its own."""

    trigger_rule: TriggerRule = Field(
        default=TriggerRule.ALL_SUCCESS, description="when a task may run, given its upstreams"
    )
    retries: int = Field(default=0, ge=0, le=100, description="extra attempts after a failure")
    retry_delay: NonNegativeDuration = Field(default=0.0, description="wait before the 1st retry")
    retry_backoff: float = Field(
        default=1.0, ge=1.0, le=100.0, description="factor applied to the delay per retry"
    )
    max_retry_delay: PositiveDuration = Field(
        default=MAX_RETRY_DELAY_SECONDS, description="upper bound of the retry delay"
    )
    timeout: PositiveDuration = Field(
        default=DEFAULT_TIMEOUT_SECONDS, description="limit of one attempt"
    )
    executor: Executor = Field(default=Executor.LAMBDA, description="lambda or fargate")
    cpu: int = Field(default=256, gt=0, description="Fargate CPU units")
    memory: int = Field(default=512, gt=0, description="memory in MiB")
    priority: int = Field(
        default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="higher runs first"
    )
    env: TextMap = Field(default_factory=dict, description="environment variables")

    @field_validator("env", mode="before")
    @classmethod
    def _env_values_as_text(cls, value: Any) -> Any:
        return text_values(value)

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        return checked_env(value)


class Task(_Strict):
    """One shell command and the rules for when and how it runs."""

    id: str = Field(pattern=ID_PATTERN, description="unique within the workflow")
    command: str = Field(min_length=1, description="run with `sh -c`")
    depends: Annotated[
        list[str],
        WithJsonSchema(
            {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
        ),
    ] = Field(default_factory=list, description="ids of the upstream tasks")
    # None means "inherit from the workflow's defaults" (see Workflow.resolved_tasks).
    trigger_rule: TriggerRule | None = Field(default=None, description="inherits defaults")
    retries: int | None = Field(default=None, ge=0, le=100, description="extra attempts")
    retry_delay: NonNegativeDuration | None = Field(default=None, description="before 1st retry")
    retry_backoff: float | None = Field(
        default=None, ge=1.0, le=100.0, description="delay factor per retry"
    )
    max_retry_delay: PositiveDuration | None = Field(default=None, description="delay cap")
    timeout: PositiveDuration | None = Field(default=None, description="limit of one attempt")
    executor: Executor | None = Field(default=None, description="lambda or fargate")
    cpu: int | None = Field(default=None, gt=0, description="Fargate CPU units")
    memory: int | None = Field(default=None, gt=0, description="memory in MiB")
    priority: int | None = Field(
        default=None, ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="higher runs first"
    )
    env: TextMap = Field(default_factory=dict, description="added to the defaults' env")
    secrets: CheckedSecrets = Field(
        default_factory=dict,
        description='environment variable → "ssm:/name" or "secretsmanager:name", over the '
        "workflow's secrets; resolved when the attempt starts",
    )
    role: RoleName = Field(
        default=None,
        description="IAM role (ARN or name) the command runs as on AWS, over the workflow's",
    )
    compensate: str | None = Field(
        default=None, min_length=1, description="undo command run if the workflow fails (saga)"
    )

    @field_validator("command", "compensate")
    @classmethod
    def _command_text(cls, value: str | None) -> str | None:
        return no_nul(value)

    @field_validator("depends", mode="before")
    @classmethod
    def _single_dependency_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("env", mode="before")
    @classmethod
    def _env_values_as_text(cls, value: Any) -> Any:
        return text_values(value)

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        return checked_env(value)


class ResolvedTask(_Strict):
    """A task with the workflow defaults applied: what the engine executes."""

    id: str
    command: str
    depends: list[str]
    trigger_rule: TriggerRule
    retries: int
    retry_delay: float
    retry_backoff: float
    max_retry_delay: float
    timeout: float
    executor: Executor
    cpu: int
    memory: int
    priority: int
    env: dict[str, str]
    compensate: str | None
    secrets: dict[str, str] = Field(default_factory=dict)
    """Environment variable → secret reference, resolved by the executor at attempt start."""
    role: str | None = None
    """The IAM role the command runs as on AWS; None: the stack's default task role."""

    def retry_delay_for(self, attempt: int) -> float:
        """Seconds to wait before the attempt after `attempt` (1-based): delay * backoff**(n-1)."""
        delay = self.retry_delay * (self.retry_backoff ** max(attempt - 1, 0))
        return min(delay, self.max_retry_delay)


class Workflow(_Strict):
    """A workflow file's content."""

    id: str = Field(pattern=ID_PATTERN, description="unique name of the workflow")
    description: str = ""
    schedule: str | None = Field(
        default=None, description='5-field cron ("0 2 * * *") or @hourly, @daily, ...'
    )
    timezone: str = Field(default="UTC", description="IANA time zone the schedule is read in")
    catchup: bool = Field(default=False, description="run the slots missed while paused")
    max_active_runs: int = Field(default=1, ge=1, le=1000)
    timeout: PositiveDuration | None = Field(
        default=None,
        description="limit of a whole run, from when it is created (and again from each "
        "retry, rerun or mark that redrives it): past it the run fails and its running tasks "
        "are cancelled",
    )
    concurrency: int | None = Field(
        default=None, ge=1, le=10_000, description="most tasks of one run running at once"
    )
    params: Annotated[dict[str, str], PARAMS_SCHEMA] = Field(
        default_factory=dict,
        description="exposed to tasks as STRATOFLOW_PARAM_<NAME>: a default value, or "
        "{default: ..., secret: true}",
    )
    secret_params: list[str] = Field(
        default_factory=list,
        description="params shown as *** after the trigger (written `secret: true` in params)",
    )
    defaults: TaskDefaults = Field(default_factory=TaskDefaults)
    secrets: CheckedSecrets = Field(
        default_factory=dict,
        description='environment variable → "ssm:/name" or "secretsmanager:name", for every task',
    )
    role: RoleName = Field(
        default=None, description="IAM role (ARN or name) every task's command runs as on AWS"
    )
    tasks: list[Task] = Field(min_length=1, max_length=MAX_TASKS)
    format_version: Literal[1] = 1
    schema_ref: str | None = Field(
        default=None, alias="$schema", description="editor hint; ignored by the engine"
    )

    @model_validator(mode="before")
    @classmethod
    def _secret_params(cls, data: Any) -> Any:
        # `NAME: {secret: true}` becomes a default ("") in params and a name in
        # secret_params, so that everything reading params keeps reading name → default.
        if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
            return data
        params = data["params"]
        if not any(isinstance(v, dict) for v in params.values()):
            return data
        plain: dict[Any, Any] = {}
        secret = list(data.get("secret_params") or [])
        for name, value in params.items():
            if not isinstance(value, dict):
                plain[name] = value
                continue
            where = f"params.{name}"
            unknown = sorted(set(value) - {"default", "secret"}, key=str)
            if unknown:
                raise ValueError(
                    f"{where}: unknown field {quoted(unknown[0])}; a param is a default value "
                    "or {default: ..., secret: true|false}"
                )
            flag = value.get("secret", False)
            if not isinstance(flag, bool):
                raise ValueError(f"{where}.secret: must be true or false, got {quoted(flag)}")
            if flag and value.get("default") not in (None, ""):
                raise ValueError(
                    f"{where}: a secret param takes no default (the workflow file is stored "
                    "and shown); give its value when triggering the run, or use `secrets:` "
                    "for a value kept in SSM or Secrets Manager"
                )
            plain[name] = "" if value.get("default") is None else value["default"]
            if flag and name not in secret:
                secret.append(name)
        return {**data, "params": plain, "secret_params": secret}

    @field_validator("params", mode="before")
    @classmethod
    def _params_as_text(cls, value: Any) -> Any:
        return text_values(value)

    @field_validator("params")
    @classmethod
    def _param_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            # fullmatch: re.match with "$" would let "name\n" through.
            if not re.fullmatch(PARAM_NAME_PATTERN, name):
                raise ValueError(
                    f"param name {quoted(name)} must match {PARAM_NAME_PATTERN} "
                    "(it becomes the environment variable STRATOFLOW_PARAM_<NAME>)"
                )
        check_param_names_distinct(value)
        check_params_size(value)
        return value

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from stratoflow.core.cron import validate_schedule

        return validate_schedule(value)

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        from stratoflow.core.cron import validate_timezone

        return validate_timezone(value)

    @model_validator(mode="after")
    def _graph_is_sound(self) -> Workflow:
        from stratoflow.core.dag import check_graph

        check_graph(self.tasks)
        for name in self.secret_params:
            if name not in self.params:
                raise ValueError(
                    f"secret_params: {quoted(name)} is not one of the params "
                    f"({', '.join(self.params) or 'none declared'})"
                )
        for name in self.secrets:
            if name in self.defaults.env:
                raise ValueError(
                    f"secrets.{name}: {name} is also set in defaults.env; a variable is "
                    "either a plain value (env) or a secret, not both"
                )
        d = self.defaults
        for index, task in enumerate(self.tasks):
            executor = task.executor or d.executor
            timeout = d.timeout if task.timeout is None else task.timeout
            clash = []
            if task.secrets or self.secrets:  # sets for every task cost a 20,000-task load
                clash = sorted(set(task.secrets) & (set(d.env) | set(task.env)))
                clash += sorted(set(self.secrets) & set(task.env))
            if clash:
                raise ValueError(
                    f'tasks[{index}] (id "{task.id}").secrets: {clash[0]} is also set in env; '
                    "a variable is either a plain value (env) or a secret, not both"
                )
            if executor is Executor.LAMBDA and timeout > LAMBDA_MAX_TIMEOUT_SECONDS:
                raise ValueError(
                    f'tasks[{index}] (id "{task.id}").timeout: {timeout:g} s is more than '
                    f"a Lambda executor allows ({LAMBDA_MAX_TIMEOUT_SECONDS:g} s); set "
                    "`executor: fargate` for long tasks"
                )
        return self

    def resolved_tasks(self) -> list[ResolvedTask]:
        """Every task with the defaults applied, in file order."""
        d = self.defaults
        out: list[ResolvedTask] = []
        for t in self.tasks:
            out.append(
                ResolvedTask(
                    id=t.id,
                    command=t.command,
                    depends=list(t.depends),
                    trigger_rule=t.trigger_rule or d.trigger_rule,
                    retries=d.retries if t.retries is None else t.retries,
                    retry_delay=d.retry_delay if t.retry_delay is None else t.retry_delay,
                    retry_backoff=d.retry_backoff if t.retry_backoff is None else t.retry_backoff,
                    max_retry_delay=(
                        d.max_retry_delay if t.max_retry_delay is None else t.max_retry_delay
                    ),
                    timeout=d.timeout if t.timeout is None else t.timeout,
                    executor=t.executor or d.executor,
                    cpu=d.cpu if t.cpu is None else t.cpu,
                    memory=d.memory if t.memory is None else t.memory,
                    priority=d.priority if t.priority is None else t.priority,
                    env={**d.env, **t.env},
                    compensate=t.compensate,
                    secrets={**self.secrets, **t.secrets},
                    role=t.role or self.role,
                )
            )
        return out
