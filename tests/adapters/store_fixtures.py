"""The storage adapters under the contract suite (tests/adapters/test_store_contract.py).

Each adapter set is a `Stores` (a `RunStore` and a `DefinitionStore` sharing one backing
store, as the engine wires them), built fresh for every test:

- "dynamodb": the DynamoDB adapters on moto in this process, on a table created exactly as
  the engine provisions it (key schema and both sparse indexes), one table per test;
- "embedded": the SQLite adapters on a database file under the test's tmp_path.
"""

from __future__ import annotations

import copy
import itertools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from stratoflow.aws.clients import AwsClients
from stratoflow.aws.dynamodb import DynamoDefinitionStore, DynamoRunStore
from stratoflow.config import TABLE_ATTRIBUTES, TABLE_INDEXES, TABLE_KEY_SCHEMA
from stratoflow.ports import DefinitionStore, RunStore

REGION = "us-east-1"
BUCKET = "contract-definitions"
_tables = itertools.count()

# moto's DynamoDB backend is not safe for threads, and DynamoDB is: it applies each write to
# an item atomically, and a read sees an item as before or after a write, never during one.
# moto checks a condition and then writes (two claims can both pass), computes `n = n + 1`
# and then stores it (an increment can be lost), stores an updated new item bare before
# setting its attributes (a read can find it so), and rolls a cancelled transaction back by
# putting back a copy of the whole table (undoing what others wrote meanwhile). While the moto
# fixture is up, its writes and reads of items therefore run one at a time, a read answering
# a copy; everything is restored after. (BatchWriteItem and BatchGetItem go through these
# per item, and a transaction's items through the writes: hence a reentrant lock.)
_MOTO_WRITES = ("update_item", "put_item", "delete_item", "transact_write_items")
_MOTO_READS = ("get_item", "query", "scan")


@dataclass(frozen=True)
class Stores:
    kind: str
    runs: RunStore
    definitions: DefinitionStore


@dataclass(frozen=True)
class Moto:
    clients: AwsClients


@contextmanager
def moto_in_process() -> Iterator[Moto]:
    """moto for a whole test module: credentials, the mock, item access made atomic, and
    the definitions' bucket."""
    import moto.dynamodb.models as models
    from moto import mock_aws
    from moto.dynamodb.models import DynamoDBBackend

    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            mp.setenv(name, "testing")
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        for name in ("AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            mp.delenv(name, raising=False)
        lock = threading.RLock()
        for name in (*_MOTO_WRITES, *_MOTO_READS):
            method = getattr(DynamoDBBackend, name)
            mp.setattr(DynamoDBBackend, name, _serialised(method, lock, name in _MOTO_READS))
        mp.setattr(models, "copy", _TableCopiedOnce())
        with mock_aws():
            clients = AwsClients(REGION)
            clients.s3.create_bucket(Bucket=BUCKET)
            yield Moto(clients)


def _serialised(method: Any, lock: threading.RLock, read: bool) -> Any:
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            if method.__name__ == "transact_write_items":
                _TableCopiedOnce.taken.clear()
            found = method(self, *args, **kwargs)
            # moto answers the stored items themselves, serialised after the call returns
            return copy.deepcopy(found) if read else found

    return locked


class _TableCopiedOnce:
    """`copy` for moto's DynamoDB models module, where TransactWriteItems deep-copies the
    whole table once per item of the transaction (its rollback copy), before writing any:
    the copies are all alike, so one per table and transaction gives the same rollback at a
    fraction of the cost (a 100-item transaction on a 250-item table: 100 copies → 1)."""

    taken: ClassVar[dict[int, Any]] = {}  # table id → its copy, for the current transaction

    @staticmethod
    def deepcopy(value: Any, memo: Any = None) -> Any:
        from moto.dynamodb.models import Table

        if not isinstance(value, Table):
            return copy.deepcopy(value, memo)
        found = _TableCopiedOnce.taken.get(id(value))
        if found is None:
            found = _TableCopiedOnce.taken[id(value)] = copy.deepcopy(value, memo)
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


@contextmanager
def dynamodb_stores(moto: Moto) -> Iterator[Stores]:
    """The DynamoDB adapters on a fresh table, provisioned as `provision` does it."""
    table = f"contract-{os.getpid()}-{next(_tables)}"
    db = moto.clients.dynamodb
    db.create_table(
        TableName=table,
        KeySchema=TABLE_KEY_SCHEMA,
        AttributeDefinitions=TABLE_ATTRIBUTES,
        GlobalSecondaryIndexes=TABLE_INDEXES,
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        yield Stores(
            "dynamodb",
            DynamoRunStore(moto.clients, table),
            DynamoDefinitionStore(moto.clients, table, BUCKET),
        )
    finally:
        db.delete_table(TableName=table)


@contextmanager
def embedded_stores(tmp_path: Path) -> Iterator[Stores]:
    """The SQLite adapters on one database file, as the embedded engine shares it."""
    from stratoflow.embedded.db import Database
    from stratoflow.embedded.definitions import SqliteDefinitionStore
    from stratoflow.embedded.runs import SqliteRunStore

    db = Database(tmp_path / "engine.db")
    try:
        yield Stores("embedded", SqliteRunStore(db), SqliteDefinitionStore(db))
    finally:
        db.close()
