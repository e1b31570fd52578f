"""The embedded AWS emulator (moto server on a loopback port) and resource provisioning.

Provisioning uses the definitions in `stratoflow.config`, the same ones infra/ deploys, and
works against any endpoint: the embedded emulator, LocalStack, or a real account.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stratoflow.aws.clients import AwsClients
from stratoflow.config import (
    TABLE_ATTRIBUTES,
    TABLE_INDEXES,
    TABLE_KEY_SCHEMA,
    QueueSpec,
    Resources,
    Settings,
)

LOCAL_REGION = "us-east-1"
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


PATCHED_FOR = "5.2"
"""The moto minor version `patch_moto` was written for (and pyproject.toml pins)."""


def patch_moto() -> None:
    """Make moto safe for the engine's concurrent use (idempotent): each patch below fixes
    a race in which moto's server, answering each request in its own thread, loses data.

    Raises RuntimeError on a moto other than `PATCHED_FOR`.x, before patching anything.
    Refusing rather than warning and serving unpatched: the patches replace moto internals
    as 5.2 has them, so on another version they may no longer apply or no longer be needed,
    and an emulator that silently drops messages or writes is worse than one that does not
    start (a warning would go to the emulator process's stderr, which nobody reads).
    """
    import moto

    version = str(moto.__version__)
    if not version.startswith(PATCHED_FOR + "."):
        raise RuntimeError(
            f"stratoflow's moto patches were written for moto {PATCHED_FOR}.x, "
            f"but moto {version} is installed; install moto>={PATCHED_FOR},<{_next_minor()} "
            "(pip install 'stratoflow[emulator]') or review the patches in "
            "stratoflow/local/emulator.py for this version"
        )
    _serialise_dynamodb_calls()
    _roll_transactions_back_by_item()
    _delete_messages_in_place()


def _next_minor() -> str:
    major, minor = PATCHED_FOR.split(".")
    return f"{major}.{int(minor) + 1}"


_WRITE_LOCK = threading.RLock()
# The backend's item methods. BatchWriteItem has none of its own in 5.2 (its handler calls
# put_item and delete_item per request item); reentrant, because a transaction's items go
# through put_item, update_item, delete_item and get_item.
_DYNAMODB_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")
_DYNAMODB_READS = ("get_item", "batch_get_item", "query", "scan", "transact_get_items")


def _serialise_dynamodb_calls() -> None:
    """Run moto's DynamoDB item calls one at a time (DynamoDB makes each write to an item
    atomic, and a transaction's writes visible all at once, when it commits).

    moto takes no lock around a write, and each request runs in its own thread. Without this:
    - a condition is checked, then the write applied: two UpdateItems conditioned on
      `attribute_not_exists(owner)` (a claim) can both pass their check and both succeed;
    - an update expression's values are computed from the item, then written: of two
      concurrent `SET n = n + :one`, one can be lost;
    - TransactWriteItems deep-copies each table it touches and, if cancelled, puts the copies
      back in the tables' place: whatever another request wrote meanwhile is undone (two
      threads of transactions adding to one counter ended at 198 of 200), and a condition
      checked by one of its items may no longer hold when a later item is written.
    Reads take the lock too: moto applies a transaction's items one by one and puts them back
    if a later one fails, and DynamoDB never shows a transaction's writes before it commits
    (nor those of one cancelled). Without it a read saw a run's settlement counted by a
    transaction that was then cancelled (a guard on a dependent failed) and tried again: one
    more task final than there was, and the run was finished with a task never run (chaos
    seed 2058).
    """
    import functools

    from moto.dynamodb.models import DynamoDBBackend

    if getattr(DynamoDBBackend, "_stratoflow_serialised", False):
        return

    def serialised(method: Any) -> Any:
        @functools.wraps(method)
        def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
            with _WRITE_LOCK:
                return method(self, *args, **kwargs)

        return locked

    for name in _DYNAMODB_WRITES + _DYNAMODB_READS:
        setattr(DynamoDBBackend, name, serialised(getattr(DynamoDBBackend, name)))
    DynamoDBBackend._stratoflow_serialised = True  # type: ignore[attr-defined]


def _roll_transactions_back_by_item() -> None:
    """Snapshot only the items a TransactWriteItems touches, not every table it touches.

    moto deep-copies each table once per item of every transaction, to restore it if the
    transaction is cancelled, and does so under the write lock above, so every other write
    waits: a 3-item transaction took 84 ms on a table of 1,000 items and 291 ms on one of
    4,000 (4 ms with this patch). A run of a few thousand task items then answers slower
    than its own leases and visibility timeouts allow, and the engine starts redelivering
    and reporting attempts lost that are alive: not the engine's behaviour on DynamoDB.
    Snapshotting the items the transaction names gives the same all-or-nothing result at a
    cost independent of the table's size.
    """
    import copy

    import moto.dynamodb.models as models
    from moto.dynamodb.models.dynamo_type import DynamoType

    backend_cls = models.DynamoDBBackend
    if getattr(backend_cls, "_stratoflow_item_rollback", False):
        return
    original = backend_cls.transact_write_items

    class _NoTableCopy:
        """Stands in for the `copy` module inside moto's DynamoDB models only: its one
        deepcopy of a Table is the transaction's snapshot, replaced here."""

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            if isinstance(value, models.Table):
                return value
            return copy.deepcopy(value, memo)

        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        snapshots = []
        for entry in transact_items:
            _, op = next(iter(entry.items()))
            table = self.tables.get(op.get("TableName"))
            source = op.get("Key") or op.get("Item")
            if table is None or not source or table.hash_key_attr not in source:
                continue
            hash_key = DynamoType(source[table.hash_key_attr])
            range_key = (
                DynamoType(source[table.range_key_attr])
                if table.has_range_key and table.range_key_attr in source
                else None
            )
            current = table.get_item(hash_key, range_key)
            snapshots.append((table, hash_key, range_key, copy.deepcopy(current)))
        try:
            return original(self, transact_items)
        except Exception:
            for table, hash_key, range_key, item in reversed(snapshots):
                bucket = table.items[hash_key] if table.has_range_key else table.items
                key = range_key if table.has_range_key else hash_key
                if item is None:
                    bucket.pop(key, None)
                else:
                    bucket[key] = item
            raise

    def locked(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        # Under the write lock (reentrant: `original` takes it too), so that no other write
        # lands between the snapshot and the transaction.
        with _WRITE_LOCK:
            return transact_write_items(self, transact_items)

    setattr(models, "copy", _NoTableCopy())  # noqa: B010 (a module attribute, replaced)
    backend_cls.transact_write_items = locked  # type: ignore[method-assign]
    backend_cls._stratoflow_item_rollback = True  # type: ignore[attr-defined]


def _delete_messages_in_place() -> None:
    """Delete an SQS message by removing it from its queue's list, under the queue's lock.

    moto's DeleteMessage copies the queue's list of messages without the deleted one, then
    puts the copy in the list's place, holding no lock; SendMessage appends to the list
    (under the queue's lock, which the delete ignores), another delete puts its own copy in
    place, and a receive that moves a message to the dead-letter queue removes it from the
    list. Whatever of these happens while a delete is copying, or between its copy and its
    replacement, is undone when the copy goes in: a message sent meanwhile is lost, a message
    another delete removed comes back (and is delivered again once its visibility timeout
    ends), a message moved to the dead-letter queue stays in both.
    Here a delete holds the queue's lock, so that sends and other deletes wait for it, and
    removes the message from the list itself. Its answers are moto's: a handle already
    deleted is accepted again, an unknown one is ReceiptHandleIsInvalid.
    """
    import contextlib

    from moto.sqs.exceptions import ReceiptHandleIsInvalid
    from moto.sqs.models import Queue

    if getattr(Queue, "_stratoflow_in_place_delete", False):
        return

    def delete_message(self: Queue, receipt_handle: str) -> None:
        with self._messages_lock:
            if receipt_handle in self.deleted_messages:
                return
            doomed = [m for m in self._messages if m.had_receipt_handle(receipt_handle)]
            if not doomed:
                raise ReceiptHandleIsInvalid()
            for message in doomed:
                # A move to the dead-letter queue or a purge takes no lock: it may be gone.
                with contextlib.suppress(ValueError):
                    self._messages.remove(message)
                self.pending_messages.discard(message)
                self.deleted_messages.update(message.all_receipt_handles)  # type: ignore[arg-type]

    Queue.delete_message = delete_message  # type: ignore[method-assign]
    Queue._stratoflow_in_place_delete = True  # type: ignore[attr-defined]


class EmbeddedEmulator:
    """A moto server on 127.0.0.1 and a free port, in a child process owned by this one."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.endpoint_url = ""
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> EmbeddedEmulator:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "stratoflow.local.emulator_server", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={
                **os.environ,
                "PYTHONPATH": package_root() + os.pathsep + os.environ.get("PYTHONPATH", ""),
            },
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        answer = json.loads(line) if line else {}
        if "endpoint_url" not in answer:
            self._proc.wait(timeout=5)
            reason = answer.get("error") or (
                f"exit code {self._proc.returncode}; is moto installed? "
                "pip install 'stratoflow[emulator]'"
            )
            self._proc = None
            raise RuntimeError(f"the embedded AWS emulator did not start: {reason}")
        self.endpoint_url = answer["endpoint_url"]
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def package_root() -> str:
    # The folder holding the `stratoflow` package, so the child imports the same code
    # whether stratoflow is installed or run from a checkout.
    return str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class ProvisionedQueues:
    task_queue_url: str
    task_dlq_url: str
    completion_queue_url: str
    completion_dlq_url: str


def provision(
    clients: AwsClients, resources: Resources, settings_base: Settings | None = None
) -> Settings:
    """Create (or find) the table, queues with their DLQs, and bucket; return settings."""
    db = clients.dynamodb
    existing = db.list_tables().get("TableNames", [])
    if resources.table not in existing:
        db.create_table(
            TableName=resources.table,
            KeySchema=TABLE_KEY_SCHEMA,
            AttributeDefinitions=TABLE_ATTRIBUTES,
            GlobalSecondaryIndexes=TABLE_INDEXES,
            BillingMode="PAY_PER_REQUEST",
        )
    else:
        table = db.describe_table(TableName=resources.table)["Table"]
        present = {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])}
        for index in TABLE_INDEXES:
            if index["IndexName"] not in present:
                db.update_table(
                    TableName=resources.table,
                    AttributeDefinitions=TABLE_ATTRIBUTES,
                    GlobalSecondaryIndexUpdates=[{"Create": index}],
                )
    task_url, _ = _queue_with_dlq(clients, resources.task_queue)
    completion_url, _ = _queue_with_dlq(clients, resources.completion_queue)
    s3 = clients.s3
    try:
        s3.head_bucket(Bucket=resources.bucket)
    except Exception:
        s3.create_bucket(Bucket=resources.bucket)
    base = settings_base or Settings(table=resources.table)
    return Settings(
        table=resources.table,
        task_queue_url=task_url,
        completion_queue_url=completion_url,
        bucket=resources.bucket,
        event_bus=base.event_bus,
        endpoint_url=clients.endpoint_url,
        region=clients.region,
        log_dir=base.log_dir,
    )


def _existing_queue(clients: AwsClients, name: str) -> str | None:
    try:
        return str(clients.sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except Exception:
        return None


def _queue_with_dlq(clients: AwsClients, spec: QueueSpec) -> tuple[str, str]:
    """Find the queue and its DLQ, or create them. Existing queues (a stack deployed with
    cdklocal, say) are used as they are: CreateQueue would refuse other attributes."""
    sqs = clients.sqs
    found, found_dlq = _existing_queue(clients, spec.name), _existing_queue(clients, spec.dlq_name)
    if found and found_dlq:
        return found, found_dlq
    dlq_url = found_dlq or sqs.create_queue(QueueName=spec.dlq_name)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    attributes = {
        **spec.attributes(),
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(spec.max_receive_count)}
        ),
    }
    url = sqs.create_queue(QueueName=spec.name, Attributes=attributes)["QueueUrl"]
    return url, dlq_url
