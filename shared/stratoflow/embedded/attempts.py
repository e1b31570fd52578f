"""The attempt half of `SqliteRunStore`: claims, retries and settlements of task attempts,
the decisions of pending tasks, and the leases of running attempts.

The embedded twin of `stratoflow.aws.dynamodb.attempts`. Each method is one write
transaction that checks its condition and writes, or writes nothing; a settlement of any
fan-out is a single all-or-nothing transaction (SQLite has no item limit).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from stratoflow.core.records import TaskRecord, iso
from stratoflow.core.states import RunStatus, TaskStatus
from stratoflow.embedded.db import COUNTER_COLUMN, Database
from stratoflow.embedded.rows import (
    _CLAIMABLE,
    _SETTLED_BY_DECISION,
    _TASK_COLUMNS,
    _attempt_values,
    _runs_attempt,
    _same_drive,
    _task_from,
)
from stratoflow.ports import Claim, ClaimOutcome, Finalized, FinalizeOutcome, Settlement


class SqliteRunAttempts:
    """The task-attempt methods of `SqliteRunStore` (`stratoflow.embedded.runs`), which adds
    the runs, the concurrency cap, run ends, redrives and compensations.

    `owner` names the engine process that claims attempts through this store (its queue
    channel): each claim records it, so that an engine starting after a crash can tell
    which running attempts died with their engine (`expire_leases_of`).
    """

    def __init__(self, db: Database, owner: str = "") -> None:
        self._db = db
        self._owner = owner

    @staticmethod
    def _tasks(
        db: sqlite3.Connection, run_id: str, task_ids: Sequence[str]
    ) -> dict[str, TaskRecord]:
        rows: dict[str, Sequence[Any]] = {}
        ids = list(task_ids)
        for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in db.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE run_id = ? AND task_id IN ({marks})",
                (run_id, *chunk),
            ):
                rows[row[0]] = row
        return {t: _task_from(rows.get(t), t) for t in ids}

    def get_task(self, run_id: str, task_id: str) -> TaskRecord:
        return _task_from(self._task_row(self._db.connection(), run_id, task_id), task_id)

    @staticmethod
    def _task_row(db: sqlite3.Connection, run_id: str, task_id: str) -> Sequence[Any] | None:
        row: Sequence[Any] | None = db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE run_id = ? AND task_id = ?",
            (run_id, task_id),
        ).fetchone()
        return row

    @staticmethod
    def _ensure_task(db: sqlite3.Connection, run_id: str, task_id: str) -> None:
        db.execute("INSERT OR IGNORE INTO tasks (run_id, task_id) VALUES (?, ?)", (run_id, task_id))

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
        with self._db.write() as db:
            row = self._task_row(db, run_id, task_id)
            rec = _task_from(row, task_id)
            claimable = (
                rec.status in _CLAIMABLE
                and (rec.attempt == 0 or rec.attempt == attempt - 1)
                and _same_drive(row, drive)
            )
            if claimable:
                logs = [*rec.logs, log_ref]
                self._ensure_task(db, run_id, task_id)
                db.execute(
                    "UPDATE tasks SET status = ?, attempt = ?, started_at = ?, lease_until = ?, "
                    "owner = ?, timed_out = 0, drive = ?, worker = ?, logs = ?, "
                    "finished_at = NULL, exit_code = NULL, error = NULL "
                    "WHERE run_id = ? AND task_id = ?",
                    (
                        TaskStatus.RUNNING.value,
                        attempt,
                        started_at,
                        lease_until,
                        self._owner,
                        drive,
                        worker,
                        json.dumps(logs),
                        run_id,
                        task_id,
                    ),
                )
                # the log list's length numbers the attempt across redrives
                return Claim(ClaimOutcome.CLAIMED, lease_until, len(logs))
        if rec.status is TaskStatus.RUNNING and rec.attempt == attempt and rec.drive == drive:
            if rec.lease_until is not None and rec.lease_until > now:
                return Claim(ClaimOutcome.HELD, rec.lease_until)
            return Claim(ClaimOutcome.EXPIRED, rec.lease_until)
        return Claim(ClaimOutcome.DUPLICATE)

    def expired_attempts(self, now: float, limit: int) -> list[tuple[str, str]]:
        rows = self._db.connection().execute(
            "SELECT run_id, task_id FROM tasks WHERE lease_until < ? ORDER BY lease_until LIMIT ?",
            (now, limit),
        )
        return [(r[0], r[1]) for r in rows]

    def expire_leases_of(
        self, owners: Sequence[str], *, others_like: str | None = None, but: str = ""
    ) -> int:
        """End now the leases of the running attempts that these engine processes claimed
        (and, with `others_like`, of any owner with that prefix other than `but`): they
        died, and so did the commands they ran, so the next lease sweep reports those
        attempts lost at once instead of after their timeout. Returns how many ended."""
        where: list[str] = []
        args: list[object] = []
        if owners:
            where.append(f"owner IN ({','.join('?' * len(owners))})")
            args += list(owners)
        if others_like is not None:
            where.append("(substr(owner, 1, ?) = ? AND owner != ?)")
            args += [len(others_like), others_like, but]
        if not where:
            return 0
        with self._db.write() as db:
            cur = db.execute(
                "UPDATE tasks SET lease_until = 0 WHERE lease_until IS NOT NULL AND ("
                + " OR ".join(where)
                + ")",
                args,
            )
            return cur.rowcount

    def retry_attempt(
        self, run_id: str, task_id: str, attempt: int, fields: dict[str, Any], drive: int = 0
    ) -> bool:
        with self._db.write() as db:
            row = self._task_row(db, run_id, task_id)
            rec = _task_from(row, task_id)
            if _runs_attempt(row, rec, attempt, drive):
                values = _attempt_values(fields)
                sets = "".join(f", {k} = ?" for k in values)
                db.execute(
                    f"UPDATE tasks SET status = ?, lease_until = NULL{sets} "
                    "WHERE run_id = ? AND task_id = ?",
                    (TaskStatus.UP_FOR_RETRY.value, *values.values(), run_id, task_id),
                )
                return True
        # a redelivered report finds its retry recorded already
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
        counter = COUNTER_COLUMN[s.status]
        children = list(s.children)
        waiting: set[str] = set()
        with self._db.write() as db:
            row = self._task_row(db, run_id, s.task_id)
            rec = _task_from(row, s.task_id)
            if s.attempt is not None:
                applies = _runs_attempt(row, rec, s.attempt, s.drive)
            else:
                applies = rec.status is s.status and not (row is not None and row[15])
            if not applies:
                done_before = rec.status is s.status and (
                    s.attempt is None or (rec.attempt == s.attempt and rec.drive == s.drive)
                )
                # Recorded and propagated in one transaction before: nothing is left to do.
                return Finalized(FinalizeOutcome.ALREADY if done_before else FinalizeOutcome.STALE)
            if s.require_running:
                found = db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                if found is None or found[0] != RunStatus.RUNNING.value:
                    return Finalized(FinalizeOutcome.RUN_ENDED)
            values = _attempt_values(s.fields)
            sets = "".join(f", {k} = ?" for k in values)
            if s.attempt is not None:
                sets += ", status = ?, lease_until = NULL"
                values["status"] = s.status.value
            db.execute(
                f"UPDATE tasks SET propagated = 1{sets} WHERE run_id = ? AND task_id = ?",
                (*values.values(), run_id, s.task_id),
            )
            now = str(s.fields.get("settled_at") or iso(datetime.now(UTC)))
            # A settlement is the run's sign of life (`quiet_runs`); a run whose start is
            # still pending has none to move.
            db.execute(
                "UPDATE runs SET final_count = final_count + 1, leaf_bad = leaf_bad + ?, "
                "active = active - ?, progress_at = CASE WHEN progress_at IS NULL THEN NULL "
                "ELSE max(progress_at, ?) END WHERE run_id = ?",
                (1 if s.bad_leaf else 0, 1 if s.releases_slot else 0, now, run_id),
            )
            if s.guards:
                guarded = [c for c in children if c in s.guards]
                current = self._tasks(db, run_id, guarded)
                for child in guarded:
                    # Still pending, and not its last parent: this count cannot decide it.
                    rec_child = current[child]
                    if (
                        rec_child.status is TaskStatus.PENDING
                        and rec_child.counters.get(s.status, 0) < s.guards[child] - 1
                    ):
                        waiting.add(child)
            plain = [(run_id, c) for c in children if c not in s.decided]
            db.executemany(
                "INSERT INTO tasks (run_id, task_id, "
                + counter
                + ") VALUES (?, ?, 1) ON CONFLICT (run_id, task_id) DO UPDATE SET "
                + f"{counter} = {counter} + 1",
                plain,
            )
            decided = []
            for child, status in s.decided.items():
                # Its only parent decides it, with the count: a status it already has (the
                # run was cancelled, say) is left as it is.
                settled = (
                    now if status in (TaskStatus.SKIPPED, TaskStatus.UPSTREAM_FAILED) else None
                )
                decided.append((run_id, child, status.value, now, settled))
            db.executemany(
                "INSERT INTO tasks (run_id, task_id, status, decided_at, settled_at, "
                + counter
                + ") VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (run_id, task_id) DO UPDATE SET "
                + f"{counter} = {counter} + 1, status = coalesce(status, excluded.status), "
                "decided_at = coalesce(decided_at, excluded.decided_at), "
                "settled_at = coalesce(settled_at, excluded.settled_at)",
                decided,
            )
        if on_chunk is not None and children:
            on_chunk(children)
        return Finalized(FinalizeOutcome.APPLIED, frozenset(waiting))

    def decide_task(self, run_id: str, task_id: str, status: TaskStatus, now: str) -> bool:
        return bool(self.decide_tasks(run_id, [task_id], status, now))

    def decide_tasks(
        self, run_id: str, task_ids: Sequence[str], status: TaskStatus, now: str
    ) -> list[str]:
        settled = now if status in _SETTLED_BY_DECISION else None
        won: list[str] = []
        with self._db.write() as db:
            for task_id in task_ids:
                cur = db.execute(
                    "INSERT INTO tasks (run_id, task_id, status, decided_at, settled_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, task_id) DO UPDATE SET "
                    "status = excluded.status, decided_at = excluded.decided_at, "
                    "settled_at = coalesce(excluded.settled_at, settled_at) "
                    "WHERE status IS NULL OR status = 'pending'",
                    (run_id, task_id, status.value, now, settled),
                )
                if cur.rowcount == 1:
                    won.append(task_id)
        return won
