"""The embedded emulator's moto patches: each race they close, shown on plain moto and closed
on patched moto, and the patched emulator answering as plain moto does."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from stratoflow.aws.clients import AwsClients
from stratoflow.local.emulator import LOCAL_CREDENTIALS, EmbeddedEmulator, package_root


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


def _add(sk: str, table: str = "t") -> dict[str, Any]:
    return {
        "Update": {
            "TableName": table,
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


def test_patch_moto_refuses_a_moto_it_was_not_written_for(monkeypatch: pytest.MonkeyPatch) -> None:
    import moto
    from moto.dynamodb.models import DynamoDBBackend

    from stratoflow.local.emulator import PATCHED_FOR, patch_moto

    assert moto.__version__.startswith(PATCHED_FOR + ".")  # what pyproject.toml pins
    for other in ("5.3.0", "5.20.1", "6.0.0"):
        monkeypatch.setattr(moto, "__version__", other)
        with pytest.raises(RuntimeError, match=rf"moto {PATCHED_FOR}\.x, but moto {other}"):
            patch_moto()
    # Refused before patching anything: this process's moto is still plain.
    assert not getattr(DynamoDBBackend, "_stratoflow_serialised", False)


# -- each patch's race, made to happen on purpose: on plain moto, then on patched moto.
# They run in a fresh interpreter (this module run as a script), as the emulator's process
# patches moto: this process's moto stays plain for the comparisons below.


def _race(first: Callable[[], Any], second: Callable[[], Any], obj: Any, name: str) -> list[Any]:
    """Run `first` until it calls `obj.name`, hold it there while `second` runs (for up to a
    second: on patched moto `second` waits for `first`), then let it go on. Each one's
    outcome: "ok" or its error code."""
    paused, resume = threading.Event(), threading.Event()
    original, own = getattr(obj, name), name in vars(obj)

    def hooked(*args: Any, **kwargs: Any) -> Any:
        if not paused.is_set():  # the first call only, which is `first`'s
            paused.set()
            resume.wait(10)
        return original(*args, **kwargs)

    outcomes: list[Any] = [None, None]

    def run(n: int, work: Callable[[], Any]) -> None:
        try:
            work()
            outcomes[n] = "ok"
        except ClientError as err:
            outcomes[n] = err.response["Error"]["Code"]

    setattr(obj, name, hooked)
    try:
        one = threading.Thread(target=run, args=(0, first))
        one.start()
        assert paused.wait(10)
        two = threading.Thread(target=run, args=(1, second))
        two.start()
        two.join(1.0)
        resume.set()
        one.join(10)
        two.join(10)
    finally:
        if own:
            setattr(obj, name, original)
        else:
            delattr(obj, name)
    return outcomes


def _sqs_delete_race(clients: AwsClients) -> dict[str, Any]:
    """A delete held while another delete and a send happen on the same queue."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    sqs = clients.sqs
    url = sqs.create_queue(QueueName="race")["QueueUrl"]
    bodies = ("deleted-1", "deleted-2", "kept")
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": b, "MessageBody": b} for b in bodies])
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=3, VisibilityTimeout=60)
    handle = {m["Body"]: m["ReceiptHandle"] for m in got["Messages"]}
    queue = sqs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].queues["race"]
    kept = next(m for m in queue._messages if m.body == "kept")

    def delete_and_send() -> None:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=handle["deleted-2"])
        sqs.send_message(QueueUrl=url, MessageBody="sent")

    outcomes = _race(
        lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle=handle["deleted-1"]),
        delete_and_send,
        # moto asks each message whether it had the handle: held at the last one.
        kept,
        "had_receipt_handle",
    )
    return {"outcomes": outcomes, "queued": sorted(m.body for m in queue._messages)}


def _dynamodb_claim_race(clients: AwsClients) -> dict[str, Any]:
    """Two claims of one item, `attribute_not_exists(owner)`, the first held after its check."""
    from moto.dynamodb.parsing.validators import UpdateExpressionValidator

    db = clients.dynamodb
    _create_table(db, "claims")
    db.put_item(TableName="claims", Item=_key("task"))

    def claim(owner: str) -> Callable[[], Any]:
        return lambda: db.update_item(
            TableName="claims",
            Key=_key("task"),
            UpdateExpression="SET #o = :me",
            ConditionExpression="attribute_not_exists(#o)",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues={":me": {"S": owner}},
        )

    # moto validates the update expression after checking the condition: held there.
    outcomes = _race(claim("first"), claim("second"), UpdateExpressionValidator, "validate")
    item = db.get_item(TableName="claims", Key=_key("task"))["Item"]
    return {"outcomes": outcomes, "owner": item["owner"]["S"]}


