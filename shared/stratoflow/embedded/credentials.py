"""Commands on a laptop run as the user (the embedded engine's `CredentialSource`)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from stratoflow.embedded.secrets import ENV_SECRET_PREFIX
from stratoflow.ports import CommandIdentity

log = logging.getLogger(__name__)


class LocalCredentials:
    """`CredentialSource` of the local engines: the engine's own environment, as the user
    started it, without the `STRATOFLOW_SECRET_*` variables (a command gets only the
    secrets its task declares). No role is assumed: a task's `role` is for Lambda and
    Fargate, and is logged as ignored, once per role."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def environment(self, identity: CommandIdentity) -> dict[str, str]:
        if identity.role is not None:
            with self._lock:
                first = identity.role not in self._warned
                self._warned.add(identity.role)
            if first:
                log.warning(
                    "role %s is ignored locally: commands run with your own environment "
                    "and credentials (the role is assumed on Lambda and Fargate only)",
                    identity.role,
                )
        environ = os.environ if self._environ is None else self._environ
        return {k: v for k, v in environ.items() if not k.startswith(ENV_SECRET_PREFIX)}
