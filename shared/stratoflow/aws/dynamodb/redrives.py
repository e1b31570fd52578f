"""`RunStore` on DynamoDB, continued: redrives (`retry`, `rerun`), marks and the runs'
deadlines (run-level timeouts): the methods that put a finished run back to running, or
that decide when a running one must end. `DynamoRunStore` (`stratoflow.aws.dynamodb.runs`)
adds the runs themselves, the concurrency cap and compensations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from stratoflow.aws.dynamodb.attempts import RunAttempts
from stratoflow.aws.dynamodb.codec import _COUNTERS, _ser
from stratoflow.aws.dynamodb.keys import COUNTER_ATTRIBUTE, QUIET_PARTITION, _key, _run_pk
from stratoflow.aws.dynamodb.transactions import (
    TRANSACTION_LIMIT,
    _applied,
    _transact,
    _transact_reasons,
)
from stratoflow.config import LEASE_INDEX_PARTITION, LEASE_INDEX_SORT
from stratoflow.core.records import MarkRecord, RunRecord, iso
from stratoflow.core.states import RunStatus, TaskStatus

_DEADLINE_PARTITION = "DEADLINE"
"""The `leases` index's partition of the runs' deadlines (`RUN#<id>` / `#DEADLINE` items)."""
_DEADLINE_KEY = "#DEADLINE"
_RESET_REMOVES = (
    "attempt, exit_code, timed_out, started_at, finished_at, settled_at, decided_at, "
    f"output_tail, log_ref, #err, propagated, lease_until, worker, {LEASE_INDEX_PARTITION}, "
    f"{LEASE_INDEX_SORT}"
)


class RunRedrives(RunAttempts):
    """The redrive, mark and deadline methods of `DynamoRunStore`."""

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
                f"leaf_bad = :lb, active = :zero, {LEASE_INDEX_PARTITION} = :watch, "
                f"{LEASE_INDEX_SORT} = :now REMOVE finished_at, compensations, reason",
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
                    ":watch": {"S": QUIET_PARTITION},
                    ":now": {"S": iso(datetime.now(UTC))},
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
        items = self._index_items(_DEADLINE_PARTITION, now, limit, inclusive=True)
        return [(i["pk"]["S"][4:], i[LEASE_INDEX_SORT]["S"]) for i in items]

    def clear_deadline(self, run_id: str, deadline: str) -> None:
        _applied(
            self._db.delete_item,
            TableName=self.table,
            Key=_key(_run_pk(run_id), _DEADLINE_KEY),
            ConditionExpression=f"{LEASE_INDEX_SORT} = :dl",
            ExpressionAttributeValues={":dl": {"S": deadline}},
        )