def _dynamodb_rollback_race(clients: AwsClients) -> dict[str, Any]:
    """A transaction held after copying its table, cancelled after an update meanwhile."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    db = clients.dynamodb
    _create_table(db, "ledger")
    db.put_item(TableName="ledger", Item={**_key("counter"), "n": {"N": "5"}})
    db.put_item(TableName="ledger", Item={**_key("guard"), "state": {"S": "done"}})
    cancelled = [
        _add("other", "ledger"),
        {
            "ConditionCheck": {
                "TableName": "ledger",
                "Key": _key("guard"),
                "ConditionExpression": "#s = :running",
                "ExpressionAttributeNames": {"#s": "state"},
                "ExpressionAttributeValues": {":running": {"S": "running"}},
            }
        },
    ]
    increment = _add("counter", "ledger")["Update"]
    outcomes = _race(
        lambda: db.transact_write_items(TransactItems=cancelled),
        lambda: db.update_item(**increment),
        # The transaction reads each of its items after copying the tables: held at the first.
        dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"],
        "get_item",
    )
    item = db.get_item(TableName="ledger", Key=_key("counter"))["Item"]
    return {"outcomes": outcomes, "n": item["n"]["N"]}


def _dynamodb_dirty_read_race(clients: AwsClients) -> dict[str, Any]:
    """A transaction held after writing its first item (its second cancels it): what a
    read of that item sees meanwhile, and what the item is afterwards."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    db = clients.dynamodb
    _create_table(db, "reads")
    db.put_item(TableName="reads", Item={**_key("counter"), "n": {"N": "5"}})
    db.put_item(TableName="reads", Item={**_key("guard"), "state": {"S": "done"}})
    cancelled = [
        _add("counter", "reads"),
        {
            "ConditionCheck": {
                "TableName": "reads",
                "Key": _key("guard"),
                "ConditionExpression": "#s = :running",
                "ExpressionAttributeNames": {"#s": "state"},
                "ExpressionAttributeValues": {":running": {"S": "running"}},
            }
        },
    ]
    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    original = backend.get_item
    held, resume = threading.Event(), threading.Event()
    writer: list[threading.Thread] = []
    reads = {"writer": 0}
    seen: list[str] = []

    def hooked(*args: Any, **kwargs: Any) -> Any:
        # The writer reads each item before writing it: its second read comes after the
        # first item was written.
        if writer and threading.current_thread() is writer[0]:
            reads["writer"] += 1
            if reads["writer"] == 2:
                held.set()
                resume.wait(10)
        return original(*args, **kwargs)

    def write() -> None:
        with contextlib.suppress(ClientError):
            db.transact_write_items(TransactItems=cancelled)

    def read() -> None:
        seen.append(db.get_item(TableName="reads", Key=_key("counter"))["Item"]["n"]["N"])

    backend.get_item = hooked
    try:
        writer.append(threading.Thread(target=write))
        writer[0].start()
        assert held.wait(10)
        reader = threading.Thread(target=read)
        reader.start()
        reader.join(1.0)  # on patched moto the read waits for the transaction
        resume.set()
        writer[0].join(10)
        reader.join(10)
    finally:
        del backend.get_item
    item = db.get_item(TableName="reads", Key=_key("counter"))["Item"]
    return {"seen": seen, "n": item["n"]["N"]}


def _races() -> dict[str, Any]:
    from moto import mock_aws

    from stratoflow.local.emulator import patch_moto

    for name, value in LOCAL_CREDENTIALS.items():
        os.environ[name] = value
    os.environ.pop("AWS_ENDPOINT_URL", None)
    results: dict[str, Any] = {}
    for moto_kind in ("plain", "patched"):
        if moto_kind == "patched":
            patch_moto()
        results[moto_kind] = {}
        for race in (
            _sqs_delete_race,
            _dynamodb_claim_race,
            _dynamodb_rollback_race,
            _dynamodb_dirty_read_race,
        ):
            with mock_aws():
                results[moto_kind][race.__name__] = race(AwsClients("us-east-1"))
    return results


