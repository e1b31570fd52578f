"""The queue behaviour the engine relies on, checked against SQS (on moto) and `EmbeddedSqs`.

The contract tests run the same bodies on both; the embedded-only tests below them cover
what SQS has no counterpart for (channels, adoption, durability of the SQLite file) and the
embedded S3 subset. No test sleeps to wait for work: long polls return on arrival.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from stratoflow.core.records import AttemptReport, TaskMessage
from stratoflow.embedded.db import Database
from stratoflow.embedded.objects import EmbeddedS3, NoSuchKey
from stratoflow.embedded.queues import (
    EmbeddedCompletionQueue,
    EmbeddedSqs,
    EmbeddedTaskQueue,
    QueueDoesNotExist,
)

SHARED = str(Path(__file__).resolve().parents[2] / "shared")
COUNTS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


@dataclass
class Backend:
    """A queue service with a main queue (visibility 1 s, redrive after 2 receives) and its
    dead-letter queue, plus the errors it raises for a bad batch and a missing queue."""

    name: str
    sqs: Any
    url: str
    dlq_url: str
    batch_error: type[Exception]
    missing_error: type[Exception]

    def receive(self, wait: int = 0, url: str | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        kwargs.setdefault("MaxNumberOfMessages", 10)
        resp = self.sqs.receive_message(
            QueueUrl=url or self.url, WaitTimeSeconds=wait, AttributeNames=["All"], **kwargs
        )
        return list(resp.get("Messages", []))

    def counts(self, url: str | None = None) -> tuple[int, int, int]:
        attrs = self.sqs.get_queue_attributes(QueueUrl=url or self.url, AttributeNames=COUNTS)
        visible, in_flight, delayed = (int(attrs["Attributes"][name]) for name in COUNTS)
        return visible, in_flight, delayed


def _provision(
    name: str, sqs: Any, batch_error: type[Exception], missing: type[Exception]
) -> Backend:
    dlq_url = sqs.create_queue(QueueName="contract-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}
    url = sqs.create_queue(
        QueueName="contract",
        Attributes={"VisibilityTimeout": "1", "RedrivePolicy": json.dumps(policy)},
    )["QueueUrl"]
    return Backend(name, sqs, url, dlq_url, batch_error, missing)


@pytest.fixture(params=["moto", "embedded"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    if request.param == "moto":
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(name, "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        with mock_aws():
            client = boto3.client("sqs", region_name="us-east-1")
            yield _provision("moto", client, ClientError, ClientError)
    else:
        db = Database(tmp_path / "engine.db")
        sqs = EmbeddedSqs(db)
        try:
            yield _provision("embedded", sqs, ValueError, QueueDoesNotExist)
        finally:
            sqs.close()
            db.close()


def _md5(body: str) -> str:
    return hashlib.md5(body.encode("utf-8")).hexdigest()


# -- the contract


def test_send_receive_delete_round_trip(backend: Backend) -> None:
    body = json.dumps({"task": "extract", "note": "ünïcödé ✓", "n": 1})
    sent = backend.sqs.send_message(QueueUrl=backend.url, MessageBody=body)
    assert sent["MD5OfMessageBody"] == _md5(body)

    (msg,) = backend.receive(wait=1)
    assert msg["MessageId"] == sent["MessageId"]
    assert msg["Body"] == body
    assert msg["MD5OfBody"] == _md5(body)
    assert msg["Attributes"]["ApproximateReceiveCount"] == "1"
    sent_ms = int(msg["Attributes"]["SentTimestamp"])
    assert abs(sent_ms - time.time() * 1000) < 60_000
    assert int(msg["Attributes"]["ApproximateFirstReceiveTimestamp"]) >= sent_ms
    assert msg["Attributes"]["SenderId"]

    backend.sqs.delete_message(QueueUrl=backend.url, ReceiptHandle=msg["ReceiptHandle"])
    assert backend.counts() == (0, 0, 0)
    assert backend.receive() == []


def test_receive_from_an_empty_queue_returns_no_messages(backend: Backend) -> None:
    resp = backend.sqs.receive_message(QueueUrl=backend.url, WaitTimeSeconds=0)
    assert not resp.get("Messages")
    if backend.name == "embedded":
        assert "Messages" not in resp


def test_unknown_queue_is_an_error(backend: Backend) -> None:
    with pytest.raises(backend.missing_error):
        backend.sqs.get_queue_url(QueueName="no-such-queue")


def test_undeleted_message_is_redelivered_after_its_visibility_timeout(backend: Backend) -> None:
    backend.sqs.send_message(QueueUrl=backend.url, MessageBody="again")
    (first,) = backend.receive(wait=1)
    assert first["Attributes"]["ApproximateReceiveCount"] == "1"
    assert backend.receive() == []  # in flight
    assert backend.counts() == (0, 1, 0)

    (second,) = backend.receive(wait=5)  # returns when the 1 s visibility timeout ends
    assert second["MessageId"] == first["MessageId"]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    assert second["ReceiptHandle"] != first["ReceiptHandle"]
    backend.sqs.delete_message(QueueUrl=backend.url, ReceiptHandle=second["ReceiptHandle"])
    assert backend.counts() == (0, 0, 0)


def test_visibility_zero_makes_a_message_visible_at_once(backend: Backend) -> None:
    backend.sqs.send_message(QueueUrl=backend.url, MessageBody="retry me")
    (msg,) = backend.receive(wait=1, VisibilityTimeout=30)
    backend.sqs.change_message_visibility(
        QueueUrl=backend.url, ReceiptHandle=msg["ReceiptHandle"], VisibilityTimeout=0
    )
    start = time.monotonic()
    (again,) = backend.receive(wait=5)
    assert time.monotonic() - start < 1.5
    assert again["MessageId"] == msg["MessageId"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"


def test_delayed_message_is_invisible_until_its_delay(backend: Backend) -> None:
    start = time.monotonic()
    backend.sqs.send_message(QueueUrl=backend.url, MessageBody="later", DelaySeconds=1)
    assert backend.receive() == []
    assert backend.counts() == (0, 0, 1)

    (msg,) = backend.receive(wait=3)  # a long poll that returns when the delay ends
    assert msg["Body"] == "later"
    assert time.monotonic() - start >= 0.9


def test_batches_of_up_to_ten(backend: Backend) -> None:
    entries = [{"Id": f"e{i}", "MessageBody": f"body-{i}"} for i in range(10)]
    entries[3]["DelaySeconds"] = 0
    sent = backend.sqs.send_message_batch(QueueUrl=backend.url, Entries=entries)
    assert sorted(s["Id"] for s in sent["Successful"]) == sorted(e["Id"] for e in entries)
    assert not sent.get("Failed")
    for s in sent["Successful"]:
        assert s["MD5OfMessageBody"] == _md5(f"body-{s['Id'][1:]}")

    received: list[dict[str, Any]] = []
    while len(received) < 10:
        got = backend.receive(wait=1, VisibilityTimeout=30)
        assert got, f"only {len(received)} of 10 messages received"
        received += got
    assert sorted(m["Body"] for m in received) == sorted(e["MessageBody"] for e in entries)
    assert {m["MessageId"] for m in received} == {s["MessageId"] for s in sent["Successful"]}

    deleted = backend.sqs.delete_message_batch(
        QueueUrl=backend.url,
        Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)
        ],
    )
    assert len(deleted["Successful"]) == 10
    assert not deleted.get("Failed")
    assert backend.counts() == (0, 0, 0)

    eleven = [{"Id": f"e{i}", "MessageBody": "x"} for i in range(11)]
    with pytest.raises(backend.batch_error):
        backend.sqs.send_message_batch(QueueUrl=backend.url, Entries=eleven)
    assert backend.counts() == (0, 0, 0)


def test_message_lands_in_the_dead_letter_queue_after_max_receives(backend: Backend) -> None:
    sent = backend.sqs.send_message(QueueUrl=backend.url, MessageBody="poison")
    for count in ("1", "2"):
        # Visibility 0: visible again at once, as if its handler failed each time.
        (msg,) = backend.receive(wait=2, VisibilityTimeout=0)
        assert msg["Attributes"]["ApproximateReceiveCount"] == count
    assert backend.receive(wait=0) == []  # the third delivery goes to the DLQ instead

    (dead,) = backend.receive(wait=2, url=backend.dlq_url)
    assert dead["MessageId"] == sent["MessageId"]
    assert dead["Body"] == "poison"
    assert backend.receive(wait=0) == []
    assert backend.counts() == (0, 0, 0)


def test_queue_attribute_counts(backend: Backend) -> None:
    for i in range(3):
        backend.sqs.send_message(QueueUrl=backend.url, MessageBody=f"now-{i}")
    backend.sqs.send_message(QueueUrl=backend.url, MessageBody="later", DelaySeconds=60)
    assert backend.counts() == (3, 0, 1)

    (msg,) = backend.receive(wait=1, MaxNumberOfMessages=1, VisibilityTimeout=30)
    assert backend.counts() == (2, 1, 1)

    backend.sqs.delete_message(QueueUrl=backend.url, ReceiptHandle=msg["ReceiptHandle"])
    assert backend.counts() == (2, 0, 1)

    attrs = backend.sqs.get_queue_attributes(QueueUrl=backend.url, AttributeNames=["All"])
    assert attrs["Attributes"]["VisibilityTimeout"] == "1"
    policy = json.loads(attrs["Attributes"]["RedrivePolicy"])
    assert int(policy["maxReceiveCount"]) == 2
    assert policy["deadLetterTargetArn"].endswith(":contract-dlq")


def test_long_poll_wakes_when_another_thread_sends(backend: Backend) -> None:
    sender = threading.Timer(
        0.2, lambda: backend.sqs.send_message(QueueUrl=backend.url, MessageBody="wake up")
    )
    start = time.monotonic()
    sender.start()
    try:
        messages = backend.receive(wait=5)
    finally:
        sender.join()
    assert [m["Body"] for m in messages] == ["wake up"]
    assert time.monotonic() - start < 1.5


# -- embedded only


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "engine.db"


def _embedded(path: Path, channel: str = "", queues: bool = True) -> EmbeddedSqs:
    sqs = EmbeddedSqs(Database(path), channel=channel)
    if queues:
        sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "30"})
    return sqs


def _bodies(sqs: EmbeddedSqs, wait: int = 0) -> list[str]:
    resp = sqs.receive_message(
        QueueUrl="embedded://sqlite/000000000000/q", MaxNumberOfMessages=10, WaitTimeSeconds=wait
    )
    return sorted(m["Body"] for m in resp.get("Messages", []))


def test_queue_urls_name_their_queue(db_path: Path) -> None:
    sqs = _embedded(db_path)
    url = sqs.get_queue_url(QueueName="q")["QueueUrl"]
    assert url == "embedded://sqlite/000000000000/q"
    assert sqs.create_queue(QueueName="q")["QueueUrl"] == url  # idempotent
    with pytest.raises(QueueDoesNotExist, match="'missing'"):
        sqs.send_message(QueueUrl="embedded://sqlite/000000000000/missing", MessageBody="x")


def test_only_the_latest_receipt_deletes(db_path: Path) -> None:
    sqs = _embedded(db_path)
    url = sqs.get_queue_url(QueueName="q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    old = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"][0]["ReceiptHandle"]
    new = sqs.receive_message(QueueUrl=url, VisibilityTimeout=30)["Messages"][0]["ReceiptHandle"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=old)
    sqs.delete_message(QueueUrl=url, ReceiptHandle="never-issued")
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=COUNTS[1:2])["Attributes"] == {
        "ApproximateNumberOfMessagesNotVisible": "1"
    }
    sqs.delete_message(QueueUrl=url, ReceiptHandle=new)
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=COUNTS)["Attributes"]
    assert set(counts.values()) == {"0"}


def test_channels_do_not_see_each_others_messages(db_path: Path) -> None:
    alpha, beta = _embedded(db_path, "alpha"), _embedded(db_path, "beta")
    default = _embedded(db_path)
    url = alpha.get_queue_url(QueueName="q")["QueueUrl"]
    alpha.send_message(QueueUrl=url, MessageBody="for alpha")
    beta.send_message_batch(QueueUrl=url, Entries=[{"Id": "1", "MessageBody": "for beta"}])
    assert _bodies(default) == []
    assert _bodies(alpha) == ["for alpha"]
    assert _bodies(beta) == ["for beta"]
    channels = alpha.db.connection().execute("SELECT name, pid FROM channels ORDER BY name")
    assert channels.fetchall() == [("alpha", os.getpid()), ("beta", os.getpid())]


def test_a_closed_channel_is_adopted_and_a_live_one_is_not(db_path: Path) -> None:
    gone, alive = _embedded(db_path, "gone"), _embedded(db_path, "alive")
    url = gone.get_queue_url(QueueName="q")["QueueUrl"]
    gone.send_message(QueueUrl=url, MessageBody="orphan 1")
    gone.send_message(QueueUrl=url, MessageBody="orphan 2", DelaySeconds=60)
    alive.send_message(QueueUrl=url, MessageBody="still owned")
    gone.close()

    heir = _embedded(db_path, "heir")
    assert heir.adopt_orphans(into="heir").messages == 2
    assert _bodies(heir) == ["orphan 1"]  # the other keeps its delay
    assert _bodies(alive) == ["still owned"]
    assert heir.adopt_orphans(into="heir").messages == 0
    assert not (db_path.parent / "channels" / "gone.lock").exists()


def test_the_channel_of_a_dead_process_is_adopted(db_path: Path) -> None:
    _embedded(db_path)  # the queue
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import os, sys
                from stratoflow.embedded.db import Database
                from stratoflow.embedded.queues import EmbeddedSqs
                sqs = EmbeddedSqs(Database({str(db_path)!r}), channel="child")
                sqs.enqueue("q", ["one", "two", "three"])
                print("ready", flush=True)
                sys.stdin.read()
                os._exit(0)  # dies without closing its channel
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": SHARED},
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        adopter = _embedded(db_path, queues=False)
        assert adopter.adopt_orphans().messages == 0  # its owner still lives
        rows = adopter.db.connection().execute("SELECT pid FROM channels WHERE name = 'child'")
        assert rows.fetchall() == [(child.pid,)]
        child.stdin.close()
        assert child.wait(timeout=10) == 0
    finally:
        child.kill()
        child.wait()

    assert adopter.adopt_orphans().messages == 3
    assert _bodies(adopter) == ["one", "three", "two"]
    rows = adopter.db.connection().execute("SELECT count(*) FROM channels WHERE name = 'child'")
    assert rows.fetchone() == (0,)
    assert not (db_path.parent / "channels" / "child.lock").exists()


@pytest.mark.parametrize("layout", ["one instance", "two databases"])
def test_concurrent_receivers_never_get_the_same_message(db_path: Path, layout: str) -> None:
    first = _embedded(db_path)
    second = first if layout == "one instance" else _embedded(db_path)
    url = first.get_queue_url(QueueName="q")["QueueUrl"]
    first.enqueue("q", (f"m{i}" for i in range(10)))
    got: dict[int, list[str]] = {0: [], 1: []}
    start = threading.Barrier(2)

    def receive(index: int, sqs: EmbeddedSqs) -> None:
        start.wait()
        for _ in range(50):
            resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=30)
            for msg in resp.get("Messages", []):
                got[index].append(msg["MessageId"])
                sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])

    threads = [threading.Thread(target=receive, args=(i, s)) for i, s in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    delivered = got[0] + got[1]
    assert len(delivered) == 10
    assert len(set(delivered)) == 10


def test_messages_survive_a_new_database_object(db_path: Path) -> None:
    writer = _embedded(db_path)
    url = writer.get_queue_url(QueueName="q")["QueueUrl"]
    ids = {
        writer.send_message(QueueUrl=url, MessageBody=body)["MessageId"] for body in ("a", "b", "c")
    }
    writer.close()
    writer.db.close()

    reader = EmbeddedSqs(Database(db_path))
    resp = reader.receive_message(
        QueueUrl=reader.get_queue_url(QueueName="q")["QueueUrl"], MaxNumberOfMessages=10
    )
    assert {m["MessageId"] for m in resp["Messages"]} == ids
    assert sorted(m["Body"] for m in resp["Messages"]) == ["a", "b", "c"]


def test_port_adapters_send_any_number_in_one_call(db_path: Path) -> None:
    sqs = _embedded(db_path)
    url = sqs.get_queue_url(QueueName="q")["QueueUrl"]
    tasks = [TaskMessage("r1", "wf", 1, f"t{i}", 1, "2026-01-01T00:00:00+00:00") for i in range(25)]
    EmbeddedTaskQueue(sqs, url).send_tasks(tasks)
    EmbeddedTaskQueue(sqs, url).send_tasks(tasks[:2], delay_seconds=5000)  # clamped to 900
    EmbeddedCompletionQueue(sqs, url).send_reports([AttemptReport("r1", "wf", 1, "t0", 1)])
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=COUNTS)["Attributes"]
    assert counts == {
        "ApproximateNumberOfMessages": "26",
        "ApproximateNumberOfMessagesNotVisible": "0",
        "ApproximateNumberOfMessagesDelayed": "2",
    }
    latest = sqs.db.connection().execute("SELECT max(visible_at - sent_at) FROM messages")
    assert latest.fetchone()[0] == pytest.approx(900)
    first = sqs.receive_message(QueueUrl=url)["Messages"][0]
    assert TaskMessage.from_json(first["Body"]) == tasks[0]


# -- embedded S3


def test_objects_put_get_list_delete(db_path: Path) -> None:
    s3 = EmbeddedS3(Database(db_path))
    s3.create_bucket(Bucket="b")
    put = s3.put_object(Bucket="b", Key="workflows/a.yaml", Body="id: a\n")
    s3.put_object(Bucket="b", Key="workflows/b.yaml", Body=b"id: b\n")
    s3.put_object(Bucket="b", Key="workflowsX", Body=b"")
    s3.put_object(Bucket="other", Key="workflows/c.yaml", Body=b"id: c\n")

    got = s3.get_object(Bucket="b", Key="workflows/a.yaml")
    assert got["Body"].read() == b"id: a\n"
    digest = hashlib.md5(b"id: a\n").hexdigest()
    assert got["ETag"] == put["ETag"] == f'"{digest}"'
    assert got["ContentLength"] == 6
    assert got["VersionId"] == put["VersionId"]
    assert s3.head_object(Bucket="b", Key="workflows/a.yaml")["ContentLength"] == 6

    again = s3.put_object(Bucket="b", Key="workflows/a.yaml", Body="id: a2\n")
    assert again["VersionId"] != put["VersionId"]

    listed = s3.list_objects_v2(Bucket="b", Prefix="workflows/")
    assert [c["Key"] for c in listed["Contents"]] == ["workflows/a.yaml", "workflows/b.yaml"]
    assert listed["KeyCount"] == 2
    assert [c["Size"] for c in listed["Contents"]] == [7, 6]
    page = s3.list_objects_v2(Bucket="b", Prefix="workflows", MaxKeys=2)
    assert page["IsTruncated"] and page["KeyCount"] == 2
    rest = s3.list_objects_v2(
        Bucket="b", Prefix="workflows", ContinuationToken=page["NextContinuationToken"]
    )
    assert [c["Key"] for c in rest["Contents"]] == ["workflowsX"]

    s3.delete_object(Bucket="b", Key="workflows/a.yaml")
    s3.delete_object(Bucket="b", Key="workflows/a.yaml")  # missing is fine
    assert [c["Key"] for c in s3.list_objects_v2(Bucket="b", Prefix="workflows/")["Contents"]] == [
        "workflows/b.yaml"
    ]
    empty = s3.list_objects_v2(Bucket="b", Prefix="nothing/")
    assert empty["KeyCount"] == 0 and "Contents" not in empty


def test_missing_object_raises_no_such_key(db_path: Path) -> None:
    s3 = EmbeddedS3(Database(db_path))
    with pytest.raises(NoSuchKey, match=r"'absent\.yaml'"):
        s3.get_object(Bucket="b", Key="absent.yaml")
    with pytest.raises(LookupError):
        s3.head_object(Bucket="b", Key="absent.yaml")
    assert s3.exceptions.NoSuchKey is NoSuchKey
