"""A command's own credentials on Lambda and Fargate (invariant 12).

The executor (the Lambda function's role, or the Fargate task role) may claim attempts,
report them, read definitions and secrets: a command holding those credentials could forge
reports or change other runs' state. So a command never inherits the executor's
environment. `AssumedRoleCredentials` builds it from scratch — a few harmless variables
(PATH, HOME, locale, time zone, library path) — and adds the temporary credentials of the
task's role (its `role`, or the stack's default task role), obtained with sts:AssumeRole
for that attempt alone.

A child process can also read its parent's environment from /proc/<pid>/environ when both
run as one user, and the executor's holds its credentials (Lambda) or the URI of the
container-credentials endpoint (Fargate). `seal_process` makes the executor's process
non-dumpable, which puts its /proc files out of a same-user process's reach.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from typing import Any

from stratoflow.ports import CommandIdentity, CredentialsUnavailable

log = logging.getLogger(__name__)

STS_MIN_DURATION_SECONDS = 900
ROLE_CHAINING_MAX_SECONDS = 3600
"""An executor's own credentials are a role session, so assuming the task role is role
chaining, which STS limits to one hour whatever the role's MaxSessionDuration."""

KEPT_VARIABLES = frozenset(
    {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "USER", "HOSTNAME"}
)
"""What a command keeps of the executor's environment: where programs and libraries are,
the locale and time zone. Nothing else — not AWS_* (the executor's credentials),
AWS_CONTAINER_CREDENTIALS_* (Fargate's credential endpoint), AWS_LAMBDA_* (the runtime
API), ECS_* (task metadata) nor STRATOFLOW_* (the engine's resources)."""
_ROLE_ARN = re.compile(r"arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):role/.+")


def command_base_environment(environ: Mapping[str, str], region: str) -> dict[str, str]:
    """The environment a command starts from on AWS: KEPT_VARIABLES and LC_* of `environ`,
    a HOME it can write (Lambda sets none; only /tmp is writable there), and the region."""
    env = {k: v for k, v in environ.items() if k in KEPT_VARIABLES or k.startswith("LC_")}
    env.setdefault("HOME", tempfile.gettempdir())
    env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = region
    return env


class AssumedRoleCredentials:
    """`CredentialSource` for Lambda and Fargate: a clean environment with the credentials
    of the task's role, assumed for the attempt (session named after run, task and
    attempt; as long as the attempt may run, within STS's 15 minutes to one hour)."""

    def __init__(
        self,
        clients: Any,
        default_role_arn: str,
        region: str,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        match = _ROLE_ARN.fullmatch(default_role_arn)
        if match is None:
            raise ValueError(f"the default task role must be a role ARN, got {default_role_arn!r}")
        self._clients = clients
        self._default = default_role_arn
        self._partition = match["partition"]
        self._account = match["account"]
        self._region = region
        self._environ = environ

    def role_arn(self, role: str | None) -> str:
        """The ARN of a task's `role`: as given, a name in the default role's account, or the
        default task role."""
        if role is None:
            return self._default
        if role.startswith("arn:"):
            return role
        return f"arn:{self._partition}:iam::{self._account}:role/{role}"

    def environment(self, identity: CommandIdentity) -> dict[str, str]:
        from botocore.exceptions import BotoCoreError, ClientError

        arn = self.role_arn(identity.role)
        duration = min(
            max(identity.duration_seconds, STS_MIN_DURATION_SECONDS), ROLE_CHAINING_MAX_SECONDS
        )
        try:
            answer = self._clients.client("sts").assume_role(
                RoleArn=arn, RoleSessionName=identity.session_name, DurationSeconds=duration
            )
        except ClientError as err:
            error = err.response.get("Error", {})
            raise CredentialsUnavailable(
                f"cannot assume the task role {arn}: {error.get('Code', 'error')}: "
                f"{error.get('Message', '')}. The role must trust the executor's role and the "
                "Fargate task role, and its name must start with the stack's task-role "
                "prefix or it must be tagged stratoflow:task-role=true (docs/security.md)"
            ) from None
        except BotoCoreError as err:
            raise CredentialsUnavailable(f"cannot assume the task role {arn}: {err}") from None
        credentials = answer["Credentials"]
        env = command_base_environment(
            os.environ if self._environ is None else self._environ, self._region
        )
        env["AWS_ACCESS_KEY_ID"] = credentials["AccessKeyId"]
        env["AWS_SECRET_ACCESS_KEY"] = credentials["SecretAccessKey"]
        env["AWS_SESSION_TOKEN"] = credentials["SessionToken"]
        return env


class NoTaskRole:
    """`CredentialSource` of an executor on AWS that was given no default task role: every
    command is refused rather than run with the executor's own credentials."""

    def environment(self, identity: CommandIdentity) -> dict[str, str]:
        raise CredentialsUnavailable(
            "this executor has no task role configured (STRATOFLOW_TASK_ROLE_ARN is not "
            "set), and a command never runs with the executor's own credentials; deploy "
            "the stack again so that the executor knows its default task role"
        )


PR_SET_DUMPABLE = 4


def seal_process() -> bool:
    """Make this process non-dumpable (prctl PR_SET_DUMPABLE 0): its /proc/<pid>/environ and
    memory can then not be read by the commands it starts, although they run as the same
    user. Returns whether it worked (Linux only); never raises."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        return bool(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        log.warning("could not make the executor's process non-dumpable")
        return False
