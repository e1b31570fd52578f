"""The SQS model of the embedded queues: limits, names, URLs and ARNs, the SQL statements on
the `queues` and `messages` tables, the checks of requests and the parsing of queue
attributes. `stratoflow.embedded.queues` uses them; every public name here is importable
from there too."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
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


@dataclass(frozen=True)
class _Queue:
    name: str
    visibility_timeout: float
    max_receive_count: int | None
    dead_letter_queue: str | None
    retention_seconds: float
    created_at: float


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


def _parse_attributes(
    attributes: Mapping[str, str], require: Callable[[str], str]
) -> dict[str, Any]:
    """A queue's attributes as column values; `require` checks that a dead-letter queue
    exists (and returns its name)."""
    parsed: dict[str, Any] = {}
    for key, value in attributes.items():
        if key == "VisibilityTimeout":
            parsed["visibility_timeout"] = _check_range(
                key, _number(key, value), 0, MAX_VISIBILITY_TIMEOUT
            )
        elif key == "MessageRetentionPeriod":
            parsed["retention_seconds"] = _check_range(key, _number(key, value), 60, 1_209_600)
        elif key == "RedrivePolicy":
            parsed.update(_parse_redrive(value, require))
        elif key == "DelaySeconds" and int(value) == 0:
            pass
        elif key in ("ReceiveMessageWaitTimeSeconds", "MaximumMessageSize", "Policy"):
            pass  # no effect here: polls pass WaitTimeSeconds, bodies have no size limit
        else:
            raise ValueError(
                f"queue attribute {key}={value!r} is not supported by the embedded engine"
            )
    return parsed


def _parse_redrive(value: str, require: Callable[[str], str]) -> dict[str, Any]:
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
    require(dlq)
    return {"max_receive_count": count, "dead_letter_queue": dlq}


def _update_queue(conn: sqlite3.Connection, name: str, attributes: dict[str, Any]) -> None:
    for column, value in attributes.items():
        # Column names come from _parse_attributes, never from the caller.
        conn.execute(f"UPDATE queues SET {column} = ? WHERE name = ?", (value, name))
