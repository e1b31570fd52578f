"""Task and run states, and which transitions are final."""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    """A task's state within one run (Airflow's vocabulary)."""

    PENDING = "pending"
    QUEUED = "queued"
    WAITING = "waiting"  # ready, but the run's concurrency cap is reached
    RUNNING = "running"
    UP_FOR_RETRY = "up_for_retry"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


FINAL_TASK_STATUSES = frozenset(
    {
        TaskStatus.SUCCEEDED,
        TaskStatus.FAILED,
        TaskStatus.UPSTREAM_FAILED,
        TaskStatus.SKIPPED,
        TaskStatus.CANCELLED,
    }
)
GOOD_LEAF_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.SKIPPED})
"""A run succeeds when every leaf task ended in one of these."""


class RunStatus(StrEnum):
    """A run's state. `compensating` is reported as failed: the run has failed for good.
    `queued`: recorded by a trigger, its start (task records, roots enqueued) handed off."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPENSATING = "compensating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def public(self) -> str:
        """The status users see: compensation is part of a failed run."""
        return RunStatus.FAILED.value if self is RunStatus.COMPENSATING else self.value


FINAL_RUN_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
