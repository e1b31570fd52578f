"""One embedded engine's resources: its database, queues and object store, in one home.

`EmbeddedEngine` stands where `AwsClients` stands for the AWS adapters: the local runtime
receives from `engine.sqs` and the loader reads uploads from `engine.s3` with the same calls
it makes to SQS and S3, so the handlers and the runtime's event-source mappings run
unchanged on either.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stratoflow.config import Resources, Settings
from stratoflow.embedded.db import Database
from stratoflow.embedded.objects import EmbeddedS3
from stratoflow.embedded.queues import EmbeddedSqs
from stratoflow.embedded.runs import SqliteRunStore

REGION = "us-east-1"
ACCOUNT = "000000000000"
ENGINE_OWNER_PREFIX = "engine-"
"""How the attempts a `local up` (the default channel's consumer) claims are marked."""


class EmbeddedEngine:
    """The database, queues and objects of the engine whose home is `home`.

    `channel` partitions the queues between processes that share the home: each
    `stratoflow run` process sends and receives on a channel of its own, `local up` on the
    default one (which adopts the channels of processes that died). `owner` names this
    process in the attempts it claims: its channel, or for `local up` an id of its own
    (`ENGINE_OWNER_PREFIX`…), so that the next engine can tell which running attempts died
    with which process.
    """

    region = REGION
    endpoint_url: str | None = None

    def __init__(self, home: str | Path, channel: str = "", *, own_channel: bool = True) -> None:
        self.home = Path(home)
        self.db = Database.in_home(self.home)
        self.channel = channel
        self.owner = channel or f"{ENGINE_OWNER_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
        self.sqs = EmbeddedSqs(self.db, channel=channel, own_channel=own_channel)
        self.s3 = EmbeddedS3(self.db)

    def provision(self, resources: Resources, log_dir: str | None = None) -> Settings:
        """Create (or find) the queues with their dead-letter queues; return the settings
        that handlers of this engine read (also through the environment: `as_env`)."""
        urls = {}
        for spec in (resources.task_queue, resources.completion_queue):
            self.sqs.create_queue(QueueName=spec.dlq_name)
            policy = {
                "deadLetterTargetArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{spec.dlq_name}",
                "maxReceiveCount": str(spec.max_receive_count),
            }
            urls[spec.name] = self.sqs.create_queue(
                QueueName=spec.name,
                Attributes={**spec.attributes(), "RedrivePolicy": json.dumps(policy)},
            )["QueueUrl"]
        self.s3.create_bucket(Bucket=resources.bucket)
        return Settings(
            table=resources.table,
            task_queue_url=urls[resources.task_queue.name],
            completion_queue_url=urls[resources.completion_queue.name],
            bucket=resources.bucket,
            region=REGION,
            log_dir=log_dir,
            engine_home=str(self.home.resolve()),
            channel=self.channel,
        )

    def recover(self, runs: SqliteRunStore) -> tuple[int, int]:
        """Take over what engines that died left on this home; only for the process that
        holds the home's engine lock, before it receives anything: the default channel's
        messages they had received become visible now; the queued messages of `stratoflow
        run` processes that died move to the default channel; the leases of the attempts
        all of them were running end now, so that the next lease sweep reports those
        attempts lost (their commands died with them). Returns (messages, attempts)."""
        released = self.sqs.release_received()
        adopted = self.sqs.adopt_orphans(into=self.channel)
        lost = runs.expire_leases_of(
            [*adopted.channels], others_like=ENGINE_OWNER_PREFIX, but=self.owner
        )
        return released + adopted.messages, lost

    def adopt(self, runs: SqliteRunStore) -> tuple[int, int]:
        """Take over the work of `stratoflow run` processes that died since (see `recover`).
        Returns (messages, attempts)."""
        adopted = self.sqs.adopt_orphans(into=self.channel)
        return adopted.messages, runs.expire_leases_of(adopted.channels)

    def close(self) -> None:
        self.sqs.close()
        self.db.close()
