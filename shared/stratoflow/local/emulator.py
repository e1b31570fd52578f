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
from collections.abc import Iterator, Mapping
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


def _speed_up_moto_sqs() -> None:
    """Make moto's queue attributes lazy.

    moto computes every queue attribute, including three O(queue depth) message counts,
    whenever any single attribute is read, and it reads one on every send and on every
    received message; SQS in moto is therefore quadratic in queue depth (a receive from a
    500-message queue took 0.7 s here). Reading only the attribute asked for restores
    linear cost without changing any answer.
    """
    from moto.core.utils import camelcase_to_underscores
    from moto.sqs.models import Queue

    if getattr(Queue, "_stratoflow_lazy", False):
        return

    class _LazyAttributes(Mapping[str, Any]):
        def __init__(self, queue: Queue) -> None:
            self._queue = queue
            names = list(queue.BASE_ATTRIBUTES)
            if queue.fifo_queue:
                names += queue.FIFO_ATTRIBUTES
            if queue.kms_master_key_id:
                names += queue.KMS_ATTRIBUTES
            if queue.policy:
                names.append("Policy")
            if queue.redrive_policy:
                names.append("RedrivePolicy")
            self._names = names

        def __getitem__(self, name: str) -> Any:
            if name not in self._names:
                raise KeyError(name)
            q = self._queue
            if name == "Policy":
                return q.policy
            if name == "RedrivePolicy":
                return json.dumps(q.redrive_policy)
            value = getattr(q, camelcase_to_underscores(name))
            return str(value).lower() if isinstance(value, bool) else value

        def __iter__(self) -> Iterator[str]:
            return iter(self._names)

        def __len__(self) -> int:
            return len(self._names)

    def attributes(self: Queue) -> Mapping[str, Any]:
        return _LazyAttributes(self)

    Queue.attributes = property(attributes)  # type: ignore[assignment,method-assign]
    Queue._stratoflow_lazy = True  # type: ignore[attr-defined]


def _speed_up_moto_deletes() -> None:
    """Find a deleted message by its receipt handle instead of asking every message.

    moto's DeleteMessage asked each message in the queue, twice, whether it ever had the
    handle (building a list of its handles each time): with 10,000 messages queued, deletes
    took a quarter of the emulator's time. Every handle moto hands out is now indexed when
    it is handed out; a handle the index does not know falls back to moto's own search.
    """
    import weakref

    from moto.sqs.models import Message, Queue

    if getattr(Queue, "_stratoflow_deletes", False):
        return
    by_handle: weakref.WeakValueDictionary[str, Message] = weakref.WeakValueDictionary()
    mark_received = Message.mark_received
    delete_message = Queue.delete_message

    def received(self: Message, visibility_timeout: int | None = None) -> None:
        mark_received(self, visibility_timeout)
        by_handle[str(self.receipt_handle)] = self

    def delete(self: Queue, receipt_handle: str) -> None:
        if receipt_handle in self.deleted_messages:
            return
        message = by_handle.get(receipt_handle)
        try:
            if message is None:
                raise ValueError(receipt_handle)
            # In place and in one step (list.remove holds the interpreter lock throughout):
            # moto's copy-and-replace could drop a message sent meanwhile.
            self._messages.remove(message)
        except ValueError:
            delete_message(self, receipt_handle)
            return
        self.pending_messages.discard(message)
        self.deleted_messages.update(message.all_receipt_handles)

    Message.mark_received = received  # type: ignore[method-assign]
    Queue.delete_message = delete  # type: ignore[method-assign]
    Queue._stratoflow_deletes = True  # type: ignore[attr-defined]


_WRITE_LOCK = threading.RLock()


def _serialised(method: Any) -> Any:
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _WRITE_LOCK:
            return method(self, *args, **kwargs)

    return locked


