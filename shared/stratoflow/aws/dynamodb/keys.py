"""The DynamoDB table's key layout.

One table, items grouped by partition:
  RUN#<run_id> / #RUN               the run: status, counters (final_count, leaf_bad, active);
                                    in the `leases` index (START, then QUIET) while it lives
  RUN#<run_id> / T#<task_id>        a task: status, attempt, result, upstream counters
  RUN#<run_id> / W#<prio>#<t>#<id>  a ready task waiting for a concurrency slot
  RUN#<run_id> / M#<task_id>#<n>    marker: chunk n of a task's propagation was applied
  RUN#<run_id> / C#<index>          one compensation of a failed run
  RUN#<run_id> / #DEADLINE          the run's deadline, in the `leases` index (DEADLINE)
  WF#<workflow_id> / META           latest version and its content hash
  WF#<workflow_id> / V#<version>    an immutable definition (inline, or a pointer to S3)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stratoflow.core.model import MAX_PRIORITY
from stratoflow.core.records import iso
from stratoflow.core.states import TaskStatus

COUNTER_ATTRIBUTE: dict[TaskStatus, str] = {
    TaskStatus.SUCCEEDED: "u_ok",
    TaskStatus.FAILED: "u_fail",
    TaskStatus.UPSTREAM_FAILED: "u_upfail",
    TaskStatus.SKIPPED: "u_skip",
    TaskStatus.CANCELLED: "u_cancel",
}
"""The task item's upstream counter for each final status of a parent."""


QUIET_PARTITION = "QUIET"
"""The `leases` index's partition of started runs (their `#RUN` items, under `lease_pk`),
sorted by their last sign of life (`lease_at`): what the tick's quiet-run watch reads."""


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _run_pk(run_id: str) -> str:
    return f"RUN#{run_id}"


def _lease_at(epoch: float) -> str:
    # Sortable text of a lease's end, for the `leases` index.
    return iso(datetime.fromtimestamp(epoch, UTC))


def _waiting_key(priority: int, now: str, task_id: str) -> str:
    # Sorts ascending by (−priority, arrival): highest priority first, then first come.
    return f"W#{MAX_PRIORITY * 2 - (priority + MAX_PRIORITY):07d}#{now}#{task_id}"
