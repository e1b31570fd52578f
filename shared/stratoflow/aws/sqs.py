"""SQS adapters for the task and completion queues: batched sends, nothing else.

Receiving and deleting belong to Lambda's event-source mapping (or, locally, to the pump
in `stratoflow.local`), never to the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

from stratoflow.aws.clients import AwsClients
from stratoflow.core.records import AttemptReport, TaskMessage
from stratoflow.ports import RunCommand

SQS_BATCH = 10
"""Entries per SendMessageBatch: SQS's limit, and one billed request for all ten."""
SQS_MAX_DELAY = 900


class SendFailed(RuntimeError):
    """SQS refused some entries of a batch even after retrying them."""


class SqsSender:
    """Sends JSON bodies to one queue in batches of ten, re-sending entries SQS rejects."""

    def __init__(self, clients: AwsClients, queue_url: str) -> None:
        self._clients = clients
        self.queue_url = queue_url

    def send(self, bodies: Iterable[str], delay_seconds: int = 0) -> None:
        it = iter(bodies)
        delay = max(0, min(int(delay_seconds), SQS_MAX_DELAY))
        while batch := list(islice(it, SQS_BATCH)):
            entries: list[dict[str, Any]] = [
                {"Id": str(i), "MessageBody": body, **({"DelaySeconds": delay} if delay else {})}
                for i, body in enumerate(batch)
            ]
            for _ in range(5):
                resp = self._clients.sqs.send_message_batch(
                    QueueUrl=self.queue_url, Entries=entries
                )
                failed = {f["Id"] for f in resp.get("Failed", []) if not f.get("SenderFault")}
                sender_faults = [f for f in resp.get("Failed", []) if f.get("SenderFault")]
                if sender_faults:
                    raise SendFailed(f"SQS rejected messages for {self.queue_url}: {sender_faults}")
                if not failed:
                    break
                entries = [e for e in entries if e["Id"] in failed]
            else:
                raise SendFailed(f"SQS kept failing {len(entries)} messages to {self.queue_url}")


class SqsTaskQueue:
    """`TaskQueue`: task attempts to the task queue."""

    def __init__(self, clients: AwsClients, queue_url: str) -> None:
        self._sender = SqsSender(clients, queue_url)

    def send_tasks(self, messages: Iterable[TaskMessage], delay_seconds: int = 0) -> None:
        self._sender.send((m.to_json() for m in messages), delay_seconds)


class SqsCompletionQueue:
    """`CompletionQueue`: attempt reports to the completion queue."""

    def __init__(self, clients: AwsClients, queue_url: str) -> None:
        self._sender = SqsSender(clients, queue_url)

    def send_reports(self, reports: Iterable[AttemptReport]) -> None:
        self._sender.send(r.to_json() for r in reports)

    def send_commands(self, commands: Iterable[RunCommand]) -> None:
        self._sender.send(c.to_json() for c in commands)
