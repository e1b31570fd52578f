"""`RunStore` on DynamoDB: runs, their tasks, waiting entries and compensations.

The items and their keys are laid out in `stratoflow.aws.dynamodb.keys`; the attempt
methods (claims, retries, settlements, decisions) are in `stratoflow.aws.dynamodb.attempts`.
A failed condition is an outcome of the ports, never an exception
(`stratoflow.aws.dynamodb.transactions`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from stratoflow.aws.dynamodb.attempts import RunAttempts
from stratoflow.aws.dynamodb.codec import (
    _COUNTERS,
    _item,
    _plain,
    _run_from,
    _ser,
    _set_fields,
    _task_from,
)
from stratoflow.aws.dynamodb.keys import COUNTER_ATTRIBUTE, _key, _run_pk, _waiting_key
from stratoflow.aws.dynamodb.transactions import (
    TRANSACTION_LIMIT,
    _applied,
    _backoff,
    _conditional_batch,
    _transact,
    _transact_reasons,
)
from stratoflow.config import LEASE_INDEX, LEASE_INDEX_PARTITION, LEASE_INDEX_SORT
from stratoflow.core.records import CompensationRecord, MarkRecord, RunRecord, TaskRecord
from stratoflow.core.states import RunStatus, TaskStatus
from stratoflow.ports import SlotOutcome

_START_PARTITION = "START"
"""The `leases` index's partition of the runs whose start is not complete (attempts are
under "LEASE"): one sparse index serves both of the tick's look-ups."""
_DEADLINE_PARTITION = "DEADLINE"
"""The `leases` index's partition of the runs' deadlines (`RUN#<id>` / `#DEADLINE` items)."""
_DEADLINE_KEY = "#DEADLINE"
_RESET_REMOVES = (
    "attempt, exit_code, timed_out, started_at, finished_at, settled_at, decided_at, "
    f"output_tail, log_ref, #err, propagated, lease_until, worker, {LEASE_INDEX_PARTITION}, "
    f"{LEASE_INDEX_SORT}"
)