def _speed_up_moto_transactions() -> None:
    """Roll moto's transactions back item by item instead of copying whole tables.

    moto deep-copies the entire table once per item of every TransactWriteItems call, so
    that it can restore it if the transaction is cancelled; a 3-item transaction on a table
    of 10,000 items copies 30,000 items. Snapshotting only the items the transaction
    touches gives the same all-or-nothing result at a cost independent of table size.
    """
    import copy

    import moto.dynamodb.models as models
    from moto.dynamodb.models.dynamo_type import DynamoType

    backend_cls = models.DynamoDBBackend
    if getattr(backend_cls, "_stratoflow_fast_tx", False):
        return
    original = backend_cls.transact_write_items

    class _NoTableCopy:
        """Stands in for the `copy` module inside moto's transaction code only."""

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            if isinstance(value, models.Table):
                return value
            return copy.deepcopy(value, memo)

        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        with _WRITE_LOCK:
            return _transact(self, transact_items)

    def _transact(self: Any, transact_items: list[dict[str, Any]]) -> Any:
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

    # Only transact_write_items copies Table objects in that module; every other deepcopy
    # there passes through unchanged.
    models.copy = _NoTableCopy()
    backend_cls.transact_write_items = transact_write_items
    # moto's writes are not atomic under its threaded server: two concurrent transactions
    # adding to one counter lost an increment (198 of 200). DynamoDB serialises writes to
    # an item, so the emulator serialises its writes too.
    for name in ("update_item", "put_item", "delete_item", "batch_write_item"):
        setattr(backend_cls, name, _serialised(getattr(backend_cls, name)))
    backend_cls._stratoflow_fast_tx = True


def _speed_up_moto_routing() -> None:
    """List moto's service modules once, not on every request.

    moto's server looks up which service a request is for by listing its package folder
    (a directory read and ~200 stat calls) on every request, under a global lock that
    serialises all requests behind it.
    """
    import moto.backends as backends

    if getattr(backends, "_stratoflow_cached", False):
        return
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]
    backends._stratoflow_cached = True  # type: ignore[attr-defined]


def _speed_up_moto_message_clock() -> None:
    """Read the clock once per receive, as a float.

    moto decides each message's visibility through datetime arithmetic (utcnow minus the
    epoch), twice per message and once more per listing, on every ReceiveMessage: with a few
    hundred messages in flight that was a tenth of the emulator's time. time.time() is the
    same clock (the Unix epoch in UTC) at a fraction of the cost.
    """
    import time

    from moto.sqs.models import Message, Queue

    if getattr(Queue, "_stratoflow_clock", False):
        return

    def messages(queue: Queue) -> list[Message]:
        now = time.time() * 1000.0
        return [m for m in queue._messages if now > m.visible_at and now >= m.delayed_until]

    Message.visible = property(lambda m: time.time() * 1000.0 > m.visible_at)  # type: ignore[method-assign,assignment]
    Message.delayed = property(lambda m: time.time() * 1000.0 < m.delayed_until)  # type: ignore[method-assign,assignment]
    Queue.messages = property(messages)  # type: ignore[method-assign,assignment]
    Queue._stratoflow_clock = True  # type: ignore[attr-defined]


_EXPRESSION_CACHE_SIZE = 1024


