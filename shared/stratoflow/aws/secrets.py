"""Secrets from SSM Parameter Store and Secrets Manager, resolved by the executor when an
attempt starts (`secrets:` in a workflow file). The values go to the command's
environment only: never to a log, a report or a stored item (invariant 12)."""

from __future__ import annotations

import json
from typing import Any

from stratoflow.ports import SecretUnavailable

_MISSING = {"ParameterNotFound", "ParameterVersionNotFound", "ResourceNotFoundException"}
_DENIED = {"AccessDeniedException", "AccessDenied", "KMSAccessDeniedException"}


class AwsSecretSource:
    """`SecretSource`: `ssm:<name>` with GetParameter (WithDecryption), and
    `secretsmanager:<id>[#key]` with GetSecretValue (`#key` picks one key of a JSON
    secret), with the executor's credentials."""

    def __init__(self, clients: Any) -> None:
        self._clients = clients

    def resolve(self, name: str, reference: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        scheme, _, ref = reference.partition(":")
        try:
            if scheme == "ssm":
                answer = self._clients.client("ssm").get_parameter(Name=ref, WithDecryption=True)
                return str(answer["Parameter"]["Value"])
            if scheme == "secretsmanager":
                secret_id, _, key = ref.partition("#")
                answer = self._clients.client("secretsmanager").get_secret_value(SecretId=secret_id)
                return _pick(name, reference, answer.get("SecretString"), key)
        except ClientError as err:
            raise SecretUnavailable(_explain(name, reference, err)) from None
        except BotoCoreError as err:
            raise SecretUnavailable(f"secret {name} ({reference}): {err}") from None
        raise SecretUnavailable(f"secret {name} ({reference}): unknown scheme {scheme!r}")


def _pick(name: str, reference: str, text: str | None, key: str) -> str:
    if text is None:
        raise SecretUnavailable(
            f"secret {name} ({reference}) is binary; only text secrets can be environment variables"
        )
    if not key:
        return text
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise SecretUnavailable(
            f"secret {name} ({reference}): #{key} asks for a key, but the secret is not a "
            "JSON object"
        )
    if key not in data:
        raise SecretUnavailable(f"secret {name} ({reference}): the JSON secret has no key {key!r}")
    value = data[key]
    return value if isinstance(value, str) else json.dumps(value)


def _explain(name: str, reference: str, err: Any) -> str:
    code = err.response.get("Error", {}).get("Code", "error")
    if code in _MISSING:
        return f"secret {name} ({reference}) does not exist ({code})"
    if code in _DENIED:
        return (
            f"secret {name} ({reference}): the executor may not read it ({code}); the stack "
            "grants read access only under its secret prefixes (docs/security.md)"
        )
    # AWS error messages name the resource, never its value.
    message = err.response.get("Error", {}).get("Message", "")
    return f"secret {name} ({reference}) could not be read: {code}: {message}"
