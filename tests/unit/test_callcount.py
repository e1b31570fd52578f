"""The API-call counter behind the benchmark's "calls per task" (issue 5): a known sequence
of calls is counted exactly, a botocore retry is not a second call, and detaching stops it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from moto import mock_aws

from stratoflow.aws.callcount import ApiCallCounter

REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


def _table(db: Any) -> None:
    db.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def test_a_known_sequence_of_calls_is_counted_exactly(aws: None) -> None:
    db = boto3.client("dynamodb", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    _table(db)
    url = sqs.create_queue(QueueName="q")["QueueUrl"]

    counter = ApiCallCounter()
    counter.attach(db)
    counter.attach(sqs)
    for i in range(3):
        db.put_item(TableName="t", Item={"pk": {"S": f"k{i}"}})
    db.query(
        TableName="t",
        KeyConditionExpression="pk = :k",
        ExpressionAttributeValues={":k": {"S": "k1"}},
    )
    for batch in range(2):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "MessageBody": f"{batch}-{i}"} for i in range(10)],
        )

    assert counter.counts == {
        ("dynamodb", "PutItem"): 3,
        ("dynamodb", "Query"): 1,
        ("sqs", "SendMessageBatch"): 2,
    }
    assert counter.total() == 6
    assert counter.total("dynamodb") == 4
    assert counter.total("sqs") == 2
    assert counter.total("s3") == 0
    # The calls really happened (20 messages in two requests, not 20 requests).
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "20"
    assert counter.counts[("sqs", "GetQueueAttributes")] == 1


def test_a_failed_call_still_counts_once(aws: None) -> None:
    """A conditional write that fails is a billed request too."""
    db = boto3.client("dynamodb", region_name=REGION)
    _table(db)
    counter = ApiCallCounter()
    counter.attach(db)
    db.put_item(TableName="t", Item={"pk": {"S": "a"}})
    with pytest.raises(db.exceptions.ConditionalCheckFailedException):
        db.put_item(
            TableName="t", Item={"pk": {"S": "a"}}, ConditionExpression="attribute_not_exists(pk)"
        )
    assert counter.counts == {("dynamodb", "PutItem"): 2}


def test_snapshot_is_a_copy_and_reset_clears(aws: None) -> None:
    db = boto3.client("dynamodb", region_name=REGION)
    _table(db)
    counter = ApiCallCounter()
    counter.attach(db)
    db.get_item(TableName="t", Key={"pk": {"S": "x"}})
    snap = counter.snapshot()
    db.get_item(TableName="t", Key={"pk": {"S": "x"}})
    assert snap == {("dynamodb", "GetItem"): 1}
    assert counter.counts[("dynamodb", "GetItem")] == 2
    counter.reset()
    assert counter.total() == 0


def test_unregistering_stops_the_count(aws: None) -> None:
    db = boto3.client("dynamodb", region_name=REGION)
    _table(db)
    counter = ApiCallCounter()
    counter.attach(db)
    db.get_item(TableName="t", Key={"pk": {"S": "x"}})
    db.meta.events.unregister("before-call.*.*", counter._count)
    db.get_item(TableName="t", Key={"pk": {"S": "x"}})
    db.list_tables()
    assert counter.counts == {("dynamodb", "GetItem"): 1}


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def test_a_botocore_retry_is_not_counted_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first attempt gets a 500, botocore retries it, the second succeeds: one call for
    the code and for AWS's bill of successful requests, two requests on the wire."""
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=lambda _s: None))
    db = boto3.client(
        "dynamodb",
        region_name=REGION,
        endpoint_url="http://127.0.0.1:9",  # never reached: the hook below answers
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 3, "mode": "standard"}),
    )
    sent: list[str] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        sent.append(request.url)
        headers = {"Content-Type": "application/x-amz-json-1.0"}
        if len(sent) == 1:
            body = json.dumps({"__type": "InternalServerError", "message": "try again"})
            return AWSResponse(request.url, 500, headers, _Raw(body.encode()))
        return AWSResponse(request.url, 200, headers, _Raw(b"{}"))

    db.meta.events.register_first("before-send.dynamodb.PutItem", answer)
    counter = ApiCallCounter()
    counter.attach(db)
    db.put_item(TableName="t", Item={"pk": {"S": "a"}})
    assert len(sent) == 2  # botocore did retry
    assert counter.counts == {("dynamodb", "PutItem"): 1}
