"""`RunStore` on DynamoDB: runs, their tasks, waiting entries and compensations.

The items and their keys are laid out in `stratoflow.aws.dynamodb.keys`; the attempt
methods (claims, retries, settlements, decisions) are in `stratoflow.aws.dynamodb.attempts`,
redrives, marks and deadlines in `stratoflow.aws.dynamodb.redrives`.
A failed condition is an outcome of the ports, never an exception
(`stratoflow.aws.dynamodb.transactions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stratoflow.aws.dynamodb.codec import (
    _item,
    _plain,
    _run_from,
    _ser,
    _set_fields,
    _task_from,
)
from stratoflow.aws.dynamodb.keys import QUIET_PARTITION, _key, _run_pk, _waiting_key
from stratoflow.aws.dynamodb.redrives import RunRedrives
from stratoflow.aws.dynamodb.transactions import (
    _applied,
    _backoff,
    _conditional_batch,
    _transact,
    _transact_reasons,
)
from stratoflow.config import LEASE_INDEX_PARTITION, LEASE_INDEX_SORT
from stratoflow.core.records import CompensationRecord, RunRecord, TaskRecord
from stratoflow.core.states import RunStatus, TaskStatus
from stratoflow.ports import SlotOutcome

_START_PARTITION = "START"
"""The `leases` index's partition of the runs whose start is not complete (attempts are
under "LEASE", deadlines under "DEADLINE"): one sparse index serves all the tick's look-ups."""


class DynamoRunStore(RunRedrives):
    """`RunStore` over one DynamoDB table."""

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
        # A start still to do: the run sits in the sparse `leases` index, under its own
        # partition, until `finish_start`, so the dispatcher's tick finds it if the message
        # handing the start off is lost (`pending_starts`). A started run sits under the
        # quiet-run watch's partition, sorted by its last sign of life (`quiet_runs`).
        item[LEASE_INDEX_PARTITION] = {
            "S": _START_PARTITION if run.started_at is None else QUIET_PARTITION
        }
        item[LEASE_INDEX_SORT] = {"S": run.created_at}
        # The run and its entry in the workflow's run history, newest first by sort key.
        history = {
            **_key(f"WF#{run.workflow_id}", f"RUN#{run.created_at}#{run.run_id}"),
            "run_id": {"S": run.run_id},
        }
        puts: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {"Put": {"TableName": self.table, "Item": history}},
        ]
        if run.deadline is not None:
            item["deadline"] = {"S": run.deadline}
            puts.append(self._deadline_put(run.run_id, run.deadline))
        return _transact(self._db, puts) is None

    def begin_run(self, run_id: str) -> bool:
        return _applied(
            self._db.update_item,
            TableName=self.table,
            Key=_key(_run_pk(run_id), "#RUN"),
            UpdateExpression="SET #st = :running",
            ConditionExpression="#st = :queued",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={
                ":running": {"S": RunStatus.RUNNING.value},
                ":queued": {"S": RunStatus.QUEUED.value},
            },
        )

    def finish_start(self, run_id: str, now: str) -> bool:
        return _applied(
            self._db.update_item,
            TableName=self.table,
            Key=_key(_run_pk(run_id), "#RUN"),
            # From the start's partition of the `leases` index to the quiet-run watch's.
            UpdateExpression=f"SET started_at = :now, {LEASE_INDEX_PARTITION} = :watch, "
            f"{LEASE_INDEX_SORT} = :now",
            ConditionExpression="#st = :running AND attribute_not_exists(started_at)",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={
                ":now": {"S": now},
                ":running": {"S": RunStatus.RUNNING.value},
                ":watch": {"S": QUIET_PARTITION},
            },
        )

    def pending_starts(self, before: str, limit: int) -> list[str]:
        return [i["pk"]["S"][4:] for i in self._index_items(_START_PARTITION, before, limit)]

    def quiet_runs(self, before: str, limit: int) -> list[tuple[str, str]]:
        items = self._index_items(QUIET_PARTITION, before, limit)
        return [(i["pk"]["S"][4:], i[LEASE_INDEX_SORT]["S"]) for i in items]

    def touch_run(self, run_id: str, seen: str, now: str) -> bool:
        return _applied(
            self._db.update_item,
            TableName=self.table,
            Key=_key(_run_pk(run_id), "#RUN"),
            UpdateExpression=f"SET {LEASE_INDEX_SORT} = :now",
            ConditionExpression=f"{LEASE_INDEX_PARTITION} = :p AND {LEASE_INDEX_SORT} = :seen "
            "AND #st IN (:running, :comp)",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={
                ":now": {"S": now},
                ":seen": {"S": seen},
                ":p": {"S": QUIET_PARTITION},
                ":running": {"S": RunStatus.RUNNING.value},
                ":comp": {"S": RunStatus.COMPENSATING.value},
            },
        )

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

    def start_waiting(self, run_id: str, key: str, task_id: str, cap: int) -> SlotOutcome:
        pk = _run_pk(run_id)
        reasons = _transact_reasons(
            self._db,
            [
                {
                    "Delete": {
                        "TableName": self.table,
                        "Key": _key(pk, key),
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": _key(pk, f"T#{task_id}"),
                        "UpdateExpression": "SET #st = :queued",
                        "ConditionExpression": "#st = :waiting",
                        "ExpressionAttributeNames": {"#st": "status"},
                        "ExpressionAttributeValues": {
                            ":queued": {"S": TaskStatus.QUEUED.value},
                            ":waiting": {"S": TaskStatus.WAITING.value},
                        },
                    }
                },
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": _key(pk, "#RUN"),
                        "UpdateExpression": "ADD active :one",
                        "ConditionExpression": "attribute_not_exists(active) OR active < :cap",
                        "ExpressionAttributeValues": {
                            ":one": {"N": "1"},
                            ":cap": {"N": str(cap)},
                        },
                    }
                },
            ],
        )
        if reasons is None:
            return SlotOutcome.STARTED
        failed = [r.get("Code") == "ConditionalCheckFailed" for r in reasons]
        if failed[0]:
            return SlotOutcome.GONE
        if failed[1]:
            # The task moved on (or was never decided waiting): the entry is stale.
            self._db.delete_item(TableName=self.table, Key=_key(pk, key))
            return SlotOutcome.GONE
        return SlotOutcome.FULL

    # -- run end and compensations

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        now: str,
        compensations: Sequence[str] = (),
        release_workflow: str | None = None,
        reason: str | None = None,
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
        if reason is not None:
            update += ", reason = :why"
            values[":why"] = {"S": reason}
        condition = "#st = :running"
        if status in (RunStatus.FAILED, RunStatus.CANCELLED):
            condition = "#st IN (:running, :comp)"
            values[":comp"] = {"S": RunStatus.COMPENSATING.value}
        if status is RunStatus.CANCELLED:
            # A queued run may be cancelled before it starts; its start is then never done.
            condition = "#st IN (:running, :comp, :queued)"
            values[":queued"] = {"S": RunStatus.QUEUED.value}
        if status is not RunStatus.COMPENSATING:
            # Ended: out of the `leases` index (a start still to do, or a quiet-run watch).
            update += f" REMOVE {LEASE_INDEX_PARTITION}, {LEASE_INDEX_SORT}"
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
        return _transact(self._db, [{"Update": run_update}, release]) is None

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

        return _conditional_batch(self._db, task_ids, update)

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
