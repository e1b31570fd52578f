"""The embedded emulator: atomic writes under concurrency, and its speed fixes keep answers."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
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
        _create_table(clients.dynamodb, "t")
        yield clients


def _create_table(db: Any, name: str) -> None:
    db.create_table(
        TableName=name,
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


# -- the speed fixes answer exactly as moto does without them

_ITEM_TYPES: dict[str, Any] = {
    "s": {"S": "text"},
    "n": {"N": "12.5"},
    "flag": {"BOOL": False},
    "nothing": {"NULL": True},
    "tags": {"SS": ["a", "b"]},
    "nums": {"NS": ["1", "2"]},
    "blob": {"B": b"\x00\xffbytes"},
    "blobs": {"BS": [b"\x01", b"\x02"]},
    "nested": {"M": {"l": {"L": [{"S": "x"}, {"N": "1"}, {"M": {"b": {"B": b"\x03"}}}]}}},
}


def _script(db: Any) -> list[Any]:
    """DynamoDB calls that reuse expression texts with other values, names and items, and
    that fail validation in each way the cached checks could hide; every answer kept."""
    answers: list[Any] = []

    def call(method: str, **kwargs: Any) -> None:
        try:
            resp = getattr(db, method)(**kwargs)
            resp.pop("ResponseMetadata", None)
            answers.append(resp)
        except ClientError as err:
            answers.append(
                (
                    err.response["Error"]["Code"],
                    err.response["Error"].get("Message"),
                    err.response.get("CancellationReasons"),
                    err.response.get("Item"),
                )
            )

    _create_table(db, "d")
    key = {"pk": {"S": "p"}}
    counter = (
        "SET #a = if_not_exists(#a, :zero) + :inc, "
        "logs = list_append(if_not_exists(logs, :nil), :ref) ADD tags :tag REMOVE gone"
    )
    for n in range(3):
        for sk in ("x", "y"):
            call(
                "update_item",
                TableName="d",
                Key={**key, "sk": {"S": sk}},
                UpdateExpression=counter,
                ConditionExpression="attribute_not_exists(#a) OR #a < :limit",
                ExpressionAttributeNames={"#a": "count"},
                ExpressionAttributeValues={
                    ":zero": {"N": "0"},
                    ":inc": {"N": str(n + 1)},
                    ":nil": {"L": []},
                    ":ref": {"L": [{"S": f"{sk}{n}"}]},
                    ":tag": {"SS": [f"t{n}"]},
                    ":limit": {"N": "3"},
                },
                ReturnValues=("ALL_NEW", "UPDATED_NEW", "ALL_OLD")[n],
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
    # One expression text, names that make its two paths one: refused every time; then
    # texts refused whatever the names. Each twice: the second meets the caches.
    pair = "SET #p = :v, #q = :v"
    cases: list[tuple[str, dict[str, str]]] = [
        (pair, names)
        for names in ({"#p": "a", "#q": "b"}, {"#p": "a", "#q": "a"}, {"#p": "c", "#q": "d"})
    ]
    cases += [(bad, {}) for bad in ("SET a = :v SET b = :v", "SET sk = :v", "SET a = :v, a = :v")]
    for expression, names in cases:
        for _ in range(2):
            call(
                "update_item",
                TableName="d",
                Key={**key, "sk": {"S": "x"}},
                UpdateExpression=expression,
                **({"ExpressionAttributeNames": names} if names else {}),
                ExpressionAttributeValues={":v": {"S": "v"}},
            )
    call("put_item", TableName="d", Item={**key, "sk": {"S": "typed"}, **_ITEM_TYPES})
    for limit in ("100", "100", "1"):
        call(
            "transact_write_items",
            TransactItems=[
                {
                    "Update": {
                        "TableName": "d",
                        "Key": {**key, "sk": {"S": "x"}},
                        "UpdateExpression": "ADD #a :one",
                        "ConditionExpression": "#a < :limit",
                        "ExpressionAttributeNames": {"#a": "count"},
                        "ExpressionAttributeValues": {":one": {"N": "1"}, ":limit": {"N": limit}},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
                {
                    "Update": {
                        "TableName": "d",
                        "Key": {**key, "sk": {"S": "y"}},
                        "UpdateExpression": "ADD #a :one",
                        "ExpressionAttributeNames": {"#a": "count"},
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ],
        )
    call("get_item", TableName="d", Key={**key, "sk": {"S": "typed"}}, ConsistentRead=True)
    call(
        "batch_get_item",
        RequestItems={"d": {"Keys": [{**key, "sk": {"S": s}} for s in ("x", "y", "typed")]}},
    )
    call("get_item", TableName="missing", Key={**key, "sk": {"S": "x"}})
    call(
        "query",
        TableName="d",
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "p"}},
    )
    return answers


def _on_plain_moto(
    monkeypatch: pytest.MonkeyPatch, script: Callable[[AwsClients], list[Any]]
) -> list[Any]:
    """The script's answers from moto in this process, which the fixes never touch."""
    from moto import mock_aws

    for name, value in LOCAL_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        return script(AwsClients("us-east-1"))


