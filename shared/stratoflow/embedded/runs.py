"""`RunStore` on SQLite: the embedded twin of `stratoflow.aws.dynamodb.DynamoRunStore`.

Tables (see `stratoflow.embedded.db`): `runs` (one row a run, its counters beside it),
`tasks` (one row a task that anything happened to: an absent row reads as a pending task,
never attempted, exactly like an absent DynamoDB item), `waiting` (ready tasks held back by
the run's concurrency cap), `compensations`.

Each method is one write transaction that checks its condition and writes, or writes
nothing: the condition and outcome of every method are those ports.py documents, and the
contract suite (tests/adapters/test_store_contract.py) runs the same tests on both stores.
Unlike DynamoDB, one SQLite transaction has no item limit, so a settlement of any
fan-out is a single all-or-nothing transaction (no propagation markers are needed).

The attempt methods (claims, retries, settlements, decisions, leases) are in
`stratoflow.embedded.attempts`; the row decoding in `stratoflow.embedded.rows`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from stratoflow.core.records import CompensationRecord, MarkRecord, RunRecord, TaskRecord, iso
from stratoflow.core.states import RunStatus, TaskStatus
from stratoflow.embedded.attempts import SqliteRunAttempts
from stratoflow.embedded.db import COUNTER_COLUMN
from stratoflow.embedded.rows import (
    _COUNTERS,
    _RUN_COLUMNS,
    _TASK_COLUMNS,
    _UNSTARTED,
    _run_from,
    _task_from,
    _waiting_key,
)
from stratoflow.ports import SlotOutcome


class SqliteRunStore(SqliteRunAttempts):
    """`RunStore` in the embedded engine's database (constructed as `SqliteRunStore(db,
    owner="")`, see `SqliteRunAttempts`)."""

    # -- runs

    def create_run(self, run: RunRecord) -> bool:
        doc = {
            "version": run.version,
            "logical_date": run.logical_date,
            "n_tasks": run.n_tasks,
            "params": run.params,
            "concurrency": run.concurrency,
            "workdir": run.workdir,
            "trigger": run.trigger,
            "started_at": run.started_at,
            "deadline": run.deadline,
        }
        with self._db.write() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO runs (run_id, workflow_id, created_at, status, doc, "
                "progress_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    run.run_id,
                    run.workflow_id,
                    run.created_at,
                    run.status.value,
                    json.dumps(doc),
                    # a run recorded started is watched from its creation on (`quiet_runs`)
                    run.created_at if run.started_at is not None else None,
                ),
            )
            return cur.rowcount == 1

    def get_run(self, run_id: str) -> RunRecord | None:
        row = (
            self._db.connection()
            .execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
            .fetchone()
        )
        return _run_from(row) if row else None

    def begin_run(self, run_id: str) -> bool:
        with self._db.write() as db:
            cur = db.execute(
                "UPDATE runs SET status = ? WHERE run_id = ? AND status = ?",
                (RunStatus.RUNNING.value, run_id, RunStatus.QUEUED.value),
            )
            return cur.rowcount == 1

    def finish_start(self, run_id: str, now: str) -> bool:
        with self._db.write() as db:
            cur = db.execute(
                "UPDATE runs SET doc = json_set(doc, '$.started_at', ?), progress_at = ? "
                "WHERE run_id = ? AND status = ? AND json_extract(doc, '$.started_at') IS NULL",
                (now, now, run_id, RunStatus.RUNNING.value),
            )
            return cur.rowcount == 1

    def pending_starts(self, before: str, limit: int) -> list[str]:
        # No index: the dispatcher's tick asks once a minute, and a local engine's runs
        # table is small; the status test comes first, so only live runs read their doc.
        rows = self._db.connection().execute(
            "SELECT run_id FROM runs WHERE status IN (?, ?) AND created_at < ? "
            "AND json_extract(doc, '$.started_at') IS NULL ORDER BY created_at LIMIT ?",
            (RunStatus.QUEUED.value, RunStatus.RUNNING.value, before, limit),
        )
        return [r[0] for r in rows]

    def list_runs(self, workflow_id: str, limit: int) -> list[RunRecord]:
        return self.page_runs(workflow_id, limit)[0]

    def page_runs(
        self, workflow_id: str, limit: int, after: str | None = None
    ) -> tuple[list[RunRecord], str | None]:
        where, args = "workflow_id = ?", [workflow_id]
        if after:
            # The cursor has the shape of DynamoDB's (the API checks it): RUN#<created>#<id>
            created_at, _, run_id = after.removeprefix("RUN#").partition("#")
            where += " AND (created_at, run_id) < (?, ?)"
            args += [created_at, run_id]
        rows = (
            self._db.connection()
            .execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE {where} "
                "ORDER BY created_at DESC, run_id DESC LIMIT ?",
                (*args, limit + 1),
            )
            .fetchall()
        )
        runs = [_run_from(r) for r in rows[:limit]]
        more = len(rows) > limit
        return runs, (f"RUN#{runs[-1].created_at}#{runs[-1].run_id}" if more and runs else None)

    def get_run_and_tasks(
        self, run_id: str, task_ids: Sequence[str]
    ) -> tuple[RunRecord, dict[str, TaskRecord]]:
        with self._db.read() as db:
            row = db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
            found = row.fetchone()
            if found is None:
                raise LookupError(f"run {run_id!r} does not exist")
            tasks = self._tasks(db, run_id, task_ids)
        return _run_from(found), tasks

    def list_tasks(self, run_id: str) -> dict[str, TaskRecord]:
        rows = self._db.connection().execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE run_id = ?", (run_id,)
        )
        return {row[0]: _task_from(row, row[0]) for row in rows}

    # -- tasks not started

    def cancel_unstarted(self, run_id: str, task_ids: Sequence[str], now: str) -> list[str]:
        done: list[str] = []
        states = tuple(s.value for s in _UNSTARTED)
        with self._db.write() as db:
            for task_id in task_ids:
                cur = db.execute(
                    "INSERT INTO tasks (run_id, task_id, status, settled_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (run_id, task_id) DO UPDATE SET status = excluded.status, "
                    "settled_at = excluded.settled_at "
                    "WHERE status IS NULL OR status IN (?, ?, ?, ?)",
                    (run_id, task_id, TaskStatus.CANCELLED.value, now, *states),
                )
                if cur.rowcount == 1:
                    done.append(task_id)
        return done

    # -- concurrency cap

    def put_waiting(self, run_id: str, task_id: str, priority: int, now: str) -> None:
        with self._db.write() as db:
            db.execute(
                "INSERT OR IGNORE INTO waiting (run_id, key, task_id) VALUES (?, ?, ?)",
                (run_id, _waiting_key(priority, now, task_id), task_id),
            )

    def peek_waiting(self, run_id: str, limit: int) -> list[tuple[str, str]]:
        rows = self._db.connection().execute(
            "SELECT key, task_id FROM waiting WHERE run_id = ? ORDER BY key LIMIT ?",
            (run_id, limit),
        )
        return [(r[0], r[1]) for r in rows]

    def start_waiting(self, run_id: str, key: str, task_id: str, cap: int) -> SlotOutcome:
        with self._db.write() as db:
            entry = (run_id, key)
            if not db.execute(
                "SELECT 1 FROM waiting WHERE run_id = ? AND key = ?", entry
            ).fetchone():
                return SlotOutcome.GONE
            task = db.execute(
                "SELECT status FROM tasks WHERE run_id = ? AND task_id = ?", (run_id, task_id)
            ).fetchone()
            if task is None or task[0] != TaskStatus.WAITING.value:
                db.execute("DELETE FROM waiting WHERE run_id = ? AND key = ?", entry)
                return SlotOutcome.GONE
            cur = db.execute(
                "UPDATE runs SET active = active + 1 WHERE run_id = ? AND active < ?",
                (run_id, cap),
            )
            if cur.rowcount != 1:
                return SlotOutcome.FULL
            db.execute("DELETE FROM waiting WHERE run_id = ? AND key = ?", entry)
            db.execute(
                "UPDATE tasks SET status = ? WHERE run_id = ? AND task_id = ?",
                (TaskStatus.QUEUED.value, run_id, task_id),
            )
            return SlotOutcome.STARTED

    # -- run end, redrive and compensations

    def quiet_runs(self, before: str, limit: int) -> list[tuple[str, str]]:
        # The literal statuses match the partial index `runs_quiet`.
        rows = self._db.connection().execute(
            "SELECT run_id, progress_at FROM runs WHERE status IN ('running', 'compensating') "
            "AND progress_at < ? ORDER BY progress_at LIMIT ?",
            (before, limit),
        )
        return [(r[0], r[1]) for r in rows]

    def touch_run(self, run_id: str, seen: str, now: str) -> bool:
        with self._db.write() as db:
            cur = db.execute(
                "UPDATE runs SET progress_at = ? WHERE run_id = ? AND progress_at = ? "
                "AND status IN ('running', 'compensating')",
                (now, run_id, seen),
            )
            return cur.rowcount == 1

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        now: str,
        compensations: Sequence[str] = (),
        release_workflow: str | None = None,
        reason: str | None = None,
    ) -> bool:
        allowed = [RunStatus.RUNNING.value]
        if status in (RunStatus.FAILED, RunStatus.CANCELLED):
            allowed.append(RunStatus.COMPENSATING.value)
        if status is RunStatus.CANCELLED:
            allowed.append(RunStatus.QUEUED.value)
        sets, values = "status = ?", [status.value]
        if status is not RunStatus.COMPENSATING:
            sets += ", finished_at = ?"
            values.append(now)
        if compensations:
            sets += ", compensations = ?"
            values.append(json.dumps(list(compensations)))
        if reason is not None:
            sets += ", doc = json_set(doc, '$.reason', ?)"
            values.append(reason)
        marks = ",".join("?" * len(allowed))
        with self._db.write() as db:
            cur = db.execute(
                f"UPDATE runs SET {sets} WHERE run_id = ? AND status IN ({marks})",
                (*values, run_id, *allowed),
            )
            if cur.rowcount != 1:
                return False
            if release_workflow is not None and status is not RunStatus.COMPENSATING:
                # The run's end and its workflow's active-run count move together, or a
                # crash in between would block the schedule by max_active_runs for ever.
                db.execute(
                    "UPDATE workflows SET active_runs = active_runs - 1 WHERE workflow_id = ?",
                    (release_workflow,),
                )
            return True

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
        drive = run.drive + 1
        doc = "json_remove(doc, '$.reason')"
        args: list[object] = []
        if deadline is not None:
            doc = f"json_set({doc}, '$.deadline', ?)"
            args.append(deadline)
        if marks:
            doc = _with_marks(doc, len(marks))
            args += [json.dumps(m.to_dict()) for m in marks]
        with self._db.write() as db:
            cur = db.execute(
                f"UPDATE runs SET status = ?, drive = ?, final_count = ?, leaf_bad = ?, "
                f"active = 0, finished_at = NULL, compensations = NULL, doc = {doc}, "
                "progress_at = ? WHERE run_id = ? AND status = ? AND drive = ?",
                (
                    RunStatus.RUNNING.value,
                    drive,
                    final_count,
                    leaf_bad,
                    *args,
                    iso(datetime.now(UTC)),
                    run.run_id,
                    run.status.value,
                    run.drive,
                ),
            )
            if cur.rowcount != 1:
                return False  # another redrive, or a change of the run, came first
            for mark in marks:
                _set_marked(db, run.run_id, mark, drive, propagated=True)
            db.execute("DELETE FROM waiting WHERE run_id = ?", (run.run_id,))
            counter_sets = ", ".join(f"{c} = excluded.{c}" for c in _COUNTERS)
            db.executemany(
                "INSERT INTO tasks (run_id, task_id, drive, "
                + ", ".join(_COUNTERS)
                + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, task_id) DO UPDATE "
                f"SET drive = excluded.drive, {counter_sets}, status = NULL, attempt = NULL, "
                "exit_code = NULL, timed_out = 0, started_at = NULL, finished_at = NULL, "
                "settled_at = NULL, decided_at = NULL, output_tail = NULL, log_ref = NULL, "
                "error = NULL, propagated = 0, lease_until = NULL, worker = NULL "
                # a task another redrive already reset (and may have started) is left alone
                "WHERE drive IS NULL OR drive < excluded.drive",
                [
                    (run.run_id, task_id, drive, *(counters.get(s, 0) for s in COUNTER_COLUMN))
                    for task_id, counters in resets.items()
                ],
            )
            if release_workflow is not None:
                # A redriven scheduled run counts against max_active_runs again until it ends.
                db.execute(
                    "UPDATE workflows SET active_runs = active_runs + 1 WHERE workflow_id = ?",
                    (release_workflow,),
                )
        return True

    def mark_task(
        self, run_id: str, task_id: str, expected: TaskStatus, mark: MarkRecord, drive: int
    ) -> bool:
        with self._db.write() as db:
            row = db.execute(
                "SELECT status FROM tasks WHERE run_id = ? AND task_id = ?", (run_id, task_id)
            ).fetchone()
            current = TaskStatus(row[0]) if row is not None and row[0] else TaskStatus.PENDING
            if current is not expected:
                return False
            cur = db.execute(
                "UPDATE runs SET doc = " + _with_marks("doc", 1) + " WHERE run_id = ? AND "
                "status = ? AND drive = ?",
                (json.dumps(mark.to_dict()), run_id, RunStatus.RUNNING.value, drive),
            )
            if cur.rowcount != 1:
                return False
            _set_marked(db, run_id, mark, drive, propagated=False)
            return True

    def set_deadline(self, run_id: str, deadline: str) -> bool:
        with self._db.write() as db:
            cur = db.execute(
                "UPDATE runs SET doc = json_set(doc, '$.deadline', ?) WHERE run_id = ? "
                "AND status IN (?, ?) AND json_extract(doc, '$.deadline') IS NULL",
                (deadline, run_id, RunStatus.QUEUED.value, RunStatus.RUNNING.value),
            )
            return cur.rowcount == 1

    def overdue_runs(self, now: str, limit: int) -> list[tuple[str, str]]:
        # No index, as for `pending_starts`: the status test first, so only live runs
        # read their doc. A run that ended is not listed: nothing to clear.
        rows = self._db.connection().execute(
            "SELECT run_id, json_extract(doc, '$.deadline') AS d FROM runs "
            "WHERE status IN (?, ?) AND d IS NOT NULL AND d <= ? ORDER BY d LIMIT ?",
            (RunStatus.QUEUED.value, RunStatus.RUNNING.value, now, limit),
        )
        return [(r[0], r[1]) for r in rows]

    def clear_deadline(self, run_id: str, deadline: str) -> None:
        return None  # `overdue_runs` lists live runs only

    def claim_compensation(
        self, run_id: str, index: int, task_id: str, started_at: str, log_ref: str = ""
    ) -> bool:
        with self._db.write() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO compensations (run_id, idx, task_id, status, started_at, "
                "log_ref) VALUES (?, ?, ?, 'running', ?, ?)",
                (run_id, index, task_id, started_at, log_ref or None),
            )
            return cur.rowcount == 1

    def record_compensation(self, run_id: str, record: CompensationRecord) -> bool:
        with self._db.write() as db:
            cur = db.execute(
                "UPDATE compensations SET status = ?, exit_code = ?, timed_out = ?, "
                "started_at = coalesce(?, started_at), finished_at = ?, output_tail = ? "
                "WHERE run_id = ? AND idx = ? AND status = 'running'",
                (
                    record.status,
                    record.exit_code,
                    int(record.timed_out),
                    record.started_at,
                    record.finished_at,
                    record.output_tail,
                    run_id,
                    record.index,
                ),
            )
            return cur.rowcount == 1

    def list_compensations(self, run_id: str) -> list[CompensationRecord]:
        rows = self._db.connection().execute(
            "SELECT idx, task_id, status, exit_code, timed_out, started_at, finished_at, "
            "output_tail, log_ref FROM compensations WHERE run_id = ? ORDER BY idx",
            (run_id,),
        )
        return [
            CompensationRecord(
                index=r[0],
                task_id=r[1],
                status=r[2],
                exit_code=r[3],
                timed_out=bool(r[4]),
                started_at=r[5],
                finished_at=r[6],
                output_tail=r[7] or "",
                log_ref=r[8],
            )
            for r in rows
        ]


def _with_marks(doc: str, n: int) -> str:
    """SQL of the expression `doc` (the column, edited) with `n` marks (JSON parameters)
    appended to the column's `marks` list."""
    out = f"json_set({doc}, '$.marks', json(coalesce(json_extract(doc, '$.marks'), '[]')))"
    for _ in range(n):
        out = f"json_insert({out}, '$.marks[#]', json(?))"
    return out


def _set_marked(
    db: sqlite3.Connection, run_id: str, mark: MarkRecord, drive: int, *, propagated: bool
) -> None:
    """The task's final status set by hand in `drive`: its attempt's lease ends with it."""
    db.execute(
        "INSERT INTO tasks (run_id, task_id, status, drive, settled_at, propagated) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, task_id) DO UPDATE SET "
        "status = excluded.status, drive = excluded.drive, settled_at = excluded.settled_at, "
        "propagated = excluded.propagated, lease_until = NULL",
        (run_id, mark.task_id, mark.status, drive, mark.at, int(propagated)),
    )
