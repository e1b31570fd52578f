"""The checks a workflow's values pass beyond their types: params (names, case, size, and
a run's params), environment variable and secret names, secret references, IAM roles,
command text; with the patterns and limits they check against.

Each raises ValueError with a message naming the value; `stratoflow.core.model` calls them
from its validators, the API checks a run's params with `check_run_params`.
"""

from __future__ import annotations

import re
from typing import Any

from stratoflow.core.field_types import quoted

PARAM_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
MAX_PARAMS_BYTES = 32 * 1024
"""Params travel in every task message and the run item: SQS takes 256 KiB a message."""
ENV_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,255}"
SECRET_SCHEMES = {
    "ssm": r"[A-Za-z0-9_./-]{1,2048}(:[A-Za-z0-9_.-]{1,100})?",
    "secretsmanager": r"[A-Za-z0-9/_+=.@:-]{1,2048}(#[^#\s]{1,256})?",
}
"""Where a secret may come from, and what may follow the scheme: an SSM parameter name
(optionally `:version` or `:label`), a Secrets Manager secret name or ARN (optionally
`#key` to pick one key of a JSON secret)."""
RESERVED_ENV_NAMES = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    }
)
"""Set by the executor (the task role's credentials): a secret may not take these names."""
ROLE_PATTERN = (
    r"(arn:aws[a-z-]*:iam::\d{12}:role/([\x21-\x7e]{0,510}/)?[A-Za-z0-9+=,.@_-]{1,64})"
    r"|[A-Za-z0-9+=,.@_-]{1,64}"
)
"""An IAM role's ARN, or its name in the stack's account."""


def check_params_size(params: dict[str, str]) -> None:
    """Params ride in every task message (invariant 7): keep them small."""
    size = sum(len(k.encode()) + len(v.encode()) for k, v in params.items())
    if size > MAX_PARAMS_BYTES:
        raise ValueError(
            f"params take {size} bytes, more than {MAX_PARAMS_BYTES}; pass large inputs "
            "as a file or an S3 key instead"
        )


def check_run_params(params: Any) -> dict[str, str]:
    """Params given to one run (API body, `--param`): names as in a workflow file's
    `params`, values strings, within the size limit. Raises ValueError naming the problem."""
    if not isinstance(params, dict):
        raise ValueError(f"params must be an object of strings, got {type(params).__name__}")
    for name, value in params.items():
        if not isinstance(name, str) or not re.fullmatch(PARAM_NAME_PATTERN, name):
            raise ValueError(
                f"param name {name!r} must match {PARAM_NAME_PATTERN} "
                "(it becomes the environment variable STRATOFLOW_PARAM_<NAME>)"
            )
        if not isinstance(value, str):
            raise ValueError(f"param {name!r} must be a string, got {value!r}")
        if "\0" in value:
            raise ValueError(f"param {name!r} contains a NUL character")
    check_param_names_distinct(params)
    check_params_size(params)
    return params


def check_param_names_distinct(names: Any) -> None:
    """Param names that differ only in case would become one STRATOFLOW_PARAM_ variable."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name.upper(), name)
        if other != name:
            raise ValueError(
                f"params {other!r} and {name!r} differ only in case: both would be "
                f"STRATOFLOW_PARAM_{name.upper()}"
            )


def checked_env(value: dict[str, str]) -> dict[str, str]:
    """`value` (environment variables), if every name is one and no value holds a NUL."""
    for name, text in value.items():
        if not re.fullmatch(ENV_NAME_PATTERN, name):
            raise ValueError(
                f"environment variable name {name!r} must be letters, digits and _, "
                "not starting with a digit"
            )
        if "\0" in text:
            raise ValueError(f"the value of {name!r} contains a NUL character")
    return value


def checked_secrets(value: dict[str, str]) -> dict[str, str]:
    """`value` (variable → secret reference), if every name may be set and every reference
    names an SSM parameter or a Secrets Manager secret."""
    for name, reference in value.items():
        if not re.fullmatch(ENV_NAME_PATTERN, name):
            raise ValueError(
                f"secret name {quoted(name)} must be an environment variable name: letters, "
                "digits and _, not starting with a digit"
            )
        if name in RESERVED_ENV_NAMES or name.startswith("STRATOFLOW_"):
            raise ValueError(
                f"secret name {quoted(name)} is set by the engine itself (the task role's "
                "credentials and STRATOFLOW_* variables); choose another name"
            )
        if not isinstance(reference, str):
            raise ValueError(f'secret {name} must be a string like "ssm:/path", got {reference!r}')
        scheme, _, rest = reference.partition(":")
        if scheme not in SECRET_SCHEMES:
            raise ValueError(
                f"secret {name}: {quoted(reference)} must start with "
                f'{" or ".join(s + ":" for s in SECRET_SCHEMES)} (e.g. "ssm:/stratoflow/db/'
                'password" or "secretsmanager:stratoflow/api-key")'
            )
        if not re.fullmatch(SECRET_SCHEMES[scheme], rest):
            raise ValueError(
                f"secret {name}: {quoted(reference)} is not a valid "
                f"{'SSM parameter name' if scheme == 'ssm' else 'Secrets Manager secret id'} "
                f"after {scheme}:"
            )
    return value


def checked_role(value: str | None) -> str | None:
    """`value`, if it is an IAM role's ARN or name (or None)."""
    if value is not None and not re.fullmatch(ROLE_PATTERN, value):
        raise ValueError(
            f"role {quoted(value)} must be an IAM role ARN "
            '("arn:aws:iam::123456789012:role/stratoflow-task-etl") or a role name'
        )
    return value


def no_nul(value: str | None) -> str | None:
    """`value`, if it holds no NUL character (a shell command cannot)."""
    if value is not None and "\0" in value:
        raise ValueError("contains a NUL character, which no shell command can hold")
    return value