def test_the_speed_fixes_answer_as_moto_does_without_them(
    aws: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.dynamodb.parsing import expressions

    # This process's moto is unpatched (the fixes are applied in the emulator's process).
    assert not getattr(expressions, "_stratoflow_cached", False)
    fast = _script(aws.dynamodb)
    plain = _on_plain_moto(monkeypatch, lambda clients: _script(clients.dynamodb))
    assert len(fast) == len(plain) == 26
    for n, (got, want) in enumerate(zip(fast, plain, strict=True)):
        assert got == want, f"call {n}"
    assert fast[24][0] == "ResourceNotFoundException"
    # Each cached check passes and refuses the same text with other names or values.
    errors = [a[1] for a in fast if isinstance(a, tuple)]
    assert sum("overlap" in e for e in errors) == 4  # the pair with names {a, a}, and a, a
    assert sum("can only be used once" in e for e in errors) == 2
    assert sum("conditional request failed" in e for e in errors) == 2
    assert [isinstance(a, dict) for a in fast[19:22]] == [True, True, False]
    assert [isinstance(a, dict) for a in fast[6:12]] == [True, True, False, False, True, True]
    assert fast[22]["Item"] == {"pk": {"S": "p"}, "sk": {"S": "typed"}, **_ITEM_TYPES}


def _sqs_script(sqs: Any) -> list[Any]:
    """Deletes by current, earlier and unknown receipt handles, and what remains after."""
    url = sqs.create_queue(QueueName="deletes")["QueueUrl"]
    for start in range(0, 30, 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(start, start + 10)],
        )

    def receive(n: int, visibility: int) -> list[dict[str, Any]]:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=n, VisibilityTimeout=visibility)
        return list(got.get("Messages", []))

    first = receive(10, 0)  # visible again at once: received anew below, with new handles
    again = {m["Body"]: m for m in receive(10, 30)}
    answers: list[Any] = []
    earlier = [m for m in first if m["Body"] in again][:3]
    entries = [
        {"Id": f"old{n}", "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(earlier)
    ]
    entries.append({"Id": "bogus", "ReceiptHandle": "not-a-handle"})
    current = [m for body, m in sorted(again.items()) if body not in {e["Body"] for e in earlier}]
    entries += [
        {"Id": f"now{n}", "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(current[:4])
    ]
    resp = sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    answers.append(sorted(e["Id"] for e in resp.get("Successful", [])))
    answers.append(sorted((e["Id"], e["Code"]) for e in resp.get("Failed", [])))
    # Deleting the same handle twice is accepted, as SQS does.
    again_resp = sqs.delete_message_batch(QueueUrl=url, Entries=entries[:1])
    answers.append(sorted(e["Id"] for e in again_resp.get("Successful", [])))
    try:
        sqs.get_queue_url(QueueName="no-such-queue")
    except ClientError as err:  # an error answer, as SQS's JSON protocol spells it
        answers.append(
            (err.response["Error"]["Code"], err.response["ResponseMetadata"]["HTTPStatusCode"])
        )
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    answers.append(
        (attrs["ApproximateNumberOfMessages"], attrs["ApproximateNumberOfMessagesNotVisible"])
    )
    left = sorted(m["Body"] for m in receive(10, 30) + receive(10, 30) + receive(10, 30))
    answers.append(left)
    return answers


def test_deletes_by_receipt_handle_answer_as_moto_does(
    aws: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _sqs_script(aws.sqs)
    plain = _on_plain_moto(monkeypatch, lambda clients: _sqs_script(clients.sqs))
    assert fast == plain
    assert fast[0] == ["now0", "now1", "now2", "now3", "old0", "old1", "old2"]
    assert fast[1] == [("bogus", "ReceiptHandleIsInvalid")]
    assert fast[3][1] == 400
    assert fast[4] == ("20", "3")  # 7 deleted, 3 received and kept
    assert len(fast[5]) == 20
