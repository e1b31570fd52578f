"""The attempt half of `DynamoRunStore`: claims, retries and settlements of task attempts.

A settlement is the task's conditional transition and its fan-out to the children's
upstream counters, in transactions of at most `TRANSACTION_LIMIT` items (markers
`M#<task_id>#<n>` make the later chunks idempotent); the decisions of pending tasks and the
lease index of running attempts are here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from stratoflow.aws.clients import AwsClients
from stratoflow.aws.dynamodb.codec import _ser, _set_fields, _task_from
from stratoflow.aws.dynamodb.keys import COUNTER_ATTRIBUTE, _key, _lease_at, _run_pk
from stratoflow.aws.dynamodb.transactions import (
    TRANSACTION_LIMIT,
    _applied,
    _code,
    _conditional_batch,
    _transact_reasons,
)
from stratoflow.config import LEASE_INDEX, LEASE_INDEX_PARTITION, LEASE_INDEX_SORT
from stratoflow.core.records import TaskRecord, iso
from stratoflow.core.states import RunStatus, TaskStatus
from stratoflow.ports import Claim, ClaimOutcome, Finalized, FinalizeOutcome, Settlement

_SAME_DRIVE = "(attribute_not_exists(drive) OR drive = :d)"


class RunAttempts:
    """The task-attempt methods of `DynamoRunStore` (`stratoflow.aws.dynamodb.runs`), which
    adds the runs, the concurrency cap, run ends, redrives and compensations."""

    def __init__(self, clients: AwsClients, table: str) -> None:
        self._clients = clients
        self.table = table

    @property
    def _db(self) -> Any:
        return self._clients.dynamodb

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
                    # A new attempt starts without the fields of the one before (a
                    # settlement leaves what its report lacks, such as an error, as it was).
                    f"REMOVE finished_at, exit_code, #err{worker_remove}"
                ),
                ConditionExpression=(
                    "(attribute_not_exists(#st) OR #st IN (:q, :w, :p, :r)) AND "
                    "(attribute_not_exists(attempt) OR attempt = :prev) AND "
                    "(attribute_not_exists(drive) OR drive = :d)"
                ),
                ExpressionAttributeNames={"#st": "status", "#err": "error"},
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
        counter = COUNTER_ATTRIBUTE[s.status]
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
        now = str(s.fields.get("settled_at") or iso(datetime.now(UTC)))
        # A settlement is the run's sign of life (`quiet_runs`).
        run_values[":progress"] = {"S": now}
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
                    "UpdateExpression": f"SET {LEASE_INDEX_SORT} = :progress ADD "
                    + ", ".join(run_adds),
                    "ExpressionAttributeValues": run_values,
                    **run_condition,
                }
            },
        ]
        outcome = FinalizeOutcome.APPLIED
        guards = dict(s.guards)
        while True:
            updates = self._child_updates(pk, chunks[0], counter, s.decided, now, guards)
            reasons = _transact_reasons(self._db, first + updates)
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
                reasons = _transact_reasons(self._db, [marker, *updates])
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

    def decide_task(self, run_id: str, task_id: str, status: TaskStatus, now: str) -> bool:
        return _applied(self._db.update_item, **self._decision(run_id, task_id, status, now))

    def decide_tasks(
        self, run_id: str, task_ids: Sequence[str], status: TaskStatus, now: str
    ) -> list[str]:
        # All-or-nothing per transaction; when another parent decided one of them first
        # (a race), each is decided alone so that each has one winner.
        return _conditional_batch(
            self._db, task_ids, lambda task_id: self._decision(run_id, task_id, status, now)
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

    def expired_attempts(self, now: float, limit: int) -> list[tuple[str, str]]:
        """(run id, task id) of running attempts whose lease ended before `now`."""
        items = self._index_items("LEASE", _lease_at(now), limit)
        return [(i["pk"]["S"][4:], i["sk"]["S"][2:]) for i in items]

    def _index_items(
        self, partition: str, before: str, limit: int, *, inclusive: bool = False
    ) -> list[dict[str, Any]]:
        """The items of one partition of the sparse `leases` index sorted before `before`
        (or at it, `inclusive`), oldest first: what each of the tick's look-ups reads."""
        resp = self._db.query(
            TableName=self.table,
            IndexName=LEASE_INDEX,
            KeyConditionExpression=f"{LEASE_INDEX_PARTITION} = :p AND {LEASE_INDEX_SORT} "
            + ("<= :b" if inclusive else "< :b"),
            ExpressionAttributeValues={":p": {"S": partition}, ":b": {"S": before}},
            Limit=limit,
        )
        return list(resp.get("Items", []))

    def get_task(self, run_id: str, task_id: str) -> TaskRecord:
        return _task_from(task_id, self._get_task_item(run_id, task_id))
