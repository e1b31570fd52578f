"""Secrets on a laptop: the embedded engine's `SecretSource`.

A task's secret `DB_PASSWORD: "ssm:/stratoflow/db/password"` resolves, in this order, to
the environment variable `STRATOFLOW_SECRET_DB_PASSWORD` of the engine's process, or to the
entry `"ssm:/stratoflow/db/password"` of `secrets.json` in the engine's home, a JSON object
of reference → value that only its owner may read (mode 0600, checked). Nothing is asked of
AWS: local runs need no account.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from stratoflow.ports import SecretUnavailable

ENV_SECRET_PREFIX = "STRATOFLOW_SECRET_"
SECRETS_FILE = "secrets.json"


class LocalSecretSource:
    """`SecretSource` from `STRATOFLOW_SECRET_<NAME>` or `<home>/secrets.json`."""

    def __init__(self, home: str | Path, environ: Mapping[str, str] | None = None) -> None:
        self.path = Path(home) / SECRETS_FILE
        self._environ = environ

    def resolve(self, name: str, reference: str) -> str:
        environ = os.environ if self._environ is None else self._environ
        value = environ.get(ENV_SECRET_PREFIX + name)
        if value is not None:
            return value
        found = self._from_file(name, reference)
        if found is not None:
            return found
        raise SecretUnavailable(
            f"secret {name} ({reference}) is not set locally: set the environment variable "
            f"{ENV_SECRET_PREFIX}{name} for the engine, or add {json.dumps(reference)}: "
            f'"..." to {self.path} (mode 0600)'
        )

    def _from_file(self, name: str, reference: str) -> str | None:
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            return None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretUnavailable(
                f"secret {name} ({reference}): {self.path} may be read by others (mode "
                f"{stat.S_IMODE(mode):04o}); make it the owner's alone: chmod 600 {self.path}"
            )
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            # The decoder's message gives a position, never the file's text.
            raise SecretUnavailable(
                f"secret {name} ({reference}): cannot read {self.path}: {err}"
            ) from None
        if not isinstance(data, dict):
            raise SecretUnavailable(
                f"secret {name} ({reference}): {self.path} must hold a JSON object of "
                "reference → value"
            )
        value = data.get(reference)
        if value is not None and not isinstance(value, str):
            raise SecretUnavailable(
                f"secret {name} ({reference}): its entry in {self.path} must be a string"
            )
        return value
