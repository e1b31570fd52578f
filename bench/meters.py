"""What the benchmark measures inside the engine process, through botocore's event hooks and
thin wrappers around the handlers. Nothing here changes what the engine sends.

* `ApiCallCounter` (the project's own, `stratoflow.aws.callcount`) counts calls by service
  and operation at `before-call`: once per call as AWS bills it, botocore's retries excluded.
* `RequestDetail` adds what billing needs beyond the count: items per DynamoDB call
  (transaction items, batch keys, by kind of item), SQS payload bytes, messages per receive,
  and the client-side latency of each call.
* `HandlerTimer` wraps the Lambda handlers (and the command runner) to time invocations.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from stratoflow.aws.callcount import ApiCallCounter

POLLING_OPERATIONS = frozenset(
    {
        "ReceiveMessage",
        "DeleteMessage",
        "DeleteMessageBatch",
        "ChangeMessageVisibility",
        "ChangeMessageVisibilityBatch",
    }
)
"""SQS operations that Lambda's event-source mapping makes on AWS (the local runtime's pumps
here): billed SQS requests, but not made by stratoflow's code."""


def item_kind(key: dict[str, Any] | None) -> str:
    """run | task | marker | waiting | compensation | workflow | other, from an item key."""
    if not key:
        return "other"
    pk = key.get("pk", {}).get("S", "")
    sk = key.get("sk", {}).get("S", "")
    if pk.startswith("WF#"):
        return "workflow"  # its versions, META, run index
    if sk == "#RUN":
        return "run"
    for prefix, kind in (
        ("T#", "task"),
        ("M#", "marker"),
        ("W#", "waiting"),
        ("C#", "compensation"),
    ):
        if sk.startswith(prefix):
            return kind
    return "other"


