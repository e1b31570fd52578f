"""DynamoDB adapters: run state (`DynamoRunStore`) and workflow definitions.

One table, items grouped by partition:
  RUN#<run_id> / #RUN               the run: status, counters (final_count, leaf_bad, active)
  RUN#<run_id> / T#<task_id>        a task: status, attempt, result, upstream counters
  RUN#<run_id> / W#<prio>#<t>#<id>  a ready task waiting for a concurrency slot
  RUN#<run_id> / M#<task_id>#<n>    marker: chunk n of a task's propagation was applied
  RUN#<run_id> / C#<index>          one compensation of a failed run
  WF#<workflow_id> / META           latest version and its content hash
  WF#<workflow_id> / V#<version>    an immutable definition (inline, or a pointer to S3)

ConditionalCheckFailed and TransactionCanceled are translated into the ports' outcomes here;
no boto3 exception crosses this module's boundary.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from stratoflow.aws.clients import AwsClients
from stratoflow.config import (
    DEFINITIONS_PREFIX,
    DUE_INDEX,
    DUE_INDEX_PARTITION,
    DUE_INDEX_SORT,
    LEASE_INDEX,
    LEASE_INDEX_PARTITION,
    LEASE_INDEX_SORT,
)
from stratoflow.core.model import MAX_PRIORITY, Workflow
from stratoflow.core.plan import Plan
from stratoflow.core.records import (
    CompensationRecord,
    RunRecord,
    TaskRecord,
    WorkflowMeta,
    iso,
)
from stratoflow.core.states import COUNTER_FOR_STATUS, RunStatus, TaskStatus
from stratoflow.ports import (
    Claim,
    ClaimOutcome,
    DefinitionNotFound,
    Finalized,
    FinalizeOutcome,
    Settlement,
)

_SER = TypeSerializer()
_DE = TypeDeserializer()

TRANSACTION_LIMIT = 100
"""Items per TransactWriteItems call (DynamoDB's limit since 2022)."""
INLINE_DEFINITION_LIMIT = 300_000
"""Definitions above this size go to S3: an item may not exceed 400 KB (invariant 7)."""
_RETRYABLE_TX = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
_COUNTERS = tuple(COUNTER_FOR_STATUS.values())
_SAME_DRIVE = "(attribute_not_exists(drive) OR drive = :d)"
_RESET_REMOVES = (
    "attempt, exit_code, timed_out, started_at, finished_at, settled_at, decided_at, "
    f"output_tail, log_ref, #err, propagated, lease_until, worker, {LEASE_INDEX_PARTITION}, "
    f"{LEASE_INDEX_SORT}"
)
_RETRY_STATES = (TaskStatus.QUEUED, TaskStatus.WAITING, TaskStatus.PENDING, TaskStatus.UP_FOR_RETRY)


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _run_pk(run_id: str) -> str:
    return f"RUN#{run_id}"


def _ser(value: Any) -> dict[str, Any]:
    if isinstance(value, float):
        value = Decimal(repr(value))
    return _SER.serialize(value)


def _item(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser(v) for k, v in data.items() if v is not None}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    out = {k: _DE.deserialize(v) for k, v in item.items()}
    return {k: _undecimal(v) for k, v in out.items()}


def _undecimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _undecimal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_undecimal(v) for v in value]
    return value


def _applied(write: Any, **request: Any) -> bool:
    """Make a conditional write; False (not an exception) when its condition failed."""
    try:
        write(**request)
    except ClientError as err:
        if _code(err) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _run_from(item: dict[str, Any]) -> RunRecord:
    d = _plain(item)
    return RunRecord(
        run_id=d["run_id"],
        workflow_id=d["workflow_id"],
        version=int(d["version"]),
        status=RunStatus(d["status"]),
        logical_date=d["logical_date"],
        created_at=d["created_at"],
        n_tasks=int(d["n_tasks"]),
        params=d.get("params") or {},
        concurrency=d.get("concurrency"),
        workdir=d.get("workdir"),
        trigger=d.get("trigger", "manual"),
        started_at=d.get("started_at"),
        finished_at=d.get("finished_at"),
        final_count=int(d.get("final_count", 0)),
        leaf_bad=int(d.get("leaf_bad", 0)),
        active=int(d.get("active", 0)),
        compensations=tuple(d.get("compensations") or ()),
        drive=int(d.get("drive", 0)),
    )


def _task_from(task_id: str, item: dict[str, Any] | None) -> TaskRecord:
    if not item:
        return TaskRecord(task_id=task_id)
    d = _plain(item)
    return TaskRecord(
        task_id=task_id,
        status=TaskStatus(d.get("status", TaskStatus.PENDING)),
        attempt=int(d.get("attempt", 0)),
        exit_code=d.get("exit_code"),
        timed_out=bool(d.get("timed_out", False)),
        started_at=d.get("started_at"),
        finished_at=d.get("finished_at"),
        settled_at=d.get("settled_at"),
        output_tail=d.get("output_tail", ""),
        lease_until=d.get("lease_until"),
        log_ref=d.get("log_ref"),
        error=d.get("error"),
        counters={c: int(d.get(c, 0)) for c in _COUNTERS if c in d},
        logs=tuple(d.get("logs") or ()),
        worker=d.get("worker"),
        drive=int(d.get("drive", 0)),
    )


def _lease_at(epoch: float) -> str:
    # Sortable text of a lease's end, for the `leases` index.
    return iso(datetime.fromtimestamp(epoch, UTC)) or ""


def _waiting_key(priority: int, now: str, task_id: str) -> str:
    # Sorts ascending by (−priority, arrival): highest priority first, then first come.
    return f"W#{MAX_PRIORITY * 2 - (priority + MAX_PRIORITY):07d}#{now}#{task_id}"


