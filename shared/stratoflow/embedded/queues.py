"""Queues of the embedded engine: the SQS subset the engine uses, on the engine's SQLite file.

`EmbeddedSqs` answers the boto3 SQS client's calls (same names, arguments and response
shapes) so the local runtime can pump it as it pumps SQS; `EmbeddedTaskQueue` and
`EmbeddedCompletionQueue` are the ports' adapters for the engine's hot path.

Semantics follow standard SQS queues: at-least-once delivery, a visibility timeout per
receive, delays, and a redrive policy that moves a message received `maxReceiveCount` times
to the dead-letter queue when it would be delivered again. Long polls wake on arrival: every
change made in this process notifies the waiters of that queue at once; a change made by
another process on the same file is seen within `RECHECK_SECONDS`.

Channels: several processes share one database file, and each handles only its own runs'
messages. An `EmbeddedSqs` stamps what it sends with its channel and receives only that
channel's messages. An open channel is held with an `flock` on a lock file, so when its
process dies the lock goes with it and another process can adopt its messages.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stratoflow.core.records import AttemptReport, TaskMessage
from stratoflow.embedded.db import Database

ACCOUNT = "000000000000"
REGION = "us-east-1"
URL_PREFIX = f"embedded://sqlite/{ACCOUNT}/"
ARN_PREFIX = f"arn:aws:sqs:{REGION}:{ACCOUNT}:"

MAX_BATCH = 10
MAX_DELAY_SECONDS = 900
MAX_WAIT_SECONDS = 20
MAX_VISIBILITY_TIMEOUT = 43_200
DEFAULT_VISIBILITY_TIMEOUT = 30
DEFAULT_RETENTION_SECONDS = 4 * 24 * 3600

RECHECK_SECONDS = 1.0
"""Longest a long poll goes without looking at the database: how late it can notice a
message sent by another process (this process's sends wake it at once)."""
RETENTION_SWEEP_SECONDS = 60.0
"""How often a receiver deletes a queue's messages older than its retention period."""
CHANNEL_LOCK_PATIENCE = 0.5
"""How long opening a channel waits for a lock held by an adopter (which holds it for one
transaction) before deciding that a live process owns the channel."""

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_CHANNEL_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
_RECEIVE_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "ApproximateFirstReceiveTimestamp",
    "SenderId",
)
_QUEUE_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "CreatedTimestamp",
    "QueueArn",
    "RedrivePolicy",
)

_SQL_QUEUE = (
    "SELECT visibility_timeout, max_receive_count, dead_letter_queue, retention_seconds, "
    "created_at FROM queues WHERE name = ?"
)
_SQL_INSERT = (
    "INSERT INTO messages (queue, channel, message_id, body, md5, sent_at, visible_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# Claims the oldest visible messages in one statement; randomblob() is evaluated per row, so
# each claimed message gets its own fresh receipt handle.
_SQL_CLAIM = (
    "UPDATE messages SET visible_at = ?, receive_count = receive_count + 1, "
    "first_received_at = coalesce(first_received_at, ?), receipt = lower(hex(randomblob(16))) "
    "WHERE seq IN (SELECT seq FROM messages WHERE queue = ? AND channel = ? AND visible_at <= ? "
    "ORDER BY visible_at, seq LIMIT ?) "
    "RETURNING seq, message_id, body, md5, sent_at, receive_count, first_received_at, receipt"
)
_SQL_EARLIEST = "SELECT min(visible_at) FROM messages WHERE queue = ? AND channel = ?"
_SQL_NEXT_VISIBLE = (
    "SELECT min(visible_at) FROM messages WHERE queue = ? AND channel = ? AND visible_at > ?"
)
_SQL_DELETE = "DELETE FROM messages WHERE receipt = ? AND queue = ?"
_SQL_CHANGE_VISIBILITY = "UPDATE messages SET visible_at = ? WHERE receipt = ? AND queue = ?"
_SQL_COUNTS = (
    "SELECT coalesce(sum(visible_at <= ?), 0), "
    "coalesce(sum(visible_at > ? AND receive_count > 0), 0), "
    "coalesce(sum(visible_at > ? AND receive_count = 0), 0) "
    "FROM messages WHERE queue = ? AND channel = ?"
)


class QueueDoesNotExist(LookupError):
    """The queue named by a URL or name was never created in this database
    (SQS's `AWS.SimpleQueueService.NonExistentQueue`)."""


class ChannelBusy(RuntimeError):
    """Another live process (or an adopter, for longer than a moment) holds the channel."""


class _Exceptions:
    """`client.exceptions`-style access, as code written for boto3 expects."""

    QueueDoesNotExist = QueueDoesNotExist


def queue_url(name: str) -> str:
    """The URL of queue `name` (its last path segment is the name)."""
    return URL_PREFIX + name


def queue_arn(name: str) -> str:
    """The ARN of queue `name`, as a redrive policy names a dead-letter queue."""
    return ARN_PREFIX + name


def queue_name(url_or_arn: str) -> str:
    """The queue name in a queue URL (last path segment) or ARN (last `:` segment)."""
    return re.split(r"[/:]", url_or_arn.rstrip("/"))[-1]


def _md5(body: str) -> str:
    return hashlib.md5(body.encode("utf-8")).hexdigest()


def _ms(seconds: float | None) -> str:
    return str(int((seconds or 0.0) * 1000))


def _check_range(name: str, value: int | float, low: int, high: int) -> int:
    number = int(value)
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value!r}")
    return number


