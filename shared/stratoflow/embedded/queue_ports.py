"""The ports' adapters on the embedded queues: `TaskQueue` and `CompletionQueue` on an
`EmbeddedSqs` queue (`stratoflow.embedded.queues`, which they are importable from too)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from stratoflow.core.records import AttemptReport, TaskMessage
from stratoflow.embedded.sqs_model import queue_name
from stratoflow.ports import RunCommand

if TYPE_CHECKING:
    from stratoflow.embedded.queues import EmbeddedSqs


class EmbeddedTaskQueue:
    """`TaskQueue` on an `EmbeddedSqs` queue: every call is one transaction."""

    def __init__(self, sqs: EmbeddedSqs, queue_url: str) -> None:
        self._sqs = sqs
        self.queue_url = queue_url
        self._queue = queue_name(queue_url)

    def send_tasks(self, messages: Iterable[TaskMessage], delay_seconds: int = 0) -> None:
        """Enqueue task attempts (any number, one transaction; delay clamped to 0-900 s)."""
        self._sqs.enqueue(self._queue, (m.to_json() for m in messages), delay_seconds)


class EmbeddedCompletionQueue:
    """`CompletionQueue` on an `EmbeddedSqs` queue: every call is one transaction."""

    def __init__(self, sqs: EmbeddedSqs, queue_url: str) -> None:
        self._sqs = sqs
        self.queue_url = queue_url
        self._queue = queue_name(queue_url)

    def send_reports(self, reports: Iterable[AttemptReport]) -> None:
        """Report finished attempts (any number, one transaction)."""
        self._sqs.enqueue(self._queue, (r.to_json() for r in reports))

    def send_commands(self, commands: Iterable[RunCommand]) -> None:
        """Hand work on runs to the completion handler (one transaction)."""
        self._sqs.enqueue(self._queue, (c.to_json() for c in commands))