class DynamoRunStore(RunAttempts):
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
        if run.started_at is None:
            # A start still to do: the run sits in the sparse `leases` index, under its own
            # partition, until `finish_start`, so the dispatcher's tick finds it if the
            # message handing the start off is lost (`pending_starts`).
            item[LEASE_INDEX_PARTITION] = {"S": _START_PARTITION}
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

    def _deadline_put(self, run_id: str, deadline: str) -> dict[str, Any]:
        # The run's entry in the sparse `leases` index under the DEADLINE partition: an
        # item of its own, since the run item may be under START at the same time.
        return {
            "Put": {
                "TableName": self.table,
                "Item": {
                    **_key(_run_pk(run_id), _DEADLINE_KEY),
                    LEASE_INDEX_PARTITION: {"S": _DEADLINE_PARTITION},
                    LEASE_INDEX_SORT: {"S": deadline},
                },
            }
        }

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
            UpdateExpression=f"SET started_at = :now REMOVE {LEASE_INDEX_PARTITION}, "
            f"{LEASE_INDEX_SORT}",
            ConditionExpression="#st = :running AND attribute_not_exists(started_at)",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={
                ":now": {"S": now},
                ":running": {"S": RunStatus.RUNNING.value},
            },
        )

    def pending_starts(self, before: str, limit: int) -> list[str]:
        resp = self._db.query(
            TableName=self.table,
            IndexName=LEASE_INDEX,
            KeyConditionExpression=f"{LEASE_INDEX_PARTITION} = :p AND {LEASE_INDEX_SORT} < :b",
            ExpressionAttributeValues={":p": {"S": _START_PARTITION}, ":b": {"S": before}},
            Limit=limit,
        )
        return [i["pk"]["S"][4:] for i in resp.get("Items", [])]

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

    def redrive(
        self,
        run: RunRecord,
        resets: dict[str, dict[TaskStatus, int]],
        final_count: int,
        release_workflow: str | None,
        *,
        leaf_bad: int = 0,
        marks: Sequence[MarkRecord] = (),
        deadline: str | None = None,
    ) -> bool:
        """Put `resets` (task → its upstream counters from the tasks kept) back to pending
        and `marks` to their final status in drive `run.drive + 1`, then the run back to
        running. False if another redrive or a change of the run came first."""
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
                    **{
                        f":{c}": {"N": str(counters.get(s, 0))}
                        for s, c in COUNTER_ATTRIBUTE.items()
                    },
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
        marked = {m.task_id: m for m in marks}

        def write(task_id: str) -> dict[str, Any]:
            if task_id not in marked:
                return update(task_id)
            mark = marked[task_id]
            return {
                "TableName": self.table,
                "Key": _key(pk, f"T#{task_id}"),
                # Final and propagated: its dependents' counters are rebuilt by the resets.
                "UpdateExpression": "SET #st = :s, drive = :d, settled_at = :at, "
                f"propagated = :true REMOVE lease_until, {LEASE_INDEX_PARTITION}, "
                f"{LEASE_INDEX_SORT}",
                "ConditionExpression": "attribute_not_exists(drive) OR drive < :d",
                "ExpressionAttributeNames": {"#st": "status"},
                "ExpressionAttributeValues": {
                    ":s": {"S": mark.status},
                    ":d": {"N": str(drive)},
                    ":at": {"S": mark.at},
                    ":true": {"BOOL": True},
                },
            }

        tasks = [*marked, *resets]
        for start in range(0, len(tasks), TRANSACTION_LIMIT - 1):
            chunk = tasks[start : start + TRANSACTION_LIMIT - 1]
            reasons = _transact_reasons(
                self._db, [unchanged, *({"Update": write(t)} for t in chunk)]
            )
            if reasons is None:
                continue
            if reasons[0].get("Code") == "ConditionalCheckFailed":
                return False  # the run changed: another redrive, or a stale record
            # Some were reset by a concurrent redrive of the same record: the rest one by one.
            for task_id in chunk:
                reasons = _transact_reasons(self._db, [unchanged, {"Update": write(task_id)}])
                if reasons is not None and reasons[0].get("Code") == "ConditionalCheckFailed":
                    return False
        run_update: dict[str, Any] = {
            "Update": {
                "TableName": self.table,
                "Key": _key(pk, "#RUN"),
                "UpdateExpression": "SET #st = :running, drive = :d, final_count = :fc, "
                "leaf_bad = :lb, active = :zero REMOVE finished_at, compensations, reason",
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
                    ":lb": {"N": str(leaf_bad)},
                    ":zero": {"N": "0"},
                },
            }
        }
        sets = run_update["Update"]
        if marks:
            sets["UpdateExpression"] = sets["UpdateExpression"].replace(
                " REMOVE", ", marks = list_append(if_not_exists(marks, :none), :marks) REMOVE"
            )
            sets["ExpressionAttributeValues"][":none"] = {"L": []}
            sets["ExpressionAttributeValues"][":marks"] = _ser([m.to_dict() for m in marks])
        items = [run_update]
        if deadline is not None:
            sets["UpdateExpression"] = sets["UpdateExpression"].replace(
                " REMOVE", ", deadline = :dl REMOVE"
            )
            sets["ExpressionAttributeValues"][":dl"] = {"S": deadline}
            items.append(self._deadline_put(run.run_id, deadline))
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
        if _transact(self._db, items) is not None:
            return False
        for start in range(0, len(stale), 25):
            requests = [
                {"DeleteRequest": {"Key": _key(pk, sk)}} for sk in stale[start : start + 25]
            ]
            while requests:
                resp = self._db.batch_write_item(RequestItems={self.table: requests})
                requests = resp.get("UnprocessedItems", {}).get(self.table, [])
        return True

    def mark_task(
        self, run_id: str, task_id: str, expected: TaskStatus, mark: MarkRecord, drive: int
    ) -> bool:
        pk = _run_pk(run_id)
        task_condition = "#st = :expected"
        if expected is TaskStatus.PENDING:
            task_condition = "attribute_not_exists(#st) OR #st = :expected"
        reasons = _transact_reasons(
            self._db,
            [
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": _key(pk, f"T#{task_id}"),
                        # Final, not yet propagated: `finalize_task` without an attempt
                        # then counts it, as it does a decided task.
                        "UpdateExpression": "SET #st = :s, drive = :d, settled_at = :at "
                        f"REMOVE propagated, lease_until, {LEASE_INDEX_PARTITION}, "
                        f"{LEASE_INDEX_SORT}",
                        "ConditionExpression": task_condition,
                        "ExpressionAttributeNames": {"#st": "status"},
                        "ExpressionAttributeValues": {
                            ":s": {"S": mark.status},
                            ":d": {"N": str(drive)},
                            ":at": {"S": mark.at},
                            ":expected": {"S": expected.value},
                        },
                    }
                },
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": _key(pk, "#RUN"),
                        "UpdateExpression": "SET marks = list_append(if_not_exists(marks, "
                        ":none), :marks)",
                        # A run never redriven may have no `drive` (read as 0).
                        "ConditionExpression": "#st = :running AND "
                        + (
                            "(attribute_not_exists(drive) OR drive = :d)"
                            if drive == 0
                            else "drive = :d"
                        ),
                        "ExpressionAttributeNames": {"#st": "status"},
                        "ExpressionAttributeValues": {
                            ":running": {"S": RunStatus.RUNNING.value},
                            ":d": {"N": str(drive)},
                            ":none": {"L": []},
                            ":marks": _ser([mark.to_dict()]),
                        },
                    }
                },
            ],
        )
        return reasons is None

    def set_deadline(self, run_id: str, deadline: str) -> bool:
        reasons = _transact_reasons(
            self._db,
            [
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": _key(_run_pk(run_id), "#RUN"),
                        "UpdateExpression": "SET deadline = :dl",
                        "ConditionExpression": "#st IN (:queued, :running) AND "
                        "attribute_not_exists(deadline)",
                        "ExpressionAttributeNames": {"#st": "status"},
                        "ExpressionAttributeValues": {
                            ":dl": {"S": deadline},
                            ":queued": {"S": RunStatus.QUEUED.value},
                            ":running": {"S": RunStatus.RUNNING.value},
                        },
                    }
                },
                self._deadline_put(run_id, deadline),
            ],
        )
        return reasons is None

    def overdue_runs(self, now: str, limit: int) -> list[tuple[str, str]]:
        resp = self._db.query(
            TableName=self.table,
            IndexName=LEASE_INDEX,
            KeyConditionExpression=f"{LEASE_INDEX_PARTITION} = :p AND {LEASE_INDEX_SORT} <= :n",
            ExpressionAttributeValues={":p": {"S": _DEADLINE_PARTITION}, ":n": {"S": now}},
            Limit=limit,
        )
        return [(i["pk"]["S"][4:], i[LEASE_INDEX_SORT]["S"]) for i in resp.get("Items", [])]

    def clear_deadline(self, run_id: str, deadline: str) -> None:
        _applied(
            self._db.delete_item,
            TableName=self.table,
            Key=_key(_run_pk(run_id), _DEADLINE_KEY),
            ConditionExpression=f"{LEASE_INDEX_SORT} = :dl",
            ExpressionAttributeValues={":dl": {"S": deadline}},
        )

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
