"""The embedded emulator: atomic writes under concurrency, and its speed fixes keep answers."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from stratoflow.aws.clients import AwsClients
from stratoflow.local.emulator import LOCAL_CREDENTIALS, EmbeddedEmulator


@pytest.fixture(scope="module")
def aws() -> Iterator[AwsClients]:
    for name, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    with EmbeddedEmulator() as emulator:
        clients = AwsClients("us-east-1", emulator.endpoint_url)
        clients.dynamodb.create_table(
            TableName="t",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield clients


def _key(sk: str) -> dict[str, Any]:
    return {"pk": {"S": "p"}, "sk": {"S": sk}}


def _add(sk: str) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": "t",
            "Key": _key(sk),
            "UpdateExpression": "ADD n :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }


def test_concurrent_transactions_never_lose_an_increment(aws: AwsClients) -> None:
    def work() -> None:
        for _ in range(50):
            aws.dynamodb.transact_write_items(TransactItems=[_add("counter"), _add("other")])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    item = aws.dynamodb.get_item(TableName="t", Key=_key("counter"), ConsistentRead=True)["Item"]
    assert item["n"]["N"] == "200"


def test_a_cancelled_transaction_changes_nothing(aws: AwsClients) -> None:
    aws.dynamodb.put_item(TableName="t", Item={**_key("guard"), "state": {"S": "done"}})
    with pytest.raises(ClientError) as err:
        aws.dynamodb.transact_write_items(
            TransactItems=[
                _add("rollback-me"),
                {"Put": {"TableName": "t", "Item": {**_key("new"), "x": {"S": "1"}}}},
                {
                    "ConditionCheck": {
                        "TableName": "t",
                        "Key": _key("guard"),
                        "ConditionExpression": "#s = :running",
                        "ExpressionAttributeNames": {"#s": "state"},
                        "ExpressionAttributeValues": {":running": {"S": "running"}},
                    }
                },
            ]
        )
    assert err.value.response["Error"]["Code"] == "TransactionCanceledException"
    for sk in ("rollback-me", "new"):
        assert "Item" not in aws.dynamodb.get_item(TableName="t", Key=_key(sk))


def test_queue_attributes_still_count_messages(aws: AwsClients) -> None:
    url = aws.sqs.create_queue(QueueName="counted")["QueueUrl"]
    aws.sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(5)]
    )
    aws.sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
    aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2)
    attrs = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "3"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "2"
    assert attrs["ApproximateNumberOfMessagesDelayed"] == "1"
    assert attrs["QueueArn"].endswith(":counted")