def _speed_up_moto_expressions() -> None:
    """Parse each DynamoDB expression once, not on every request.

    The engine sends the same few expressions over and over, with new values. moto parsed
    an update expression twice per UpdateItem, deep-copied its syntax tree once or twice
    (in pure Python), walked the tree once per each of its ten validators with ABC
    isinstance checks at every node, and lexed every condition expression with a dozen
    regular expressions: about 60% of the emulator's time. Here a parsed tree is cached
    per expression text and copied from its pickled form (moto's validators work on their
    own copy, never on the parsed tree), the walkers remember which node types they act
    on, and condition expressions are lexed once per text. Every answer stays the same.
    """
    import copy
    import functools
    import pickle
    from collections import deque

    from moto.dynamodb import comparisons
    from moto.dynamodb.parsing import ast_nodes, expressions, validators

    if getattr(expressions, "_stratoflow_cached", False):
        return
    parser = expressions.UpdateExpressionParser
    parse = parser.make.__func__  # type: ignore[attr-defined]
    # Each cached tree with its pickled form; the tree is held here so that its id stays its.
    pickled: dict[int, tuple[Any, bytes]] = {}

    @functools.lru_cache(maxsize=_EXPRESSION_CACHE_SIZE)
    def make(expression: str) -> Any:
        tree = parse(parser, expression)
        if len(pickled) >= _EXPRESSION_CACHE_SIZE:
            make.cache_clear()
            pickled.clear()
            passed.clear()  # keyed by the ids of trees that are gone
        pickled[id(tree)] = (tree, pickle.dumps(tree, pickle.HIGHEST_PROTOCOL))
        return tree

    def cached_make(cls: Any, expression: str) -> Any:
        return make(expression)

    parser.make = classmethod(cached_make)  # type: ignore[method-assign,assignment]
    deepcopy = copy.deepcopy

    def copy_tree(value: Any, memo: Any = None) -> Any:
        entry = pickled.get(id(value))
        if entry is not None and entry[0] is value:
            return pickle.loads(entry[1])
        return deepcopy(value, memo)

    # The validators module's own name for deepcopy: its validators copy the tree with it.
    validators.deepcopy = copy_tree

    # Two of the validators look at the expression's shape and names only (one clause of
    # each kind, no path updated twice): a cached tree that passed them with the same names
    # passes them again, so they run once per expression instead of on every request.
    shape_checks = (validators.ActionCountValidator, validators.OverlappingPathsValidator)
    passed: set[tuple[int, tuple[tuple[str, str], ...]]] = set()
    update_validator = validators.UpdateExpressionValidator
    update_init = update_validator.__init__
    update_validate = update_validator.validate

    def init_update(
        self: Any, expression: Any, expression_attribute_names: Any, *a: Any, **k: Any
    ) -> None:
        update_init(self, expression, expression_attribute_names, *a, **k)
        entry = pickled.get(id(expression))
        self._stratoflow_shape = None
        if entry is not None and entry[0] is expression:
            key = (id(expression), tuple(sorted((expression_attribute_names or {}).items())))
            self._stratoflow_shape = key
            if key in passed:
                self.processors = [p for p in self.processors if not isinstance(p, shape_checks)]

    def validate_update(self: Any) -> Any:
        result = update_validate(self)
        if self._stratoflow_shape is not None:
            passed.add(self._stratoflow_shape)
        return result

    update_validator.__init__ = init_update  # type: ignore[method-assign]
    update_validator.validate = validate_update  # type: ignore[method-assign]

    traverser = ast_nodes.DepthFirstTraverser
    node_class = ast_nodes.Node
    base_pre = traverser.pre_processing_of_child
    is_node: dict[type, bool] = {}
    acts_on: dict[tuple[type, type], bool] = {}

    def traverse_node_recursively(self: Any, node: Any, child_id: int = -1) -> Any:
        kind = type(node)
        node_like = is_node.get(kind)
        if node_like is None:
            node_like = is_node[kind] = isinstance(node, node_class)
        if not node_like:
            return node
        parent_node = node.parent
        if node.children is not None:
            pre = None if type(self).pre_processing_of_child is base_pre else self
            for i, child_node in enumerate(node.children):
                if pre is not None:
                    pre.pre_processing_of_child(node, i)
                traverse_node_recursively(self, child_node, i)
        key = (type(self), kind)
        acts = acts_on.get(key)
        if acts is None:
            # Which node types a walker processes depends on its class alone.
            acts = acts_on[key] = isinstance(node, self.nodes_to_be_processed())
        if acts:
            node = self.process(node)
            node.parent = parent_node
            if parent_node:
                parent_node.children[child_id] = node
        return node

    traverser.traverse_node_recursively = traverse_node_recursively  # type: ignore[method-assign]

    lexer = comparisons.ConditionExpressionParser
    lex = lexer._lex_condition_expression

    @functools.lru_cache(maxsize=_EXPRESSION_CACHE_SIZE)
    def lexed(expression: str) -> tuple[Any, ...]:
        probe = lexer(expression, {}, {})
        return tuple(lex(probe))

    def cached_lex(self: Any) -> Any:
        # The lexer's nodes are immutable named tuples: each parse gets its own deque.
        return deque(lexed(self.condition_expression))

    lexer._lex_condition_expression = cached_lex  # type: ignore[method-assign]

    # A condition is parsed up to three times per transaction item (checked, evaluated, then
    # again by the update): parsed once per text, names and values. The parsed condition
    # is only evaluated against items, never changed.
    parse_condition = lexer.parse
    parsed: dict[tuple[str, str, str], tuple[Any, list[str], list[str]]] = {}

    def cached_parse(self: Any) -> Any:
        try:
            key = (
                self.condition_expression or "",
                json.dumps(self.expression_attribute_names, sort_keys=True),
                json.dumps(self.expression_attribute_values, sort_keys=True),
            )
        except TypeError:  # binary values: not worth a key
            return parse_condition(self)
        hit = parsed.get(key)
        if hit is None:
            names_before = len(self.expr_attr_names_found)
            values_before = len(self.expr_attr_values_found)
            op = parse_condition(self)
            if len(parsed) >= _EXPRESSION_CACHE_SIZE:
                parsed.clear()
            hit = parsed[key] = (
                op,
                self.expr_attr_names_found[names_before:],
                self.expr_attr_values_found[values_before:],
            )
            return op
        op, names_found, values_found = hit
        self.expr_attr_names_found.extend(names_found)
        self.expr_attr_values_found.extend(values_found)
        return op

    lexer.parse = cached_parse  # type: ignore[method-assign]
    expressions._stratoflow_cached = True  # type: ignore[attr-defined]


