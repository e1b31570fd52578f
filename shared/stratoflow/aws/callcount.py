"""Counts AWS API calls by service and operation, through botocore's event hooks.

Counting at `before-call` sees each call the code makes exactly once, as AWS would bill it,
whatever endpoint answers (the emulator, LocalStack or AWS); botocore's own retries of one
call are not separate calls of the code and are not counted.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any


class ApiCallCounter:
    """Attach to boto3 clients; read `counts[(service, operation)]`."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call.*.*", self._count)

    def detach(self, client: Any) -> None:
        client.meta.events.unregister("before-call.*.*", self._count)

    @contextlib.contextmanager
    def attached(self, *clients: Any) -> Iterator[ApiCallCounter]:
        """Count the calls of `clients` within the block."""
        for client in clients:
            self.attach(client)
        try:
            yield self
        finally:
            for client in clients:
                self.detach(client)

    def _count(self, event_name: str, **kwargs: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        with self._lock:
            self.counts[(service, operation)] += 1

    def total(self, service: str | None = None) -> int:
        with self._lock:
            return sum(n for (svc, _), n in self.counts.items() if service in (None, svc))

    def snapshot(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter(self.counts)

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
