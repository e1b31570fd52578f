"""Use cases of the engine. Each takes its ports (a `Ports` bundle) as an argument.

Flow: `start_run` enqueues the roots → an executor calls `execute_task` → its report
reaches `record_completion`, which records the attempt, counts it in each dependent's
upstream counters (O(out-degree), invariant 4), and enqueues the dependents whose trigger
rule became decidable — exactly once, because only the conditional `decide_task` that moves
a dependent out of pending may enqueue it (invariant 3).

One module per use case; this package re-exports their public names:

- `bundle`: the `Ports` bundle and the queue limits the use cases share.
- `start`: `start_run`; `queue_run` and `start_queued_run` (a trigger's run, recorded at
  once and started by the completion handler), `rehand_starts`; sending decided tasks to
  the queue (the concurrency cap).
- `execution`: `execute_task` and what it needs (`CommandRunner`, `RunCancelWatch`, ...).
- `settlement`: `record_completion`: retries, settling a task, deciding its dependents,
  finishing a run, compensations.
- `runs`: `trigger_run`, `cancel_run`, `retry_run`, `rerun_task`, `mark_task`,
  `time_out_run`; `perform`, the work they hand off.
- `schedules`: registering workflows, the dispatcher's tick (`nudge_overdue_runs` among
  it), backfills, a run's deadline (`arm_timeout`).
- `queries`: `run_status`, `task_logs`.
- `mend`: `mend_quiet_runs`, the tick's second chance for a run whose next step was lost
  (a report that went to the dead-letter queue after its handler had half-acted).

The real clock and ids (`SystemClock`, `RandomIds`) are adapters: `stratoflow.system`.
"""

from stratoflow.ports import CommandOutcome, CommandRunner

from .bundle import SHORT_WAIT_SECONDS, SQS_MAX_DELAY_SECONDS, Ports
from .execution import (
    CANCEL_POLL_SECONDS,
    KILL_GRACE_SECONDS,
    LEASE_MARGIN_SECONDS,
    ExecuteOutcome,
    ExecuteResult,
    RunCancelWatch,
    attempt_log_name,
    execute_task,
    task_environment,
)
from .mend import QUIET_SECONDS, mend_quiet_runs, mend_run
from .queries import run_status, task_logs
from .runs import (
    IdempotencyConflict,
    WorkflowInactive,
    cancel_run,
    mark_task,
    perform,
    rerun_task,
    retry_run,
    stop_cancelled_run,
    time_out_run,
    trigger_run,
)
from .schedules import (
    BACKFILL_LIMIT,
    CATCHUP_LIMIT,
    DUE_BATCH,
    SCHEDULE_TRIGGER,
    arm_timeout,
    backfill,
    dispatch_due,
    dispatch_workflow,
    nudge_overdue_runs,
    reap_expired_attempts,
    register_source,
    register_workflow,
    scheduled_run_id,
)
from .settlement import record_completion
from .start import (
    DECIDE_BATCH,
    START_REHAND_SECONDS,
    queue_run,
    rehand_starts,
    start_pending,
    start_queued_run,
    start_run,
)

__all__ = [
    "BACKFILL_LIMIT",
    "CANCEL_POLL_SECONDS",
    "CATCHUP_LIMIT",
    "DECIDE_BATCH",
    "DUE_BATCH",
    "KILL_GRACE_SECONDS",
    "LEASE_MARGIN_SECONDS",
    "QUIET_SECONDS",
    "SCHEDULE_TRIGGER",
    "SHORT_WAIT_SECONDS",
    "SQS_MAX_DELAY_SECONDS",
    "START_REHAND_SECONDS",
    "CommandOutcome",
    "CommandRunner",
    "ExecuteOutcome",
    "ExecuteResult",
    "IdempotencyConflict",
    "Ports",
    "RunCancelWatch",
    "WorkflowInactive",
    "arm_timeout",
    "attempt_log_name",
    "backfill",
    "cancel_run",
    "dispatch_due",
    "dispatch_workflow",
    "execute_task",
    "mark_task",
    "mend_quiet_runs",
    "mend_run",
    "nudge_overdue_runs",
    "perform",
    "queue_run",
    "reap_expired_attempts",
    "record_completion",
    "register_source",
    "register_workflow",
    "rehand_starts",
    "rerun_task",
    "retry_run",
    "run_status",
    "scheduled_run_id",
    "start_pending",
    "start_queued_run",
    "start_run",
    "stop_cancelled_run",
    "task_environment",
    "task_logs",
    "time_out_run",
    "trigger_run",
]