class DynamoRunStore:
    """`RunStore` over one DynamoDB table."""

    def __init__(self, clients: AwsClients, table: str) -> None:
        self._clients = clients
        self.table = table

    @property
    def _db(self) -> Any:
        return self._clients.dynamodb

    # -- runs

    def create_run(self, run: RunRecord) -> bool:
        item = _item(
            {
                "run_id": run.run_id,
                "workflow_id": run.workflow_id,
                "version": run.version,
                "status": run.status.value,
                "logical_date": run.logical_date,
                "created_at": run.created_at,
                "started_at": run.started_at,
                "n_tasks": run.n_tasks,
                "params": run.params,
                "concurrency": run.concurrency,
                "workdir": run.workdir,
                "trigger": run.trigger,
                "final_count": 0,
                "leaf_bad": 0,
                "active": 0,
            }
        )
        item.update(_key(_run_pk(run.run_id), "#RUN"))
        # The run and its entry in the workflow's run history, newest first by sort key.
        history = {
            **_key(f"WF#{run.workflow_id}", f"RUN#{run.created_at}#{run.run_id}"),
            "run_id": {"S": run.run_id},
        }
        reason = self._transact(
            [
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": item,
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {"Put": {"TableName": self.table, "Item": history}},
            ]
        )
        return reason is None

    def list_runs(self, workflow_id: str, limit: int) -> list[RunRecord]:
        """The workflow's runs, newest first."""
        resp = self._db.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
            ExpressionAttributeValues={":pk": {"S": f"WF#{workflow_id}"}, ":p": {"S": "RUN#"}},
            ScanIndexForward=False,
            Limit=limit,
        )
        runs = [self.get_run(item["run_id"]["S"]) for item in resp.get("Items", [])]
        return [r for r in runs if r is not None]

    def page_runs(
        self, workflow_id: str, limit: int, after: str | None = None
    ) -> tuple[list[RunRecord], str | None]:
        """A page of the workflow's runs, newest first, and the cursor of the next page."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
            "ExpressionAttributeValues": {":pk": {"S": f"WF#{workflow_id}"}, ":p": {"S": "RUN#"}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if after:
            kwargs["ExclusiveStartKey"] = _key(f"WF#{workflow_id}", after)
        resp = self._db.query(**kwargs)
        items = resp.get("Items", [])
        found: dict[str, RunRecord] = {}
        keys = [_key(_run_pk(i["run_id"]["S"]), "#RUN") for i in items]
        while keys:
            got = self._db.batch_get_item(RequestItems={self.table: {"Keys": keys}})
            for item in got.get("Responses", {}).get(self.table, []):
                run = _run_from(item)
                found[run.run_id] = run
            keys = got.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
        runs = [found[i["run_id"]["S"]] for i in items if i["run_id"]["S"] in found]
        last = resp.get("LastEvaluatedKey")
        return runs, (last["sk"]["S"] if last else None)

    def get_run(self, run_id: str) -> RunRecord | None:
        resp = self._db.get_item(
            TableName=self.table, Key=_key(_run_pk(run_id), "#RUN"), ConsistentRead=True
        )
        item = resp.get("Item")
        return _run_from(item) if item else None

    def get_run_and_tasks(
        self, run_id: str, task_ids: Sequence[str]
    ) -> tuple[RunRecord, dict[str, TaskRecord]]:
        pk = _run_pk(run_id)
        keys = [_key(pk, "#RUN")] + [_key(pk, f"T#{t}") for t in task_ids]
        found: dict[str, dict[str, Any]] = {}
        for chunk_start in range(0, len(keys), 100):
            pending: list[dict[str, Any]] = keys[chunk_start : chunk_start + 100]
            attempt = 0
            while pending:
                resp = self._db.batch_get_item(
                    RequestItems={self.table: {"Keys": pending, "ConsistentRead": True}}
                )
                for item in resp.get("Responses", {}).get(self.table, []):
                    found[item["sk"]["S"]] = item
                pending = resp.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
                attempt += 1
                if pending:
                    _backoff(attempt)
        run_item = found.get("#RUN")
        if run_item is None:
            raise LookupError(f"run {run_id!r} does not exist")
        return _run_from(run_item), {t: _task_from(t, found.get(f"T#{t}")) for t in task_ids}

    def list_tasks(self, run_id: str) -> dict[str, TaskRecord]:
        out: dict[str, TaskRecord] = {}
        for item in self._query(_run_pk(run_id), "T#"):
            task_id = item["sk"]["S"][2:]
            out[task_id] = _task_from(task_id, item)
        return out

    def _query(self, pk: str, prefix: str, limit: int | None = None) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":p": {"S": prefix}},
            "ConsistentRead": True,
        }
        if limit:
            kwargs["Limit"] = limit
        while True:
            resp = self._db.query(**kwargs)
            yield from resp.get("Items", [])
            last = resp.get("LastEvaluatedKey")
            if not last or limit:
                return
            kwargs["ExclusiveStartKey"] = last

    # -- attempts

    def claim_attempt(
        self,
        run_id: str,
        task_id: str,
        attempt: int,
        started_at: str,
        lease_until: float,
        now: float,
        *,
        drive: int = 0,
        log_ref: str = "",
        worker: str | None = None,
    ) -> Claim:
        # The attempt's log reference is appended in the claim itself: the log of every
        # attempt, across retries and redrives, stays findable at no extra request.
        worker_update = "worker = :worker, " if worker else ""
        worker_remove = "" if worker else ", worker"
        extra: dict[str, Any] = {":worker": {"S": worker}} if worker else {}
        try:
            resp = self._db.update_item(
                TableName=self.table,
                Key=_key(_run_pk(run_id), f"T#{task_id}"),
                UpdateExpression=(
                    "SET #st = :running, attempt = :a, started_at = :s, lease_until = :l, "
                    f"timed_out = :false, {LEASE_INDEX_PARTITION} = :lease_pk, "
                    f"{LEASE_INDEX_SORT} = :lease_at, drive = :d, {worker_update}"
                    "logs = list_append(if_not_exists(logs, :nil), :ref) "
                    f"REMOVE finished_at, exit_code{worker_remove}"
                ),
                ConditionExpression=(
                    "(attribute_not_exists(#st) OR #st IN (:q, :w, :p, :r)) AND "
                    "(attribute_not_exists(attempt) OR attempt = :prev) AND "
                    "(attribute_not_exists(drive) OR drive = :d)"
                ),
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={
                    **extra,
                    ":d": {"N": str(drive)},
                    ":nil": {"L": []},
                    ":ref": {"L": [{"S": log_ref}]},
                    ":running": {"S": TaskStatus.RUNNING.value},
                    ":a": {"N": str(attempt)},
                    ":prev": {"N": str(attempt - 1)},
                    ":s": {"S": started_at},
                    ":l": _ser(lease_until),
                    ":lease_pk": {"S": "LEASE"},
                    ":lease_at": {"S": _lease_at(lease_until)},
                    ":false": {"BOOL": False},
                    ":q": {"S": TaskStatus.QUEUED.value},
                    ":w": {"S": TaskStatus.WAITING.value},
                    ":p": {"S": TaskStatus.PENDING.value},
                    ":r": {"S": TaskStatus.UP_FOR_RETRY.value},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                # the log list's length numbers the attempt across redrives, at no extra call
                ReturnValues="UPDATED_NEW",
            )
            logs = resp.get("Attributes", {}).get("logs", {}).get("L")
            return Claim(ClaimOutcome.CLAIMED, lease_until, len(logs) if logs else attempt)
        except ClientError as err:
            if _code(err) != "ConditionalCheckFailedException":
                raise
            old = err.response.get("Item") or self._get_task_item(run_id, task_id)
        rec = _task_from(task_id, old)
        if rec.status is TaskStatus.RUNNING and rec.attempt == attempt and rec.drive == drive:
            if rec.lease_until is not None and rec.lease_until > now:
                return Claim(ClaimOutcome.HELD, rec.lease_until)
            return Claim(ClaimOutcome.EXPIRED, rec.lease_until)
        return Claim(ClaimOutcome.DUPLICATE)

    def _get_task_item(self, run_id: str, task_id: str) -> dict[str, Any] | None:
        resp = self._db.get_item(
            TableName=self.table, Key=_key(_run_pk(run_id), f"T#{task_id}"), ConsistentRead=True
        )
        return resp.get("Item")

    def retry_attempt(
        self, run_id: str, task_id: str, attempt: int, fields: dict[str, Any], drive: int = 0
    ) -> bool:
        sets, names, values = _set_fields(fields)
        values.update(
            {
                ":retry": {"S": TaskStatus.UP_FOR_RETRY.value},
                ":running": {"S": TaskStatus.RUNNING.value},
                ":a": {"N": str(attempt)},
                ":d": {"N": str(drive)},
            }
        )
        try:
            self._db.update_item(
                TableName=self.table,
                Key=_key(_run_pk(run_id), f"T#{task_id}"),
                UpdateExpression="SET #st = :retry"
                + "".join(f", {s}" for s in sets)
                + f" REMOVE lease_until, {LEASE_INDEX_PARTITION}, {LEASE_INDEX_SORT}",
                ConditionExpression=f"#st = :running AND attempt = :a AND {_SAME_DRIVE}",
                ExpressionAttributeNames={"#st": "status", **names},
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return True
        except ClientError as err:
            if _code(err) != "ConditionalCheckFailedException":
                raise
            old = err.response.get("Item") or self._get_task_item(run_id, task_id)
        rec = _task_from(task_id, old)
        return (
            rec.status is TaskStatus.UP_FOR_RETRY and rec.attempt == attempt and rec.drive == drive
        )

    def finalize_task(
        self,
        run_id: str,
        settlement: Settlement,
        on_chunk: Callable[[Sequence[str]], None] | None = None,
    ) -> Finalized:
        s = settlement
        pk = _run_pk(run_id)
        counter = COUNTER_FOR_STATUS[s.status]
        children = list(s.children)
        first_room = TRANSACTION_LIMIT - 2
        chunks = [children[:first_room]] + [
            children[i : i + TRANSACTION_LIMIT - 1]
            for i in range(first_room, len(children), TRANSACTION_LIMIT - 1)
        ]
        # Chunk 0 carries the task's own conditional transition: it is the idempotency key
        # of the whole settlement, and it moves atomically with the counters it implies.
        sets, names, values = _set_fields(s.fields)
        values.update({":final": {"S": s.status.value}, ":true": {"BOOL": True}})
        if s.attempt is not None:
            values.update(
                {
                    ":running": {"S": TaskStatus.RUNNING.value},
                    ":a": {"N": str(s.attempt)},
                    ":d": {"N": str(s.drive)},
                }
            )
            condition = f"#st = :running AND attempt = :a AND {_SAME_DRIVE}"
            update = "SET #st = :final, propagated = :true" + "".join(f", {x}" for x in sets)
            update += f" REMOVE lease_until, {LEASE_INDEX_PARTITION}, {LEASE_INDEX_SORT}"
        else:
            condition = "#st = :final AND attribute_not_exists(propagated)"
            update = "SET propagated = :true" + "".join(f", {x}" for x in sets)
        run_adds = ["final_count :one"]
        run_values: dict[str, Any] = {":one": {"N": "1"}}
        run_condition: dict[str, Any] = {}
        if s.require_running:
            run_condition = {
                "ConditionExpression": "#st = :running_run",
                "ExpressionAttributeNames": {"#st": "status"},
            }
            run_values[":running_run"] = {"S": RunStatus.RUNNING.value}
        if s.bad_leaf:
            run_adds.append("leaf_bad :one")
        if s.releases_slot:
            run_adds.append("active :minus")
            run_values[":minus"] = {"N": "-1"}
        first = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": _key(pk, f"T#{s.task_id}"),
                    "UpdateExpression": update,
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": {"#st": "status", **names},
                    "ExpressionAttributeValues": values,
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
            {
                "Update": {
                    "TableName": self.table,
                    "Key": _key(pk, "#RUN"),
                    "UpdateExpression": "ADD " + ", ".join(run_adds),
                    "ExpressionAttributeValues": run_values,
                    **run_condition,
                }
            },
        ]
        now = str(s.fields.get("settled_at") or iso(datetime.now(UTC)))
        outcome = FinalizeOutcome.APPLIED
        guards = dict(s.guards)
        while True:
            updates = self._child_updates(pk, chunks[0], counter, s.decided, now, guards)
            reasons = self._transact_reasons(first + updates)
            if reasons is None:
                break
            if reasons[0].get("Code") == "ConditionalCheckFailed":
                reason = reasons[0]
                old = _task_from(
                    s.task_id, reason.get("Item") or self._get_task_item(run_id, s.task_id)
                )
                done_before = old.status is s.status and (
                    (s.attempt is not None and old.attempt == s.attempt and old.drive == s.drive)
                    or s.attempt is None
                )
                if not done_before:
                    return Finalized(FinalizeOutcome.STALE)
                outcome = FinalizeOutcome.ALREADY
                break
            if reasons[1].get("Code") == "ConditionalCheckFailed":
                return Finalized(FinalizeOutcome.RUN_ENDED)
            self._drop_failed_guards(guards, chunks[0], reasons[2:])
        applied = outcome is FinalizeOutcome.APPLIED
        if applied and on_chunk is not None:
            on_chunk(chunks[0])
        for n, chunk in enumerate(chunks[1:], start=1):
            marker = {
                "Put": {
                    "TableName": self.table,
                    "Item": _key(pk, f"M#{s.task_id}#{n}"),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
            while True:
                updates = self._child_updates(pk, chunk, counter, s.decided, now, guards)
                reasons = self._transact_reasons([marker, *updates])
                if reasons is None or reasons[0].get("Code") == "ConditionalCheckFailed":
                    break  # written now, or by an earlier delivery
                self._drop_failed_guards(guards, chunk, reasons[1:])
            if applied and reasons is None and on_chunk is not None:
                on_chunk(chunk)
        if not applied:
            return Finalized(outcome)
        return Finalized(outcome, frozenset(guards))

    @staticmethod
    def _drop_failed_guards(
        guards: dict[str, int], children: Sequence[str], reasons: Sequence[dict[str, Any]]
    ) -> None:
        """The children whose guard failed (decided already, or this is their last parent)
        are counted again without one; any other failure is not ours to retry."""
        failed = [
            child
            for child, reason in zip(children, reasons, strict=False)
            if reason.get("Code") == "ConditionalCheckFailed"
        ]
        if not failed or any(child not in guards for child in failed):
            raise RuntimeError(f"transaction cancelled: {list(reasons)}")
        for child in failed:
            del guards[child]

    def _child_updates(
        self,
        pk: str,
        children: Sequence[str],
        counter: str,
        decided: Mapping[str, TaskStatus],
        now: str,
        guards: Mapping[str, int],
    ) -> list[dict[str, Any]]:
        updates = []
        for child in children:
            update: dict[str, Any] = {
                "TableName": self.table,
                "Key": _key(pk, f"T#{child}"),
                "UpdateExpression": f"ADD {counter} :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
            status = decided.get(child)
            if status is not None:
                # Its only parent decides it, with the count: a status it already has (the
                # run was cancelled, say) is left as it is.
                final = status in (TaskStatus.SKIPPED, TaskStatus.UPSTREAM_FAILED)
                update["UpdateExpression"] += (
                    " SET #st = if_not_exists(#st, :decided), "
                    "decided_at = if_not_exists(decided_at, :now)"
                    + (", settled_at = if_not_exists(settled_at, :now)" if final else "")
                )
                update["ExpressionAttributeNames"] = {"#st": "status"}
                update["ExpressionAttributeValues"].update(
                    {":decided": {"S": status.value}, ":now": {"S": now}}
                )
            elif child in guards:
                # Still pending, and not its last parent: this count cannot decide it.
                update["ConditionExpression"] = (
                    f"(attribute_not_exists(#st) OR #st = :pending) AND "
                    f"(attribute_not_exists({counter}) OR {counter} < :last)"
                )
                update["ExpressionAttributeNames"] = {"#st": "status"}
                update["ExpressionAttributeValues"].update(
                    {
                        ":pending": {"S": TaskStatus.PENDING.value},
                        ":last": {"N": str(guards[child] - 1)},
                    }
                )
            updates.append({"Update": update})
        return updates

    def _transact(self, items: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Run a transaction; None if it applied, else the first item's cancellation reason
        when that item's condition failed. Conflicts with concurrent transactions retry."""
        reasons = self._transact_reasons(items)
        if reasons is None:
            return None
        if reasons[0].get("Code") == "ConditionalCheckFailed":
            return reasons[0]
        raise RuntimeError(f"transaction cancelled: {reasons}")

    def _transact_reasons(self, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Run a transaction; None if it applied, else every item's cancellation reason
        when a condition failed. Conflicts with concurrent transactions retry."""
        attempt = 0
        while True:
            try:
                self._db.transact_write_items(TransactItems=items)
                return None
            except ClientError as err:
                if _code(err) != "TransactionCanceledException":
                    raise
                reasons = err.response.get("CancellationReasons") or []
                codes = {r.get("Code") for r in reasons}
                if "ConditionalCheckFailed" in codes:
                    return list(reasons)
                if not codes & _RETRYABLE_TX or attempt >= 12:
                    raise
                attempt += 1
                _backoff(attempt)

    def decide_task(self, run_id: str, task_id: str, status: TaskStatus, now: str) -> bool:
        return _applied(self._db.update_item, **self._decision(run_id, task_id, status, now))

    def decide_tasks(
        self, run_id: str, task_ids: Sequence[str], status: TaskStatus, now: str
    ) -> list[str]:
        # All-or-nothing per transaction; when another parent decided one of them first
        # (a race), each is decided alone so that each has one winner.
        return self._conditional_batch(
            task_ids, lambda task_id: self._decision(run_id, task_id, status, now)
        )

    def _decision(self, run_id: str, task_id: str, status: TaskStatus, now: str) -> dict[str, Any]:
        """pending → status, as an UpdateItem request (or a transaction's Update)."""
        extra = ""
        if status in (TaskStatus.SKIPPED, TaskStatus.UPSTREAM_FAILED, TaskStatus.CANCELLED):
            extra = ", settled_at = :now"
        return {
            "TableName": self.table,
            "Key": _key(_run_pk(run_id), f"T#{task_id}"),
            "UpdateExpression": "SET #st = :s, decided_at = :now" + extra,
            "ConditionExpression": "attribute_not_exists(#st) OR #st = :pending",
            "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": {
                ":s": {"S": status.value},
                ":pending": {"S": TaskStatus.PENDING.value},
                ":now": {"S": now},
            },
        }

    def _transact_all(self, items: list[dict[str, Any]]) -> bool:
        """True if the transaction applied; False if any item's condition failed."""
        return self._transact_reasons(items) is None

    # -- concurrency cap

    def put_waiting(self, run_id: str, task_id: str, priority: int, now: str) -> None:
        self._db.put_item(
            TableName=self.table,
            Item=_key(_run_pk(run_id), _waiting_key(priority, now, task_id)),
        )

    def peek_waiting(self, run_id: str, limit: int) -> list[tuple[str, str]]:
        out = []
        for item in self._query(_run_pk(run_id), "W#", limit=limit):
            sk = item["sk"]["S"]
            out.append((sk, sk.split("#", 3)[3]))
        return out

    def take_waiting(self, run_id: str, key: str) -> bool:
        return _applied(
            self._db.delete_item,
            TableName=self.table,
            Key=_key(_run_pk(run_id), key),
            ConditionExpression="attribute_exists(pk)",
        )

    def acquire_slot(self, run_id: str, cap: int) -> bool:
        return _applied(
            self._db.update_item,
            TableName=self.table,
            Key=_key(_run_pk(run_id), "#RUN"),
            UpdateExpression="ADD active :one",
            ConditionExpression="attribute_not_exists(active) OR active < :cap",
            ExpressionAttributeValues={":one": {"N": "1"}, ":cap": {"N": str(cap)}},
        )

    def release_slot(self, run_id: str) -> None:
        self._db.update_item(
            TableName=self.table,
            Key=_key(_run_pk(run_id), "#RUN"),
            UpdateExpression="ADD active :minus",
            ExpressionAttributeValues={":minus": {"N": "-1"}},
        )

    # -- run end and compensations

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        now: str,
        compensations: Sequence[str] = (),
        release_workflow: str | None = None,
    ) -> bool:
        values: dict[str, Any] = {
            ":s": {"S": status.value},
            ":running": {"S": RunStatus.RUNNING.value},
        }
        update = "SET #st = :s"
        if status is not RunStatus.COMPENSATING:
            update += ", finished_at = :now"
            values[":now"] = {"S": now}
        if compensations:
            update += ", compensations = :c"
            values[":c"] = _ser(list(compensations))
        condition = "#st = :running"
        if status in (RunStatus.FAILED, RunStatus.CANCELLED):
            condition = "#st IN (:running, :comp)"
            values[":comp"] = {"S": RunStatus.COMPENSATING.value}
        run_update = {
            "TableName": self.table,
            "Key": _key(_run_pk(run_id), "#RUN"),
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": values,
        }
        if release_workflow is None or status is RunStatus.COMPENSATING:
            return _applied(self._db.update_item, **run_update)
        # The run's end and its workflow's active-run count move together, or a crash in
        # between would leave the schedule blocked by max_active_runs for ever.
        release = {
            "Update": {
                "TableName": self.table,
                "Key": _key(f"WF#{release_workflow}", "META"),
                "UpdateExpression": "ADD active_runs :minus",
                "ExpressionAttributeValues": {":minus": {"N": "-1"}},
            }
        }
        return self._transact([{"Update": run_update}, release]) is None

    def cancel_unstarted(self, run_id: str, task_ids: Sequence[str], now: str) -> list[str]:
        """Mark cancelled those of `task_ids` that were queued but not started; their
        messages still in the queue then fail their claim and are dropped."""

        def update(task_id: str) -> dict[str, Any]:
            return {
                "TableName": self.table,
                "Key": _key(_run_pk(run_id), f"T#{task_id}"),
                "UpdateExpression": "SET #st = :c, settled_at = :now",
                "ConditionExpression": "attribute_not_exists(#st) OR #st IN (:q, :w, :p, :r)",
                "ExpressionAttributeNames": {"#st": "status"},
                "ExpressionAttributeValues": {
                    ":c": {"S": TaskStatus.CANCELLED.value},
                    ":now": {"S": now},
                    ":q": {"S": TaskStatus.QUEUED.value},
                    ":w": {"S": TaskStatus.WAITING.value},
                    ":p": {"S": TaskStatus.PENDING.value},
                    ":r": {"S": TaskStatus.UP_FOR_RETRY.value},
                },
            }

        return self._conditional_batch(task_ids, update)

    def _conditional_batch(self, keys: Sequence[str], update: Any) -> list[str]:
        """Apply one conditional update per key, 100 to a transaction; a transaction that
        a condition failed is done again one by one. Returns the keys that applied."""
        done: list[str] = []
        for start in range(0, len(keys), TRANSACTION_LIMIT):
            chunk = list(keys[start : start + TRANSACTION_LIMIT])
            if len(chunk) > 1 and self._transact_all([{"Update": update(k)} for k in chunk]):
                done += chunk
                continue
            done += [k for k in chunk if _applied(self._db.update_item, **update(k))]
        return done

    def redrive(
        self,
        run: RunRecord,
        resets: dict[str, dict[str, int]],
        final_count: int,
        release_workflow: str | None,
    ) -> bool:
        """Put `resets` (task → its upstream counters from the tasks kept) back to pending
        in drive `run.drive + 1`, then the run back to running. False if another redrive
        or a change of the run came first."""
        pk = _run_pk(run.run_id)
        drive = run.drive + 1
        # Markers and waiting entries of the earlier drive: deleted once this redrive has
        # won (a refused one must leave the live drive's entries alone).
        stale = [
            item["sk"]["S"]
            for prefix in ("M#", "W#")
            for item in self._query(pk, prefix)
            if prefix == "W#" or item["sk"]["S"][2:].rsplit("#", 1)[0] in resets
        ]

        def update(task_id: str) -> dict[str, Any]:
            counters = resets[task_id]
            return {
                "TableName": self.table,
                "Key": _key(pk, f"T#{task_id}"),
                # No status is pending: the one parent that decides it sets it if absent.
                "UpdateExpression": "SET drive = :d, "
                + ", ".join(f"{c} = :{c}" for c in _COUNTERS)
                + f" REMOVE #st, {_RESET_REMOVES}",
                # A task another redrive already reset (and may have started) is left alone.
                "ConditionExpression": "attribute_not_exists(drive) OR drive < :d",
                "ExpressionAttributeNames": {"#st": "status", "#err": "error"},
                "ExpressionAttributeValues": {
                    ":d": {"N": str(drive)},
                    **{f":{c}": {"N": str(counters.get(c, 0))} for c in _COUNTERS},
                },
            }

        # Each batch of resets is conditioned on the run being as this redrive read it, so a
        # redrive from a stale record resets nothing.
        unchanged = {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": _key(pk, "#RUN"),
                "ConditionExpression": (
                    "#st = :was AND (attribute_not_exists(drive) OR drive = :prev)"
                ),
                "ExpressionAttributeNames": {"#st": "status"},
                "ExpressionAttributeValues": {
                    ":was": {"S": run.status.value},
                    ":prev": {"N": str(run.drive)},
                },
            }
        }
        tasks = list(resets)
        for start in range(0, len(tasks), TRANSACTION_LIMIT - 1):
            chunk = tasks[start : start + TRANSACTION_LIMIT - 1]
            reasons = self._transact_reasons([unchanged, *({"Update": update(t)} for t in chunk)])
            if reasons is None:
                continue
            if reasons[0].get("Code") == "ConditionalCheckFailed":
                return False  # the run changed: another redrive, or a stale record
            # Some were reset by a concurrent redrive of the same record: the rest one by one.
            for task_id in chunk:
                reasons = self._transact_reasons([unchanged, {"Update": update(task_id)}])
                if reasons is not None and reasons[0].get("Code") == "ConditionalCheckFailed":
                    return False
        run_update: dict[str, Any] = {
            "Update": {
                "TableName": self.table,
                "Key": _key(pk, "#RUN"),
                "UpdateExpression": "SET #st = :running, drive = :d, final_count = :fc, "
                "leaf_bad = :zero, active = :zero REMOVE finished_at, compensations",
                "ConditionExpression": (
                    "#st = :was AND (attribute_not_exists(drive) OR drive = :prev)"
                ),
                "ExpressionAttributeNames": {"#st": "status"},
                "ExpressionAttributeValues": {
                    ":running": {"S": RunStatus.RUNNING.value},
                    ":was": {"S": run.status.value},
                    ":d": {"N": str(drive)},
                    ":prev": {"N": str(run.drive)},
                    ":fc": {"N": str(final_count)},
                    ":zero": {"N": "0"},
                },
            }
        }
        items = [run_update]
        if release_workflow is not None:
            # A redriven scheduled run counts against max_active_runs again until it ends.
            items.append(
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": _key(f"WF#{release_workflow}", "META"),
                        "UpdateExpression": "ADD active_runs :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                }
            )
        if self._transact(items) is not None:
            return False
        for start in range(0, len(stale), 25):
            requests = [
                {"DeleteRequest": {"Key": _key(pk, sk)}} for sk in stale[start : start + 25]
            ]
            while requests:
                resp = self._db.batch_write_item(RequestItems={self.table: requests})
                requests = resp.get("UnprocessedItems", {}).get(self.table, [])
        return True

    def expired_attempts(self, now: float, limit: int) -> list[tuple[str, str]]:
        """(run id, task id) of running attempts whose lease ended before `now`."""
        resp = self._db.query(
            TableName=self.table,
            IndexName=LEASE_INDEX,
            KeyConditionExpression=f"{LEASE_INDEX_PARTITION} = :p AND {LEASE_INDEX_SORT} < :now",
            ExpressionAttributeValues={":p": {"S": "LEASE"}, ":now": {"S": _lease_at(now)}},
            Limit=limit,
        )
        return [(i["pk"]["S"][4:], i["sk"]["S"][2:]) for i in resp.get("Items", [])]

    def get_task(self, run_id: str, task_id: str) -> TaskRecord:
        return _task_from(task_id, self._get_task_item(run_id, task_id))

    def claim_compensation(
        self, run_id: str, index: int, task_id: str, started_at: str, log_ref: str = ""
    ) -> bool:
        return _applied(
            self._db.put_item,
            TableName=self.table,
            Item={
                **_key(_run_pk(run_id), f"C#{index:05d}"),
                **_item(
                    {
                        "index": index,
                        "task_id": task_id,
                        "status": "running",
                        "started_at": started_at,
                        "log_ref": log_ref or None,
                    }
                ),
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def record_compensation(self, run_id: str, record: CompensationRecord) -> bool:
        sets, names, values = _set_fields(
            {
                "status": record.status,
                "exit_code": record.exit_code,
                "timed_out": record.timed_out,
                "started_at": record.started_at,
                "finished_at": record.finished_at,
                "output_tail": record.output_tail,
            }
        )
        values[":running"] = {"S": "running"}
        return _applied(
            self._db.update_item,
            TableName=self.table,
            Key=_key(_run_pk(run_id), f"C#{record.index:05d}"),
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression="#f_status = :running",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def list_compensations(self, run_id: str) -> list[CompensationRecord]:
        out = []
        for item in self._query(_run_pk(run_id), "C#"):
            d = _plain(item)
            out.append(
                CompensationRecord(
                    index=int(d["index"]),
                    task_id=d["task_id"],
                    status=d.get("status", "running"),
                    exit_code=d.get("exit_code"),
                    timed_out=bool(d.get("timed_out", False)),
                    started_at=d.get("started_at"),
                    finished_at=d.get("finished_at"),
                    output_tail=d.get("output_tail", ""),
                    log_ref=d.get("log_ref"),
                )
            )
        return sorted(out, key=lambda c: c.index)


def _set_fields(
    fields: dict[str, Any],
) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    """`#f_name = :f_name` clauses for the non-None fields (names escaped: `status` is reserved)."""
    sets: list[str] = []
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            continue
        sets.append(f"#f_{name} = :f_{name}")
        names[f"#f_{name}"] = name
        values[f":f_{name}"] = _ser(value)
    return sets, names, values


def _backoff(attempt: int) -> None:
    # Jittered exponential backoff for transaction conflicts and unprocessed keys.
    time.sleep(min(0.5, 0.005 * (2**attempt)) * random.random())


# ------------------------------------------------------------------------ definitions


class DynamoDefinitionStore:
    """Immutable, numbered workflow versions; large ones stored in S3 (invariant 7)."""

    def __init__(self, clients: AwsClients, table: str, bucket: str | None = None) -> None:
        self._clients = clients
        self.table = table
        self.bucket = bucket
        self._cache: dict[tuple[str, int], Plan] = {}
        self._lock = threading.Lock()

    @property
    def _db(self) -> Any:
        return self._clients.dynamodb

    def save_version(self, workflow: Workflow, source: str, now: datetime) -> int:
        body = workflow.model_dump_json(exclude_defaults=False)
        digest = hashlib.sha256(body.encode()).hexdigest()
        pk = f"WF#{workflow.id}"
        while True:
            meta = self._db.get_item(
                TableName=self.table, Key=_key(pk, "META"), ConsistentRead=True
            ).get("Item")
            latest = int(meta["latest_version"]["N"]) if meta else 0
            if meta and meta.get("latest_hash", {}).get("S") == digest:
                return latest
            version = latest + 1
            item = {
                **_key(pk, f"V#{version:08d}"),
                **_item(
                    {
                        "workflow_id": workflow.id,
                        "version": version,
                        "hash": digest,
                        "source": source,
                        "created_at": iso(now),
                    }
                ),
            }
            if len(body) > INLINE_DEFINITION_LIMIT:
                if not self.bucket:
                    raise ValueError(
                        f"workflow {workflow.id!r} is {len(body)} bytes, above the "
                        f"{INLINE_DEFINITION_LIMIT}-byte item limit, and no bucket is configured"
                    )
                key = f"{DEFINITIONS_PREFIX}{workflow.id}/{version:08d}.json"
                self._clients.s3.put_object(Bucket=self.bucket, Key=key, Body=body.encode())
                item["body_s3_key"] = {"S": key}
            else:
                item["body"] = {"S": body}
            meta_condition = "latest_version = :prev" if meta else "attribute_not_exists(pk)"
            meta_values: dict[str, Any] = {":v": {"N": str(version)}, ":h": {"S": digest}}
            if meta:
                meta_values[":prev"] = {"N": str(latest)}
            try:
                self._db.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": item,
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        },
                        {
                            "Update": {
                                "TableName": self.table,
                                "Key": _key(pk, "META"),
                                "UpdateExpression": "SET latest_version = :v, latest_hash = :h",
                                "ConditionExpression": meta_condition,
                                "ExpressionAttributeValues": meta_values,
                            }
                        },
                    ]
                )
                return version
            except ClientError as err:
                if _code(err) != "TransactionCanceledException":
                    raise
                # Another upload registered a version first: read again and renumber.

    def get_meta(self, workflow_id: str) -> WorkflowMeta | None:
        item = self._db.get_item(
            TableName=self.table, Key=_key(f"WF#{workflow_id}", "META"), ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        d = _plain(item)
        return WorkflowMeta(
            workflow_id=workflow_id,
            latest_version=int(d.get("latest_version", 0)),
            active_version=d.get("active_version"),
            paused=bool(d.get("paused", False)),
            schedule=d.get("schedule"),
            timezone=d.get("timezone", "UTC"),
            catchup=bool(d.get("catchup", False)),
            max_active_runs=int(d.get("max_active_runs", 1)),
            next_slot=d.get("next_slot"),
            active_runs=int(d.get("active_runs", 0)),
        )

    def activate(self, meta: WorkflowMeta) -> None:
        fields: dict[str, Any] = {
            "active_version": meta.active_version,
            "timezone": meta.timezone,
            "catchup": meta.catchup,
            "max_active_runs": meta.max_active_runs,
            "paused": meta.paused,
        }
        sets, names, values = _set_fields(fields)
        removes = []
        for name, value in (("schedule", meta.schedule), ("next_slot", meta.next_slot)):
            if value is None:
                removes.append(name)
            else:
                sets.append(f"#f_{name} = :f_{name}")
                names[f"#f_{name}"] = name
                values[f":f_{name}"] = {"S": value}
        removes += self._due_index_changes(meta, sets, values)
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        self._db.update_item(
            TableName=self.table,
            Key=_key(f"WF#{meta.workflow_id}", "META"),
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        self._db.put_item(TableName=self.table, Item=_key("WFS", meta.workflow_id))

    def list_workflows(self) -> list[WorkflowMeta]:
        """Every registered workflow (the registry partition, not a table scan)."""
        out = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": "WFS"}},
        }
        while True:
            resp = self._db.query(**kwargs)
            for item in resp.get("Items", []):
                meta = self.get_meta(item["sk"]["S"])
                if meta is not None:
                    out.append(meta)
            if not resp.get("LastEvaluatedKey"):
                return out
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    @staticmethod
    def _due_index_changes(
        meta: WorkflowMeta, sets: list[str], values: dict[str, Any]
    ) -> list[str]:
        """Put the workflow in the sparse `due` index, or take it out; returns REMOVEs."""
        if meta.schedule and meta.next_slot and not meta.paused and meta.active_version:
            sets += [f"{DUE_INDEX_PARTITION} = :due_pk", f"{DUE_INDEX_SORT} = :due_at"]
            values[":due_pk"] = {"S": "DUE"}
            values[":due_at"] = {"S": meta.next_slot}
            return []
        return [DUE_INDEX_PARTITION, DUE_INDEX_SORT]

    def set_paused(self, workflow_id: str, paused: bool) -> bool:
        meta = self.get_meta(workflow_id)
        if meta is None:
            return False
        self.activate(replace(meta, paused=paused))
        return True

    def claim_source_event(self, source: str, event_id: str) -> bool:
        return _applied(
            self._db.put_item,
            TableName=self.table,
            Item={**_key(f"SRC#{source}", f"EV#{event_id}")},
            ConditionExpression="attribute_not_exists(pk)",
        )

    def record_source_error(self, source: str, message: str | None, now: str) -> None:
        key = _key("SRCERR", source)
        if message is None:
            self._db.delete_item(TableName=self.table, Key=key)
            return
        self._db.put_item(
            TableName=self.table,
            Item={**key, "message": {"S": message}, "at": {"S": now}},
        )

    def source_errors(self) -> list[dict[str, str]]:
        resp = self._db.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "SRCERR"}},
        )
        return [
            {"source": i["sk"]["S"], "message": i["message"]["S"], "at": i["at"]["S"]}
            for i in resp.get("Items", [])
        ]

    def link_source(self, source: str, workflow_id: str) -> None:
        self._db.put_item(
            TableName=self.table,
            Item={**_key(f"SRC#{source}", "LINK"), "workflow_id": {"S": workflow_id}},
        )
        self._db.update_item(
            TableName=self.table,
            Key=_key(f"WF#{workflow_id}", "META"),
            UpdateExpression="SET active_source = :s",
            ExpressionAttributeValues={":s": {"S": source}},
        )

    def deactivate_source(self, source: str) -> str | None:
        link = self._db.get_item(
            TableName=self.table, Key=_key(f"SRC#{source}", "LINK"), ConsistentRead=True
        ).get("Item")
        if not link:
            return None
        workflow_id = link["workflow_id"]["S"]
        deactivated = _applied(
            self._db.update_item,
            TableName=self.table,
            Key=_key(f"WF#{workflow_id}", "META"),
            UpdateExpression=(
                f"REMOVE active_version, next_slot, {DUE_INDEX_PARTITION}, {DUE_INDEX_SORT}"
            ),
            # only if that file still defines the workflow: an upload of the same workflow
            # under another name has taken over since
            ConditionExpression="active_source = :s",
            ExpressionAttributeValues={":s": {"S": source}},
        )
        return workflow_id if deactivated else None

    def due_workflows(self, now: str, limit: int) -> list[str]:
        resp = self._db.query(
            TableName=self.table,
            IndexName=DUE_INDEX,
            KeyConditionExpression=f"{DUE_INDEX_PARTITION} = :due AND {DUE_INDEX_SORT} <= :now",
            ExpressionAttributeValues={":due": {"S": "DUE"}, ":now": {"S": now}},
            Limit=limit,
        )
        return [item["pk"]["S"][3:] for item in resp.get("Items", [])]

    def advance_slot(
        self, workflow_id: str, expected: str, new: str | None, max_active: int
    ) -> bool:
        values: dict[str, Any] = {
            ":expected": {"S": expected},
            ":one": {"N": "1"},
            ":max": {"N": str(max_active)},
        }
        if new is None:
            update = "REMOVE next_slot, due_pk, due_at ADD active_runs :one"
        else:
            update = "SET next_slot = :new, due_at = :new ADD active_runs :one"
            values[":new"] = {"S": new}
        return _applied(
            self._db.update_item,
            TableName=self.table,
            Key=_key(f"WF#{workflow_id}", "META"),
            UpdateExpression=update,
            ConditionExpression=(
                "next_slot = :expected AND (attribute_not_exists(active_runs) "
                "OR active_runs < :max)"
            ),
            ExpressionAttributeValues=values,
        )

    def list_versions(self, workflow_id: str) -> list[dict[str, Any]]:
        """Every stored version of the workflow, oldest first (without their bodies)."""
        out = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :v)",
            "ExpressionAttributeValues": {":pk": {"S": f"WF#{workflow_id}"}, ":v": {"S": "V#"}},
            "ProjectionExpression": "version, created_at, #src, #h",
            "ExpressionAttributeNames": {"#src": "source", "#h": "hash"},
        }
        while True:
            resp = self._db.query(**kwargs)
            out += [_plain(item) for item in resp.get("Items", [])]
            if not resp.get("LastEvaluatedKey"):
                return out
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def get_plan(self, workflow_id: str, version: int) -> Plan:
        key = (workflow_id, version)
        plan = self._cache.get(key)
        if plan is not None:
            return plan
        item = self._db.get_item(
            TableName=self.table, Key=_key(f"WF#{workflow_id}", f"V#{version:08d}")
        ).get("Item")
        if not item:
            raise DefinitionNotFound(f"workflow {workflow_id!r} has no version {version}")
        if "body" in item:
            body = item["body"]["S"]
        else:
            obj = self._clients.s3.get_object(Bucket=self.bucket, Key=item["body_s3_key"]["S"])
            body = obj["Body"].read().decode()
        plan = Plan(Workflow.model_validate_json(body), version)
        with self._lock:
            self._cache[key] = plan
        return plan