class RequestDetail:
    """Per-call details for the cost model; attach after the counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registered: list[tuple[Any, str, Callable[..., Any]]] = []
        self.reset()

    def reset(self) -> None:
        with self._lock:
            # (kind, transactional) → items written; (kind, consistent) → items read
            self.writes: Counter[tuple[str, bool]] = Counter()
            self.reads: Counter[tuple[str, bool]] = Counter()
            self.edge_counter_items = 0
            """Transaction items that are a dependent's upstream-counter `ADD` (one per edge)."""
            self.edge_reads = 0
            """Dependents read back (BatchGetItem keys of tasks) after a finalize."""
            self.transactions: list[int] = []
            self.query_bytes: list[int] = []
            self.sqs_payload: Counter[str] = Counter()
            self.sqs_chunks: Counter[str] = Counter()
            self.receives = Counter[str]()  # "empty" | "with_messages"
            self.messages_received = 0
            self.latency: dict[str, list[float]] = defaultdict(list)
            self.errors: Counter[str] = Counter()

    def attach(self, client: Any) -> None:
        service = client.meta.service_model.service_id.hyphenize()
        hooks: list[tuple[str, Callable[..., Any]]] = [
            (f"before-call.{service}", self._start),
            (f"after-call.{service}", self._end),
            (f"after-call-error.{service}", self._error),
        ]
        if service == "dynamodb":
            hooks.append(("before-parameter-build.dynamodb", self._dynamodb))
        if service == "sqs":
            hooks.append(("before-parameter-build.sqs", self._sqs))
        for event, handler in hooks:
            client.meta.events.register(event, handler)
            self._registered.append((client, event, handler))

    def detach(self) -> None:
        for client, event, handler in self._registered:
            client.meta.events.unregister(event, handler)
        self._registered.clear()

    # -- hooks

    def _start(self, context: dict[str, Any], **_: Any) -> None:
        context["_bench_t0"] = time.perf_counter()

    def _end(
        self, event_name: str, context: dict[str, Any], parsed: dict[str, Any], **_: Any
    ) -> None:
        t0 = context.pop("_bench_t0", None)
        _, service, operation = event_name.split(".", 2)
        op = f"{service}.{operation}"
        with self._lock:
            if t0 is not None:
                self.latency[op].append(time.perf_counter() - t0)
            if "Error" in parsed and parsed.get("Error", {}).get("Code"):
                self.errors[f"{op}:{parsed['Error']['Code']}"] += 1
            if op == "sqs.ReceiveMessage":
                n = len(parsed.get("Messages", []) or [])
                self.receives["with_messages" if n else "empty"] += 1
                self.messages_received += n
            if op == "dynamodb.Query":
                from cost import dynamodb_item_size

                self.query_bytes.append(sum(dynamodb_item_size(i) for i in parsed.get("Items", [])))

    def _error(self, event_name: str, context: dict[str, Any], **_: Any) -> None:
        context.pop("_bench_t0", None)
        with self._lock:
            self.errors[event_name.split(".", 1)[1] + ":exception"] += 1

    def _dynamodb(self, event_name: str, params: dict[str, Any], **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[1]
        with self._lock:
            if operation == "TransactWriteItems":
                items = params.get("TransactItems", [])
                self.transactions.append(len(items))
                for item in items:
                    ((action, body),) = item.items()
                    key = body.get("Key") or _key_of(body.get("Item"))
                    self.writes[(item_kind(key), True)] += 1
                    expr = body.get("UpdateExpression", "")
                    if action == "Update" and item_kind(key) == "task" and expr.startswith("ADD"):
                        self.edge_counter_items += 1
            elif operation in ("PutItem", "UpdateItem", "DeleteItem"):
                key = params.get("Key") or _key_of(params.get("Item"))
                self.writes[(item_kind(key), False)] += 1
            elif operation == "BatchWriteItem":
                for requests in params.get("RequestItems", {}).values():
                    for r in requests:
                        ((_, body),) = r.items()
                        key = body.get("Key") or _key_of(body.get("Item"))
                        self.writes[(item_kind(key), False)] += 1
            elif operation == "GetItem":
                self.reads[(item_kind(params.get("Key")), bool(params.get("ConsistentRead")))] += 1
            elif operation == "BatchGetItem":
                for spec in params.get("RequestItems", {}).values():
                    consistent = bool(spec.get("ConsistentRead"))
                    for key in spec.get("Keys", []):
                        kind = item_kind(key)
                        self.reads[(kind, consistent)] += 1
                        if kind == "task":
                            self.edge_reads += 1

    def _sqs(self, event_name: str, params: dict[str, Any], **_: Any) -> None:
        from cost import sqs_billed_requests

        operation = event_name.rsplit(".", 1)[1]
        if operation == "SendMessageBatch":
            size = sum(len(e.get("MessageBody", "").encode()) for e in params.get("Entries", []))
        elif operation == "SendMessage":
            size = len(params.get("MessageBody", "").encode())
        else:
            return
        with self._lock:
            self.sqs_payload[operation] += size
            self.sqs_chunks[operation] += sqs_billed_requests(size)


def _key_of(item: dict[str, Any] | None) -> dict[str, Any] | None:
    if not item:
        return None
    return {k: item[k] for k in ("pk", "sk") if k in item}


class Meters:
    """The call counter plus request details, on the runtime's boto3 clients."""

    def __init__(self, clients: list[Any]) -> None:
        self.counter = ApiCallCounter()
        self.detail = RequestDetail()
        self._clients = clients
        for c in clients:
            self.counter.attach(c)
            self.detail.attach(c)

    def reset(self) -> None:
        self.counter.reset()
        self.detail.reset()

    def detach(self) -> None:
        for c in self._clients:
            c.meta.events.unregister("before-call.*.*", self.counter._count)
        self.detail.detach()


class HandlerTimer:
    """Times each invocation of a handler function (and the command time inside it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self.invocations: dict[str, list[tuple[float, int, float]]] = defaultdict(list)
        """name → [(seconds, records in the event, command seconds inside)]"""
        self.active = False

    def wrap_handler(self, name: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        def timed(event: dict[str, Any], context: Any, *wiring: Any) -> Any:
            self._local.command = 0.0
            t0 = time.perf_counter()
            try:
                return handler(event, context, *wiring)
            finally:
                elapsed = time.perf_counter() - t0
                if self.active:
                    records = len(event.get("Records", [])) if isinstance(event, dict) else 0
                    with self._lock:
                        self.invocations[name].append(
                            (elapsed, records, getattr(self._local, "command", 0.0))
                        )

        timed.__wrapped__ = handler  # type: ignore[attr-defined]
        return timed

    def wrap_runner(self, runner: Any) -> Any:
        """The command runner, timing each command (a `CommandRunner`: called to run a
        command, and asked where an attempt's log goes)."""
        timer = self

        class Timed:
            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                result = runner(*args, **kwargs)
                try:
                    from datetime import datetime

                    started = datetime.fromisoformat(result.started_at)
                    finished = datetime.fromisoformat(result.finished_at)
                    seconds = (finished - started).total_seconds()
                except (TypeError, ValueError, AttributeError):
                    seconds = 0.0
                timer._local.command = getattr(timer._local, "command", 0.0) + seconds
                return result

            def log_ref(self, log_name: str) -> str:
                return str(runner.log_ref(log_name))

        return Timed()

    def reset(self) -> None:
        with self._lock:
            self.invocations.clear()