_SCALARS = {"S": str, "N": str, "BOOL": bool, "NULL": bool}


def _plain_attribute(value: Any) -> bool:
    """A DynamoDB attribute value that JSON carries as it is (no binary, nothing to format)."""
    if type(value) is not dict or len(value) != 1:
        return False
    ((kind, inner),) = value.items()
    scalar = _SCALARS.get(kind)
    if scalar is not None:
        return type(inner) is scalar
    if kind in ("SS", "NS"):
        return type(inner) is list and all(type(x) is str for x in inner)
    if kind == "M":
        return type(inner) is dict and all(_plain_attribute(x) for x in inner.values())
    if kind == "L":
        return type(inner) is list and all(_plain_attribute(x) for x in inner)
    return False


def _speed_up_moto_responses() -> None:
    """Answer DynamoDB items without walking the response model member by member.

    moto's response serializer visits every member of a shape for every value: an
    AttributeValue has ten (S, N, B, SS, …) and each is looked up under several spellings,
    so one item of a dozen attributes cost hundreds of lookups. An attribute value that is
    already what JSON carries (anything but binary) is written as it is: the same bytes.
    moto also listed its handler's methods with `inspect` on every request; that list is
    fixed per class.
    """
    import functools

    import moto.core.responses as responses
    from moto.core.serialize import BaseJSONSerializer

    if getattr(BaseJSONSerializer, "_stratoflow_fast", False):
        return
    responses.method_names_from_class = functools.cache(responses.method_names_from_class)
    structure = BaseJSONSerializer._serialize_type_structure

    def serialize_structure(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if key and shape.name == "AttributeValue" and _plain_attribute(value):
            serialized[self.get_serialized_name(shape, key)] = value
            return
        structure(self, serialized, value, shape, key)

    BaseJSONSerializer._serialize_type_structure = serialize_structure  # type: ignore[method-assign]
    BaseJSONSerializer._stratoflow_fast = True  # type: ignore[attr-defined]


def speed_up_moto() -> None:
    """Apply the emulator's fixes (idempotent): faster, and writes made atomic."""
    _speed_up_moto_sqs()
    _speed_up_moto_message_clock()
    _speed_up_moto_deletes()
    _speed_up_moto_transactions()
    _speed_up_moto_routing()
    _speed_up_moto_expressions()
    _speed_up_moto_responses()


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
        if not line:
            self._proc.wait(timeout=5)
            raise RuntimeError(
                f"the embedded AWS emulator did not start (exit code {self._proc.returncode}); "
                "is moto installed? pip install 'stratoflow[local]'"
            )
        self.endpoint_url = json.loads(line)["endpoint_url"]
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
