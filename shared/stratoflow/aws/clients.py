"""boto3 clients, created lazily and once per process.

Creating a client costs milliseconds and, at import time, would escape moto in tests and
slow every cold start; so clients are built on first use and cached here.
"""

from __future__ import annotations

import threading
from typing import Any

# boto3 is imported when a first client is built, not with this module: the embedded
# engine never builds one, and importing boto3 is a sixth of a local command's start-up.
_CONFIG_OPTIONS: dict[str, Any] = {
    "retries": {"max_attempts": 8, "mode": "adaptive"},
    # The local runtime and Lambda's batch handlers share one client across threads.
    "max_pool_connections": 50,
    "connect_timeout": 5,
    "read_timeout": 30,
}


class AwsClients:
    """One lazily-built client per service for a given endpoint and region."""

    def __init__(self, region: str = "us-east-1", endpoint_url: str | None = None) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._session: Any = None

    def client(self, service: str) -> Any:
        found = self._clients.get(service)
        if found is not None:
            return found
        with self._lock:
            if service not in self._clients:
                import boto3.session
                from botocore.config import Config

                if self._session is None:
                    self._session = boto3.session.Session()
                kwargs: dict[str, Any] = {
                    "region_name": self.region,
                    "config": Config(**_CONFIG_OPTIONS),
                }
                if self.endpoint_url:
                    kwargs["endpoint_url"] = self.endpoint_url
                self._clients[service] = self._session.client(service, **kwargs)
            return self._clients[service]

    @property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    @property
    def sqs(self) -> Any:
        return self.client("sqs")

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def events(self) -> Any:
        return self.client("events")
