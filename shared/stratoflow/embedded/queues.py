"""Queues of the embedded engine: the SQS subset the engine uses, on the engine's SQLite file.

`EmbeddedSqs` answers the boto3 SQS client's calls (same names, arguments and response
shapes) so the local runtime can pump it as it pumps SQS; `EmbeddedTaskQueue` and
`EmbeddedCompletionQueue` (`stratoflow.embedded.queue_ports`, importable from here too) are
the ports' adapters for the engine's hot path.

Semantics follow standard SQS queues: at-least-once delivery, a visibility timeout per
receive, delays, and a redrive policy that moves a message received `maxReceiveCount` times
to the dead-letter queue when it would be delivered again. Long polls wake on arrival: every
change made in this process notifies the waiters of that queue at once; a change made by
another process on the same file is seen within `RECHECK_SECONDS`.

Channels (`stratoflow.embedded.channels`): several processes share one database file, and
each handles only its own runs' messages. An `EmbeddedSqs` stamps what it sends with its
channel and receives only that channel's messages. An open channel is held with an `flock`
on a lock file, so when its process dies the lock goes with it and another process can adopt
its messages. The wake-ups of long polls are in `stratoflow.embedded.signals`; limits, URLs,
SQL and request checks in `stratoflow.embedded.sqs_model`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stratoflow.embedded.channels import CHANNEL_LOCK_PATIENCE, Adopted, ChannelBusy, ChannelHolder
from stratoflow.embedded.db import Database
from stratoflow.embedded.queue_ports import EmbeddedCompletionQueue, EmbeddedTaskQueue
from stratoflow.embedded.signals import _signal
from stratoflow.embedded.sqs_model import (
    _QUEUE_ATTRIBUTES,
    _QUEUE_NAME,
    _RECEIVE_ATTRIBUTES,
    _SQL_CHANGE_VISIBILITY,
    _SQL_CLAIM,
    _SQL_COUNTS,
    _SQL_DELETE,
    _SQL_EARLIEST,
    _SQL_INSERT,
    _SQL_NEXT_VISIBLE,
    _SQL_QUEUE,
    ACCOUNT,
    ARN_PREFIX,
    DEFAULT_RETENTION_SECONDS,
    DEFAULT_VISIBILITY_TIMEOUT,
    MAX_BATCH,
    MAX_DELAY_SECONDS,
    MAX_VISIBILITY_TIMEOUT,
    MAX_WAIT_SECONDS,
    RECHECK_SECONDS,
    REGION,
    RETENTION_SWEEP_SECONDS,
    URL_PREFIX,
    QueueDoesNotExist,
    _check_entries,
    _check_range,
    _dead_letter,
    _md5,
    _ms,
    _parse_attributes,
    _Queue,
    _update_queue,
    queue_arn,
    queue_name,
    queue_url,
)

__all__ = [
    "ACCOUNT",
    "ARN_PREFIX",
    "CHANNEL_LOCK_PATIENCE",
    "REGION",
    "URL_PREFIX",
    "Adopted",
    "ChannelBusy",
    "EmbeddedCompletionQueue",
    "EmbeddedSqs",
    "EmbeddedTaskQueue",
    "QueueDoesNotExist",
    "queue_arn",
    "queue_name",
    "queue_url",
]


class _Exceptions:
    """`client.exceptions`-style access, as code written for boto3 expects."""

    QueueDoesNotExist = QueueDoesNotExist


class EmbeddedSqs(ChannelHolder):
    """A boto3-SQS-client-shaped queue service on the engine's SQLite database.

    `channel` partitions messages between processes sharing the file: this instance stamps
    its sends with it and receives only its messages. A non-empty channel is opened (locked
    and registered) for the life of the object, see `open_channel` and `adopt_orphans`;
    with `own_channel=False` the instance only uses the channel, which its owner holds.
    Thread-safe: one instance may serve every thread of a process.
    """

    exceptions = _Exceptions

    def __init__(self, db: Database, channel: str = "", *, own_channel: bool = True) -> None:
        self._known: set[str] = set()
        self._swept: dict[str, float] = {}
        self._queues: dict[str, _Queue] = {}
        super().__init__(db, channel, own_channel=own_channel)

    # -- queues

    def create_queue(
        self, QueueName: str, Attributes: Mapping[str, str] | None = None, **_: Any
    ) -> dict[str, Any]:
        """Create a queue (or return the existing one). Attributes: VisibilityTimeout,
        MessageRetentionPeriod, RedrivePolicy (JSON: deadLetterTargetArn, maxReceiveCount).
        Unlike SQS, which refuses to re-create a queue with other attributes, the given
        attributes update an existing queue: a persistent home then follows new settings."""
        if not _QUEUE_NAME.match(QueueName):
            raise ValueError(f"queue name {QueueName!r} must be 1-80 letters, digits, '-' or '_'")
        attributes = _parse_attributes(Attributes or {}, self._require)
        with self.db.write() as conn:
            if conn.execute(_SQL_QUEUE, (QueueName,)).fetchone() is None:
                conn.execute(
                    "INSERT INTO queues (name, visibility_timeout, max_receive_count, "
                    "dead_letter_queue, retention_seconds, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        QueueName,
                        attributes.get("visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT),
                        attributes.get("max_receive_count"),
                        attributes.get("dead_letter_queue"),
                        attributes.get("retention_seconds", DEFAULT_RETENTION_SECONDS),
                        time.time(),
                    ),
                )
            else:
                _update_queue(conn, QueueName, attributes)
        self._known.add(QueueName)
        self._queues.pop(QueueName, None)
        return {"QueueUrl": queue_url(QueueName)}

    def set_queue_attributes(self, QueueUrl: str, Attributes: Mapping[str, str]) -> dict[str, Any]:
        """Change a queue's VisibilityTimeout, MessageRetentionPeriod or RedrivePolicy ("" to
        remove it)."""
        name = self._require(QueueUrl)
        attributes = _parse_attributes(Attributes, self._require)
        with self.db.write() as conn:
            _update_queue(conn, name, attributes)
        self._queues.pop(name, None)
        return {}

    def get_queue_url(self, QueueName: str, **_: Any) -> dict[str, Any]:
        """The URL of an existing queue; raises `QueueDoesNotExist`."""
        return {"QueueUrl": queue_url(self._require(QueueName))}

    def list_queues(self, QueueNamePrefix: str = "", **_: Any) -> dict[str, Any]:
        """The URLs of the queues whose name starts with `QueueNamePrefix` (key omitted when
        none, as SQS does)."""
        with self.db.read() as conn:
            names = [row[0] for row in conn.execute("SELECT name FROM queues ORDER BY name")]
        urls = [queue_url(n) for n in names if n.startswith(QueueNamePrefix)]
        return {"QueueUrls": urls} if urls else {}

    def get_queue_attributes(
        self, QueueUrl: str, AttributeNames: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """The requested attributes ("All" for every one) as strings. Message counts are of
        this instance's channel: visible now, in flight (received, not yet visible again),
        delayed (never received, not yet visible)."""
        name = queue_name(QueueUrl)
        wanted = set(AttributeNames or [])
        if "All" in wanted:
            wanted = set(_QUEUE_ATTRIBUTES)
        unknown = wanted - set(_QUEUE_ATTRIBUTES)
        if unknown:
            raise ValueError(f"unsupported queue attributes: {sorted(unknown)}")
        now = time.time()
        with self.db.read() as conn:
            queue = self._queue(conn, name)
            counts = (0, 0, 0)
            if any(a.startswith("ApproximateNumber") for a in wanted):
                counts = conn.execute(_SQL_COUNTS, (now, now, now, name, self.channel)).fetchone()
        values: dict[str, str] = {
            "ApproximateNumberOfMessages": str(counts[0]),
            "ApproximateNumberOfMessagesNotVisible": str(counts[1]),
            "ApproximateNumberOfMessagesDelayed": str(counts[2]),
            "VisibilityTimeout": str(int(queue.visibility_timeout)),
            "MessageRetentionPeriod": str(int(queue.retention_seconds)),
            "DelaySeconds": "0",
            "CreatedTimestamp": str(int(queue.created_at)),
            "QueueArn": queue_arn(name),
        }
        if queue.dead_letter_queue is not None:
            values["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": queue_arn(queue.dead_letter_queue),
                    "maxReceiveCount": queue.max_receive_count,
                }
            )
        return {"Attributes": {k: v for k, v in values.items() if k in wanted}}

    def purge_queue(self, QueueUrl: str) -> dict[str, Any]:
        """Delete every message of this instance's channel in the queue."""
        name = self._require(QueueUrl)
        with self.db.write() as conn:
            conn.execute(
                "DELETE FROM messages WHERE queue = ? AND channel = ?", (name, self.channel)
            )
        return {}

    # -- sending

    def send_message(
        self, QueueUrl: str, MessageBody: str, DelaySeconds: int = 0, **_: Any
    ) -> dict[str, Any]:
        """Enqueue one message; visible after `DelaySeconds` (0-900)."""
        delay = _check_range("DelaySeconds", DelaySeconds, 0, MAX_DELAY_SECONDS)
        ((message_id, md5),) = self._insert(self._require(QueueUrl), [(MessageBody, delay)])
        return {"MessageId": message_id, "MD5OfMessageBody": md5}

    def send_message_batch(
        self, QueueUrl: str, Entries: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Enqueue up to ten messages in one transaction (more: ValueError, as SQS's
        TooManyEntriesInBatchRequest)."""
        _check_entries(Entries, "MessageBody")
        items = [
            (
                e["MessageBody"],
                _check_range("DelaySeconds", e.get("DelaySeconds", 0), 0, MAX_DELAY_SECONDS),
            )
            for e in Entries
        ]
        sent = self._insert(self._require(QueueUrl), items)
        return {
            "Successful": [
                {"Id": e["Id"], "MessageId": message_id, "MD5OfMessageBody": md5}
                for e, (message_id, md5) in zip(Entries, sent, strict=True)
            ],
            "Failed": [],
        }

    def enqueue(self, queue: str, bodies: Iterable[str], delay_seconds: int = 0) -> int:
        """Enqueue any number of bodies in one transaction, without SQS's shapes or batch
        limit (the ports' path); the delay is clamped to 0-900 s. Returns how many."""
        delay = max(0, min(int(delay_seconds), MAX_DELAY_SECONDS))
        items = [(body, delay) for body in bodies]
        if items:
            self._insert(self._require(queue), items)
        return len(items)

    def _insert(self, name: str, items: Sequence[tuple[str, int]]) -> list[tuple[str, str]]:
        now = time.time()
        sent: list[tuple[str, str]] = []
        rows = []
        for body, delay in items:
            if not isinstance(body, str) or not body:
                raise ValueError("MessageBody must be a non-empty string")
            message_id, md5 = str(uuid.uuid4()), _md5(body)
            sent.append((message_id, md5))
            rows.append((name, self.channel, message_id, body, md5, now, now + delay))
        with self.db.write() as conn:
            conn.executemany(_SQL_INSERT, rows)
        _signal(self._db_key, name).notify(len(rows))
        return sent

    # -- receiving

    def receive_message(
        self,
        QueueUrl: str,
        MaxNumberOfMessages: int = 1,
        WaitTimeSeconds: int = 0,
        VisibilityTimeout: int | None = None,
        AttributeNames: Sequence[str] | None = None,
        MessageSystemAttributeNames: Sequence[str] | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        """Receive up to `MaxNumberOfMessages` (1-10) of this channel's visible messages,
        oldest first, hiding them for the visibility timeout (the queue's unless given).
        With `WaitTimeSeconds` (0-20) it waits for a first message, returning as soon as
        one is available. "Messages" is omitted when there are none, as SQS does."""
        limit = _check_range("MaxNumberOfMessages", MaxNumberOfMessages, 1, MAX_BATCH)
        wait = _check_range("WaitTimeSeconds", WaitTimeSeconds, 0, MAX_WAIT_SECONDS)
        if VisibilityTimeout is not None:
            _check_range("VisibilityTimeout", VisibilityTimeout, 0, MAX_VISIBILITY_TIMEOUT)
        name = self._require(QueueUrl)
        signal = _signal(self._db_key, name)
        deadline = time.monotonic() + wait
        while True:
            generation = signal.generation
            rows, next_visible = self._claim(name, limit, VisibilityTimeout)
            left = deadline - time.monotonic()
            if rows or left <= 0 or self._interrupted:
                break
            timeout = min(left, RECHECK_SECONDS)
            if next_visible is not None:
                # A little past the moment, so the next look finds the message visible.
                timeout = min(timeout, max(0.0, next_visible - time.time()) + 0.001)
            with signal.cond:
                if signal.generation == generation:
                    signal.waiters += 1
                    try:
                        signal.cond.wait(timeout)
                    finally:
                        signal.waiters -= 1
        if not rows:
            return {}
        wanted = set(AttributeNames or ()) | set(MessageSystemAttributeNames or ())
        if "All" in wanted:
            wanted = set(_RECEIVE_ATTRIBUTES)
        messages = []
        for _seq, message_id, body, md5, sent_at, count, first_at, receipt in rows:
            message: dict[str, Any] = {
                "MessageId": message_id,
                "ReceiptHandle": receipt,
                "MD5OfBody": md5,
                "Body": body,
            }
            if wanted:
                attributes = {
                    "ApproximateReceiveCount": str(count),
                    "SentTimestamp": _ms(sent_at),
                    "ApproximateFirstReceiveTimestamp": _ms(first_at),
                    "SenderId": ACCOUNT,
                }
                message["Attributes"] = {k: v for k, v in attributes.items() if k in wanted}
            messages.append(message)
        return {"Messages": messages}

    def _claim(
        self, name: str, limit: int, visibility: float | None
    ) -> tuple[list[Any], float | None]:
        """Claim up to `limit` visible messages in one write transaction, moving those that
        reached the redrive policy's receive count to the dead-letter queue instead. Returns
        the claimed rows (oldest first) and, if none, when the next message becomes visible."""
        rows: list[Any] = []
        next_visible: float | None = None
        moved_to: str | None = None
        # A look first, outside any write transaction (WAL readers take no lock): a poll
        # that finds nothing visible, the usual case of a pump back from its last message,
        # then costs no write lock that the engine's other threads are waiting for.
        earliest = self.db.connection().execute(_SQL_EARLIEST, (name, self.channel)).fetchone()[0]
        if earliest is None or earliest > time.time():
            return rows, earliest
        with self.db.write() as conn:
            queue = self._queue(conn, name)
            now = time.time()
            hidden_until = now + (queue.visibility_timeout if visibility is None else visibility)
            most = queue.max_receive_count
            while len(rows) < limit:
                want = limit - len(rows)
                claimed = conn.execute(
                    _SQL_CLAIM, (hidden_until, now, name, self.channel, now, want)
                ).fetchall()
                # receive_count is already incremented: above the maximum means it had
                # reached it before this receive.
                dead = [r[0] for r in claimed if r[5] > most] if most is not None else []
                if dead:
                    _dead_letter(conn, queue, dead, now)
                    moved_to = queue.dead_letter_queue
                    claimed = [r for r in claimed if r[0] not in dead]
                rows.extend(claimed)
                if not dead:
                    break
            if not rows:
                next_visible = conn.execute(
                    _SQL_NEXT_VISIBLE, (name, self.channel, now)
                ).fetchone()[0]
            if now - self._swept.get(name, 0.0) >= RETENTION_SWEEP_SECONDS:
                self._swept[name] = now
                self._sweep(conn, queue, now)
        if moved_to is not None:
            _signal(self._db_key, moved_to).notify()
        rows.sort(key=lambda r: r[0])
        return rows, next_visible

    def _sweep(self, conn: sqlite3.Connection, queue: _Queue, now: float) -> None:
        # Its dead-letter queue too: nobody may ever receive from that one.
        queues = [queue]
        if queue.dead_letter_queue is not None:
            with contextlib.suppress(QueueDoesNotExist):
                queues.append(self._queue(conn, queue.dead_letter_queue))
        for q in queues:
            conn.execute(
                "DELETE FROM messages WHERE queue = ? AND sent_at < ?",
                (q.name, now - q.retention_seconds),
            )

    # -- settling

    def delete_message(self, QueueUrl: str, ReceiptHandle: str) -> dict[str, Any]:
        """Delete the message last received with `ReceiptHandle`. A handle that is not the
        message's latest (it was received again since) or is unknown deletes nothing."""
        name = self._require(QueueUrl)
        with self.db.write() as conn:
            conn.execute(_SQL_DELETE, (ReceiptHandle, name))
        return {}

    def delete_message_batch(
        self, QueueUrl: str, Entries: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Delete up to ten messages by receipt handle in one statement; every entry
        succeeds (a stale or unknown handle deletes nothing, as in `delete_message`)."""
        _check_entries(Entries, "ReceiptHandle")
        name = self._require(QueueUrl)
        handles = [e["ReceiptHandle"] for e in Entries]
        marks = ",".join("?" * len(handles))
        with self.db.write() as conn:
            conn.execute(
                f"DELETE FROM messages WHERE receipt IN ({marks}) AND queue = ?", (*handles, name)
            )
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    def change_message_visibility(
        self, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int
    ) -> dict[str, Any]:
        """Make a received message visible again `VisibilityTimeout` (0-43200) seconds from
        now; a stale or unknown handle changes nothing."""
        seconds = _check_range("VisibilityTimeout", VisibilityTimeout, 0, MAX_VISIBILITY_TIMEOUT)
        name = self._require(QueueUrl)
        with self.db.write() as conn:
            conn.execute(_SQL_CHANGE_VISIBILITY, (time.time() + seconds, ReceiptHandle, name))
        _signal(self._db_key, name).notify(1)
        return {}

    def change_message_visibility_batch(
        self, QueueUrl: str, Entries: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """`change_message_visibility` for up to ten entries (Id, ReceiptHandle,
        VisibilityTimeout) in one transaction."""
        _check_entries(Entries, "ReceiptHandle")
        name = self._require(QueueUrl)
        now = time.time()
        rows = [
            (
                now
                + _check_range(
                    "VisibilityTimeout", e.get("VisibilityTimeout", 0), 0, MAX_VISIBILITY_TIMEOUT
                ),
                e["ReceiptHandle"],
                name,
            )
            for e in Entries
        ]
        with self.db.write() as conn:
            conn.executemany(_SQL_CHANGE_VISIBILITY, rows)
        _signal(self._db_key, name).notify(len(rows))
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    # -- helpers

    def _require(self, url_or_name: str) -> str:
        """The queue's name, checking (once per instance) that it exists."""
        name = queue_name(url_or_name)
        if name not in self._known:
            with self.db.read() as conn:
                self._queue(conn, name)
            self._known.add(name)
        return name

    def _queue(self, conn: sqlite3.Connection, name: str) -> _Queue:
        # Attributes are read once per instance: they change only by create_queue or
        # set_queue_attributes of the engine that provisions them, at its start.
        found = self._queues.get(name)
        if found is not None:
            return found
        row = conn.execute(_SQL_QUEUE, (name,)).fetchone()
        if row is None:
            raise QueueDoesNotExist(
                f"queue {name!r} does not exist in {self.db.path} (create it with create_queue)"
            )
        self._queues[name] = queue = _Queue(name, *row)
        return queue