@pytest.fixture(scope="module")
def races() -> dict[str, Any]:
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root(), str(repo)])}
    done = subprocess.run(
        [sys.executable, "-m", "tests.adapters.test_emulator"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


def test_a_delete_loses_no_message_sent_or_deleted_meanwhile(races: dict[str, Any]) -> None:
    race = "_sqs_delete_race"
    # Plain moto: the held delete puts back its copy of the list, taken before the others.
    plain = races["plain"][race]
    assert plain == {"outcomes": ["ok", "ok"], "queued": ["deleted-2", "kept"]}
    assert races["patched"][race] == {"outcomes": ["ok", "ok"], "queued": ["kept", "sent"]}


def test_two_conditional_claims_of_one_item_never_both_succeed(races: dict[str, Any]) -> None:
    race = "_dynamodb_claim_race"
    assert races["plain"][race] == {"outcomes": ["ok", "ok"], "owner": "first"}
    assert races["patched"][race] == {
        "outcomes": ["ok", "ConditionalCheckFailedException"],
        "owner": "first",
    }


def test_a_cancelled_transaction_undoes_no_other_write(races: dict[str, Any]) -> None:
    race = "_dynamodb_rollback_race"
    cancelled = "TransactionCanceledException"
    assert races["plain"][race] == {"outcomes": [cancelled, "ok"], "n": "5"}
    assert races["patched"][race] == {"outcomes": [cancelled, "ok"], "n": "6"}


def test_a_read_never_sees_a_transaction_that_is_then_cancelled(races: dict[str, Any]) -> None:
    race = "_dynamodb_dirty_read_race"
    # Plain moto: the read sees the first item written by a transaction its second cancels.
    assert races["plain"][race] == {"seen": ["6"], "n": "5"}
    assert races["patched"][race] == {"seen": ["5"], "n": "5"}


# -- the patched emulator answers as moto does without the patches


def _script(db: Any) -> list[Any]:
    """Every kind of DynamoDB write the patches serialise, succeeding and failing in each
    way (conditions, validation, cancelled transactions), then what the table holds."""
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
    for bad in ("SET a = :v SET b = :v", "SET a = :v, a = :v", "SET sk = :v"):
        call(
            "update_item",
            TableName="d",
            Key={**key, "sk": {"S": "x"}},
            UpdateExpression=bad,
            ExpressionAttributeValues={":v": {"S": "v"}},
        )
    fresh = {**key, "sk": {"S": "fresh"}, "s": {"S": "text"}, "n": {"N": "12.5"}}
    for _ in range(2):  # created, then refused
        call(
            "put_item",
            TableName="d",
            Item=fresh,
            ConditionExpression="attribute_not_exists(pk)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    call(
        "batch_write_item",
        RequestItems={
            "d": [
                {"PutRequest": {"Item": {**key, "sk": {"S": f"b{i}"}, "i": {"N": str(i)}}}}
                for i in range(3)
            ]
            + [{"DeleteRequest": {"Key": {**key, "sk": {"S": "fresh"}}}}]
        },
    )
    call(
        "delete_item",
        TableName="d",
        Key={**key, "sk": {"S": "b0"}},
        ConditionExpression="i = :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )
    call("delete_item", TableName="d", Key={**key, "sk": {"S": "b1"}}, ReturnValues="ALL_OLD")
    for limit in ("100", "1"):  # committed, then cancelled by its condition
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
                {"Put": {"TableName": "d", "Item": {**key, "sk": {"S": f"tx{limit}"}}}},
                {"Delete": {"TableName": "d", "Key": {**key, "sk": {"S": "b2"}}}},
            ],
        )
    # Two operations on one item: refused as a whole.
    call("transact_write_items", TransactItems=[_add("x", "d"), _add("x", "d")])
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
    """The script's answers from moto in this process, which the patches never touch."""
    from moto import mock_aws

    for name, value in LOCAL_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        return script(AwsClients("us-east-1"))


def test_the_patched_dynamodb_writes_answer_as_moto_does(
    aws: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.dynamodb.models import DynamoDBBackend

    # This process's moto is plain (the patches are applied in the emulator's process).
    assert not getattr(DynamoDBBackend, "_stratoflow_serialised", False)
    patched = _script(aws.dynamodb)
    plain = _on_plain_moto(monkeypatch, lambda clients: _script(clients.dynamodb))
    assert len(patched) == len(plain) == 18
    for n, (got, want) in enumerate(zip(patched, plain, strict=True)):
        assert got == want, f"call {n}"
    codes = [a[0] if isinstance(a, tuple) else "ok" for a in patched]
    assert codes == [
        *["ok"] * 4,
        *["ConditionalCheckFailedException"] * 2,  # the counters reached their limit
        *["ValidationException"] * 3,  # the bad update expressions
        *["ok", "ConditionalCheckFailedException"],  # put, put again
        *["ok", "ConditionalCheckFailedException", "ok"],  # batch, deletes
        *["ok", "TransactionCanceledException", "ValidationException"],  # transactions
        "ok",
    ]
    items = {i["sk"]["S"]: i for i in patched[-1]["Items"]}
    assert sorted(items) == ["b0", "tx100", "x", "y"]
    assert items["x"]["count"] == {"N": "4"}  # 1 + 2 by updates, + 1 by the transaction


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
    patched = _sqs_script(aws.sqs)
    plain = _on_plain_moto(monkeypatch, lambda clients: _sqs_script(clients.sqs))
    assert patched == plain
    assert patched[0] == ["now0", "now1", "now2", "now3", "old0", "old1", "old2"]
    assert patched[1] == [("bogus", "ReceiptHandleIsInvalid")]
    assert patched[3] == ("20", "3")  # 7 deleted, 3 received and kept
    assert len(patched[4]) == 20


if __name__ == "__main__":
    # The `races` fixture's fresh interpreter: plain moto's answers, then patched moto's.
    print(json.dumps(_races()))
