"""The embedded AWS emulator (moto server on a loopback port) and resource provisioning.

Provisioning uses the definitions in `stratoflow.config`, the same ones infra/ deploys, and
works against any endpoint: the embedded emulator, LocalStack, or a real account.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from stratoflow.aws.clients import AwsClients
from stratoflow.config import (
    TABLE_ATTRIBUTES,
    TABLE_KEY_SCHEMA,
    QueueSpec,
    Resources,
    Settings,
)

LOCAL_REGION = "us-east-1"
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _speed_up_moto_sqs() -> None:
    """Make moto's queue attributes lazy.

    moto computes every queue attribute, including three O(queue depth) message counts,
    whenever any single attribute is read, and it reads one on every send and on every
    received message; SQS in moto is therefore quadratic in queue depth (a receive from a
    500-message queue took 0.7 s here). Reading only the attribute asked for restores
    linear cost without changing any answer.
    """
    from moto.core.utils import camelcase_to_underscores
    from moto.sqs.models import Queue

    if getattr(Queue, "_stratoflow_lazy", False):
        return

    class _LazyAttributes(Mapping[str, Any]):
        def __init__(self, queue: Queue) -> None:
            self._queue = queue
            names = list(queue.BASE_ATTRIBUTES)
            if queue.fifo_queue:
                names += queue.FIFO_ATTRIBUTES
            if queue.kms_master_key_id:
                names += queue.KMS_ATTRIBUTES
            if queue.policy:
                names.append("Policy")
            if queue.redrive_policy:
                names.append("RedrivePolicy")
            self._names = names

        def __getitem__(self, name: str) -> Any:
            if name not in self._names:
                raise KeyError(name)
            q = self._queue
            if name == "Policy":
                return q.policy
            if name == "RedrivePolicy":
                return json.dumps(q.redrive_policy)
            value = getattr(q, camelcase_to_underscores(name))
            return str(value).lower() if isinstance(value, bool) else value

        def __iter__(self) -> Iterator[str]:
            return iter(self._names)

        def __len__(self) -> int:
            return len(self._names)

    def attributes(self: Queue) -> Mapping[str, Any]:
        return _LazyAttributes(self)

    Queue.attributes = property(attributes)  # type: ignore[assignment,method-assign]
    Queue._stratoflow_lazy = True  # type: ignore[attr-defined]


class EmbeddedEmulator:
    """A moto server on 127.0.0.1 and a free port, for local runs and tests."""

    def __init__(self, port: int = 0) -> None:
        from moto.server import ThreadedMotoServer

        _speed_up_moto_sqs()
        # The request log of moto's werkzeug server would drown the CLI's output.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.endpoint_url = ""

    def start(self) -> EmbeddedEmulator:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> EmbeddedEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class ProvisionedQueues:
    task_queue_url: str
    task_dlq_url: str
    completion_queue_url: str
    completion_dlq_url: str


def provision(
    clients: AwsClients, resources: Resources, settings_base: Settings | None = None
) -> Settings:
    """Create (or find) the table, queues with their DLQs, and bucket; return settings."""
    db = clients.dynamodb
    existing = db.list_tables().get("TableNames", [])
    if resources.table not in existing:
        db.create_table(
            TableName=resources.table,
            KeySchema=TABLE_KEY_SCHEMA,
            AttributeDefinitions=TABLE_ATTRIBUTES,
            BillingMode="PAY_PER_REQUEST",
        )
    task_url, _ = _queue_with_dlq(clients, resources.task_queue)
    completion_url, _ = _queue_with_dlq(clients, resources.completion_queue)
    s3 = clients.s3
    try:
        s3.head_bucket(Bucket=resources.bucket)
    except Exception:  # noqa: BLE001 - any error means "create it"
        s3.create_bucket(Bucket=resources.bucket)
    base = settings_base or Settings(table=resources.table)
    return Settings(
        table=resources.table,
        task_queue_url=task_url,
        completion_queue_url=completion_url,
        bucket=resources.bucket,
        event_bus=base.event_bus,
        endpoint_url=clients.endpoint_url,
        region=clients.region,
        log_dir=base.log_dir,
    )


def _queue_with_dlq(clients: AwsClients, spec: QueueSpec) -> tuple[str, str]:
    sqs = clients.sqs
    dlq_url = sqs.create_queue(QueueName=spec.dlq_name)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    attributes = {
        **spec.attributes(),
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(spec.max_receive_count)}
        ),
    }
    url = sqs.create_queue(QueueName=spec.name, Attributes=attributes)["QueueUrl"]
    return url, dlq_url