def _number(name: str, value: str | int | float) -> int | float:
    """An attribute's value, which SQS takes as a string of digits."""
    try:
        return float(value) if isinstance(value, str) and "." in value else int(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _check_entries(entries: Sequence[Mapping[str, Any]], required: str) -> None:
    if not entries:
        raise ValueError("a batch request must contain at least one entry (EmptyBatchRequest)")
    if len(entries) > MAX_BATCH:
        raise ValueError(
            f"a batch request holds at most {MAX_BATCH} entries, got {len(entries)} "
            "(TooManyEntriesInBatchRequest)"
        )
    ids = [e.get("Id") for e in entries]
    if len(set(ids)) != len(ids):
        raise ValueError(f"batch entry ids must be distinct, got {ids} (BatchEntryIdsNotDistinct)")
    for entry in entries:
        if not entry.get("Id") or required not in entry:
            raise ValueError(f"batch entry {entry!r} needs an Id and a {required}")


def _check_channel(name: str) -> None:
    if not _CHANNEL_NAME.match(name):
        raise ValueError(
            f"channel name {name!r} must be 1-128 letters, digits, '.', '_' or '-' "
            "(not starting with '.')"
        )


class _Signal:
    """Wakes this process's long polls of one queue when something may have become
    receivable; `generation` tells a poller whether it missed a notification between its
    look at the database and its wait."""

    __slots__ = ("cond", "generation", "waiters")

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.generation = 0
        self.waiters = 0

    def notify(self, n: int | None = None) -> None:
        """Wake `n` waiting polls (all with None): one per message is enough, since each
        claims what it finds; waking every poll for each message only makes them race for
        it (three completion pumps, say) and spend a write transaction each on nothing."""
        with self.cond:
            self.generation += 1
            if self.waiters:
                if n is None:
                    self.cond.notify_all()
                else:
                    self.cond.notify(n)


_signals: dict[tuple[str, str], _Signal] = {}
_signals_lock = threading.Lock()


def _signal(db_key: str, queue: str) -> _Signal:
    key = (db_key, queue)
    found = _signals.get(key)
    if found is None:
        with _signals_lock:
            found = _signals.setdefault(key, _Signal())
    return found


@dataclass
class _HeldChannel:
    fd: int
    refs: int


# Channels this process holds, by lock-file path: flock locks belong to an open file
# description, so a second open of the same file in this process would conflict with the
# first; instances of one process that use the same channel share one lock instead.
_held: dict[str, _HeldChannel] = {}
_held_lock = threading.Lock()


def _try_lock(path: Path) -> int | None:
    """Open and exclusively flock `path`; None if someone holds it. The inode check guards
    against locking a file that its holder unlinked meanwhile (another opener would then
    create and lock a new file under the same name)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            os.close(fd)
            continue
        mine = os.fstat(fd)
        if (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino):
            return fd
        os.close(fd)


def _release_channel(path: str) -> None:
    """Drop one reference to a held channel; the last one closes its lock (GC, exit)."""
    with _held_lock:
        held = _held.get(path)
        if held is None:
            return
        held.refs -= 1
        if held.refs <= 0:
            del _held[path]
            os.close(held.fd)


@dataclass(frozen=True)
class _Queue:
    name: str
    visibility_timeout: float
    max_receive_count: int | None
    dead_letter_queue: str | None
    retention_seconds: float
    created_at: float


@dataclass(frozen=True)
class Adopted:
    """What `adopt_orphans` took over."""

    channels: list[str]
    messages: int


class EmbeddedSqs:
    """A boto3-SQS-client-shaped queue service on the engine's SQLite database.

    `channel` partitions messages between processes sharing the file: this instance stamps
    its sends with it and receives only its messages. A non-empty channel is opened (locked
    and registered) for the life of the object, see `open_channel` and `adopt_orphans`;
    with `own_channel=False` the instance only uses the channel, which its owner holds.
    Thread-safe: one instance may serve every thread of a process.
    """

    exceptions = _Exceptions

    def __init__(self, db: Database, channel: str = "", *, own_channel: bool = True) -> None:
        self.db = db
        self.channel = ""
        self._db_key = os.path.realpath(db.path)
        self._channels_dir = Path(os.path.realpath(db.path.parent)) / "channels"
        self._known: set[str] = set()
        self._swept: dict[str, float] = {}
        self._interrupted = False
        self._queues: dict[str, _Queue] = {}
        self._lock_path: str | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        if channel and own_channel:
            self.open_channel(channel)
        elif channel:
            _check_channel(channel)
            self.channel = channel

    # -- channels

    def open_channel(self, name: str) -> None:
        """Make `name` this instance's channel (closing the one it had): lock
        `<db dir>/channels/<name>.lock` for the life of this object and record the channel
        (name, pid, opened_at). Raises `ChannelBusy` if another process holds it."""
        self.close()
        self.channel = ""
        if not name:
            return
        _check_channel(name)
        path = str(self._channels_dir / f"{name}.lock")
        with _held_lock:
            held = _held.get(path)
            if held is not None:
                held.refs += 1
            else:
                self._channels_dir.mkdir(parents=True, exist_ok=True)
                deadline = time.monotonic() + CHANNEL_LOCK_PATIENCE
                while (fd := _try_lock(Path(path))) is None:
                    if time.monotonic() >= deadline:
                        raise ChannelBusy(
                            f"channel {name!r} is held by another process (lock {path})"
                        )
                    time.sleep(0.02)
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                _held[path] = _HeldChannel(fd, 1)
        self._lock_path = path
        self._finalizer = weakref.finalize(self, _release_channel, path)
        self.channel = name
        with self.db.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO channels (name, pid, opened_at) VALUES (?, ?, ?)",
                (name, os.getpid(), time.time()),
            )

    def close(self) -> None:
        """Close this instance's channel: delete its record and release its lock (the
        last instance of this process to hold it does). Messages left in it, and any this
        instance still sends, are then adoptable (`adopt_orphans`). The database stays
        open."""
        finalizer, path, name = self._finalizer, self._lock_path, self.channel
        self._finalizer, self._lock_path = None, None
        if finalizer is None or path is None:
            return
        with _held_lock:
            held = _held.get(path)
            last = held is not None and held.refs == 1
            if last:
                with contextlib.suppress(sqlite3.Error), self.db.write() as conn:
                    conn.execute("DELETE FROM channels WHERE name = ?", (name,))
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # while still locked: see _try_lock
        finalizer()

    def __enter__(self) -> EmbeddedSqs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def adopt_orphans(self, into: str = "") -> Adopted:
        """Move the messages of every channel whose owner is gone (its lock file is free:
        the process closed it or died) to channel `into`, one transaction per channel, and
        forget those channels. Messages the dead owner had received become visible at once
        (their consumer is known to be gone; waiting out the visibility timeout would only
        delay them). Channels held by this process, and the default channel "", are never
        adopted."""
        with self.db.read() as conn:
            names = {
                row[0]
                for row in conn.execute(
                    "SELECT name FROM channels UNION SELECT DISTINCT channel FROM messages"
                )
            }
        with _held_lock:
            ours = {Path(p).stem for p in _held if Path(p).parent == self._channels_dir}
        moved = 0
        adopted: list[str] = []
        now = time.time()
        for name in sorted(names - ours - {"", into}):
            if not _CHANNEL_NAME.match(name):
                continue
            self._channels_dir.mkdir(parents=True, exist_ok=True)
            path = self._channels_dir / f"{name}.lock"
            fd = _try_lock(path)
            if fd is None:
                continue  # its owner is alive
            try:
                with self.db.write() as conn:
                    moved += conn.execute(
                        "UPDATE messages SET channel = ?, visible_at = CASE WHEN "
                        "receive_count > 0 AND visible_at > ? THEN ? ELSE visible_at END "
                        "WHERE channel = ?",
                        (into, now, now, name),
                    ).rowcount
                    conn.execute("DELETE FROM channels WHERE name = ?", (name,))
                adopted.append(name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            finally:
                os.close(fd)
        if moved:
            self._notify_all()
        return Adopted(adopted, moved)

    def release_received(self) -> int:
        """Make the messages received on this instance's channel visible again now: their
        consumer died (an engine starting on a home whose previous engine was killed).
        Returns how many."""
        now = time.time()
        with self.db.write() as conn:
            released = conn.execute(
                "UPDATE messages SET visible_at = ? WHERE channel = ? AND receive_count > 0 "
                "AND visible_at > ?",
                (now, self.channel, now),
            ).rowcount
        if released:
            self._notify_all()
        return released

    def interrupt(self) -> None:
        """End the long polls of this instance now, and make later ones return at once
        (the engine is stopping: its pumps must not wait out their poll)."""
        self._interrupted = True
        self._notify_all()

    def _notify_all(self) -> None:
        with _signals_lock:
            signals = [s for (db, _), s in _signals.items() if db == self._db_key]
        for signal in signals:
            signal.notify()

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
        attributes = self._parse_attributes(Attributes or {})
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
                self._update_queue(conn, QueueName, attributes)
        self._known.add(QueueName)
        self._queues.pop(QueueName, None)
        return {"QueueUrl": queue_url(QueueName)}

    def set_queue_attributes(self, QueueUrl: str, Attributes: Mapping[str, str]) -> dict[str, Any]:
        """Change a queue's VisibilityTimeout, MessageRetentionPeriod or RedrivePolicy ("" to
        remove it)."""
        name = self._require(QueueUrl)
        attributes = self._parse_attributes(Attributes)
        with self.db.write() as conn:
            self._update_queue(conn, name, attributes)
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
                    self._dead_letter(conn, queue, dead, now)
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

    @staticmethod
    def _dead_letter(conn: sqlite3.Connection, queue: _Queue, seqs: list[int], now: float) -> None:
        # A new row of the dead-letter queue (it gets a fresh sequence there), with the body,
        # message id, channel and original sent time (retention counts from it, as in SQS);
        # its receive count starts over, so the DLQ's own redrive policy applies afresh.
        marks = ",".join("?" * len(seqs))
        conn.execute(
            "INSERT INTO messages (queue, channel, message_id, body, md5, sent_at, visible_at) "
            "SELECT ?, channel, message_id, body, md5, sent_at, ? FROM messages "
            f"WHERE seq IN ({marks}) ORDER BY seq",
            (queue.dead_letter_queue, now, *seqs),
        )
        conn.execute(f"DELETE FROM messages WHERE seq IN ({marks})", seqs)

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

    def _parse_attributes(self, attributes: Mapping[str, str]) -> dict[str, Any]:
        parsed: dict[str, Any] = {}
        for key, value in attributes.items():
            if key == "VisibilityTimeout":
                parsed["visibility_timeout"] = _check_range(
                    key, _number(key, value), 0, MAX_VISIBILITY_TIMEOUT
                )
            elif key == "MessageRetentionPeriod":
                parsed["retention_seconds"] = _check_range(key, _number(key, value), 60, 1_209_600)
            elif key == "RedrivePolicy":
                parsed.update(self._parse_redrive(value))
            elif key == "DelaySeconds" and int(value) == 0:
                pass
            elif key in ("ReceiveMessageWaitTimeSeconds", "MaximumMessageSize", "Policy"):
                pass  # no effect here: polls pass WaitTimeSeconds, bodies have no size limit
            else:
                raise ValueError(
                    f"queue attribute {key}={value!r} is not supported by the embedded engine"
                )
        return parsed

    def _parse_redrive(self, value: str) -> dict[str, Any]:
        if not value:
            return {"max_receive_count": None, "dead_letter_queue": None}
        try:
            policy = json.loads(value)
            dlq = queue_name(str(policy["deadLetterTargetArn"]))
            count = _check_range("maxReceiveCount", policy["maxReceiveCount"], 1, 1000)
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"RedrivePolicy {value!r} needs deadLetterTargetArn and maxReceiveCount (1-1000)"
            ) from err
        self._require(dlq)
        return {"max_receive_count": count, "dead_letter_queue": dlq}

    @staticmethod
    def _update_queue(conn: sqlite3.Connection, name: str, attributes: dict[str, Any]) -> None:
        for column, value in attributes.items():
            # Column names come from _parse_attributes, never from the caller.
            conn.execute(f"UPDATE queues SET {column} = ? WHERE name = ?", (value, name))


class EmbeddedTaskQueue:
    """`TaskQueue` on an `EmbeddedSqs` queue: every call is one transaction."""

    def __init__(self, sqs: EmbeddedSqs, queue_url: str) -> None:
        self._sqs = sqs
        self.queue_url = queue_url
        self._queue = queue_name(queue_url)

    def send_tasks(self, messages: Iterable[TaskMessage], delay_seconds: int = 0) -> None:
        """Enqueue task attempts (any number, one transaction; delay clamped to 0-900 s)."""
        self._sqs.enqueue(self._queue, (m.to_json() for m in messages), delay_seconds)


class EmbeddedCompletionQueue:
    """`CompletionQueue` on an `EmbeddedSqs` queue: every call is one transaction."""

    def __init__(self, sqs: EmbeddedSqs, queue_url: str) -> None:
        self._sqs = sqs
        self.queue_url = queue_url
        self._queue = queue_name(queue_url)

    def send_reports(self, reports: Iterable[AttemptReport]) -> None:
        """Report finished attempts (any number, one transaction)."""
        self._sqs.enqueue(self._queue, (r.to_json() for r in reports))
