"""SQS queues, each with its dead-letter queue."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stratoflow.config import QueueSpec

DLQ_RETENTION = Duration.days(14)  # SQS maximum: time for an operator to inspect and redrive


class WorkQueue(Construct):
    """One queue and its DLQ: SSE, TLS-only, redrive after `spec.max_receive_count` receives.

    `consumer_timeout_seconds` is the consuming function's timeout: AWS recommends a
    visibility timeout of at least six times that for Lambda event source mappings, so a
    message is not redelivered while a retried batch is still being worked on.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, spec: QueueSpec, consumer_timeout_seconds: int
    ) -> None:
        super().__init__(scope, construct_id)
        if spec.visibility_timeout < 6 * consumer_timeout_seconds:
            raise ValueError(
                f"queue {spec.name}: visibility timeout {spec.visibility_timeout}s is below "
                f"6 x the consumer's timeout ({consumer_timeout_seconds}s); raise it in "
                "stratoflow.config"
            )
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            queue_name=spec.dlq_name,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DLQ_RETENTION,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=spec.name,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(spec.visibility_timeout),
            retention_period=Duration.seconds(int(spec.attributes()["MessageRetentionPeriod"])),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=spec.max_receive_count
            ),
        )
