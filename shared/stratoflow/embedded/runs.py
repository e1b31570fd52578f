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
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from stratoflow.core.model import MAX_PRIORITY
from stratoflow.core.records import CompensationRecord, RunRecord, TaskRecord, iso
from stratoflow.core.states import COUNTER_FOR_STATUS, RunStatus, TaskStatus
from stratoflow.embedded.db import Database
from stratoflow.ports import Claim, ClaimOutcome, Finalized, FinalizeOutcome, Settlement

_COUNTERS = tuple(COUNTER_FOR_STATUS.values())
_TASK_COLUMNS = (
    "task_id, status, attempt, drive, exit_code, timed_out, started_at, finished_at, "
    "settled_at, output_tail, lease_until, log_ref, error, logs, worker, propagated, "
    + ", ".join(_COUNTERS)
)
_RUN_COLUMNS = (
    "run_id, workflow_id, created_at, status, drive, final_count, leaf_bad, active, "
    "finished_at, compensations, doc"
)
_CLAIMABLE = frozenset(
    {TaskStatus.QUEUED, TaskStatus.WAITING, TaskStatus.PENDING, TaskStatus.UP_FOR_RETRY}
)
_UNSTARTED = _CLAIMABLE
_SETTLED_BY_DECISION = frozenset(
    {TaskStatus.SKIPPED, TaskStatus.UPSTREAM_FAILED, TaskStatus.CANCELLED}
)
# Attempt fields a settlement or retry may carry (`services.settlement._attempt_fields`).
_ATTEMPT_FIELDS = (
    "settled_at",
    "exit_code",
    "timed_out",
    "started_at",
    "finished_at",
    "output_tail",
    "log_ref",
    "error",
)


def _task_from(row: Sequence[Any] | None, task_id: str) -> TaskRecord:
    if row is None:
        return TaskRecord(task_id=task_id)
    counters = {name: row[16 + i] for i, name in enumerate(_COUNTERS) if row[16 + i]}
    return TaskRecord(
        task_id=row[0],
        status=TaskStatus(row[1]) if row[1] else TaskStatus.PENDING,
        attempt=row[2] or 0,
        drive=row[3] or 0,
        exit_code=row[4],
        timed_out=bool(row[5]),
        started_at=row[6],
        finished_at=row[7],
        settled_at=row[8],
        output_tail=row[9] or "",
        lease_until=row[10],
        log_ref=row[11],
        error=row[12],
        logs=tuple(json.loads(row[13])) if row[13] else (),
        worker=row[14],
        counters=counters,
    )


def _run_from(row: Sequence[Any]) -> RunRecord:
    doc = json.loads(row[10])
    return RunRecord(
        run_id=row[0],
        workflow_id=row[1],
        created_at=row[2],
        status=RunStatus(row[3]),
        drive=row[4],
        final_count=row[5],
        leaf_bad=row[6],
        active=row[7],
        finished_at=row[8],
        compensations=tuple(json.loads(row[9])) if row[9] else (),
        version=doc["version"],
        logical_date=doc["logical_date"],
        n_tasks=doc["n_tasks"],
        params=doc.get("params") or {},
        concurrency=doc.get("concurrency"),
        workdir=doc.get("workdir"),
        trigger=doc.get("trigger", "manual"),
        started_at=doc.get("started_at"),
    )


def _same_drive(row: Sequence[Any] | None, drive: int) -> bool:
    """The task's stored drive is this one (or none was ever written: any drive matches)."""
    return row is None or row[3] is None or row[3] == drive


def _runs_attempt(row: Sequence[Any] | None, rec: TaskRecord, attempt: int, drive: int) -> bool:
    """Whether the task runs exactly this attempt of this drive."""
    return rec.status is TaskStatus.RUNNING and rec.attempt == attempt and _same_drive(row, drive)


def _waiting_key(priority: int, now: str, task_id: str) -> str:
    # Sorts ascending by (−priority, arrival): highest priority first, then first come.
    return f"{MAX_PRIORITY * 2 - (priority + MAX_PRIORITY):07d}#{now}#{task_id}"


def _attempt_values(fields: dict[str, Any]) -> dict[str, Any]:
    """The attempt fields given (None means "leave as it is", as DynamoDB's SET of
    present values does)."""
    return {k: fields[k] for k in _ATTEMPT_FIELDS if fields.get(k) is not None}


class SqliteRunStore:
    """`RunStore` in the embedded engine's database.

    `owner` names the engine process that claims attempts through this store (its queue
    channel): each claim records it, so that an engine starting after a crash can tell
    which running attempts died with their engine (`expire_leases_of`).
    """

    def __init__(self, db: Database, owner: str = "") -> None:
        self._db = db
        self._owner = owner

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
        }
        with self._db.write() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO runs (run_id, workflow_id, created_at, status, doc) "
                "VALUES (?, ?, ?, ?, ?)",
                (run.run_id, run.workflow_id, run.created_at, run.status.value, json.dumps(doc)),
            )
            return cur.rowcount == 1

    def get_run(self, run_id: str) -> RunRecord | None:
        row = (
            self._db.connection()
            .execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
            .fetchone()
        )
        return _run_from(row) if row else None

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

    def list_tasks(self, run_id: str) -> dict[str, TaskRecord]:
        rows = self._db.connection().execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE run_id = ?", (run_id,)
        )
        return {row[0]: _task_from(row, row[0]) for row in rows}

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
                    "finished_at = NULL, exit_code = NULL WHERE run_id = ? AND task_id = ?",
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
        counter = COUNTER_FOR_STATUS[s.status]
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
            db.execute(
                "UPDATE runs SET final_count = final_count + 1, leaf_bad = leaf_bad + ?, "
                "active = active - ? WHERE run_id = ?",
                (1 if s.bad_leaf else 0, 1 if s.releases_slot else 0, run_id),
            )
            now = str(s.fields.get("settled_at") or iso(datetime.now(UTC)))
            if s.guards:
                guarded = [c for c in children if c in s.guards]
                current = self._tasks(db, run_id, guarded)
                for child in guarded:
                    # Still pending, and not its last parent: this count cannot decide it.
                    rec_child = current[child]
                    if (
                        rec_child.status is TaskStatus.PENDING
                        and rec_child.counters.get(counter, 0) < s.guards[child] - 1
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

    def take_waiting(self, run_id: str, key: str) -> bool:
        with self._db.write() as db:
            cur = db.execute("DELETE FROM waiting WHERE run_id = ? AND key = ?", (run_id, key))
            return cur.rowcount == 1

    def acquire_slot(self, run_id: str, cap: int) -> bool:
        with self._db.write() as db:
            cur = db.execute(
                "UPDATE runs SET active = active + 1 WHERE run_id = ? AND active < ?",
                (run_id, cap),
            )
            return cur.rowcount == 1

    def release_slot(self, run_id: str) -> None:
        with self._db.write() as db:
            db.execute("UPDATE runs SET active = active - 1 WHERE run_id = ?", (run_id,))

    # -- run end, redrive and compensations

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        now: str,
        compensations: Sequence[str] = (),
        release_workflow: str | None = None,
    ) -> bool:
        allowed = [RunStatus.RUNNING.value]
        if status in (RunStatus.FAILED, RunStatus.CANCELLED):
            allowed.append(RunStatus.COMPENSATING.value)
        sets, values = "status = ?", [status.value]
        if status is not RunStatus.COMPENSATING:
            sets += ", finished_at = ?"
            values.append(now)
        if compensations:
            sets += ", compensations = ?"
            values.append(json.dumps(list(compensations)))
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
        resets: dict[str, dict[str, int]],
        final_count: int,
        release_workflow: str | None,
    ) -> bool:
        drive = run.drive + 1
        with self._db.write() as db:
            cur = db.execute(
                "UPDATE runs SET status = ?, drive = ?, final_count = ?, leaf_bad = 0, "
                "active = 0, finished_at = NULL, compensations = NULL "
                "WHERE run_id = ? AND status = ? AND drive = ?",
                (
                    RunStatus.RUNNING.value,
                    drive,
                    final_count,
                    run.run_id,
                    run.status.value,
                    run.drive,
                ),
            )
            if cur.rowcount != 1:
                return False  # another redrive, or a change of the run, came first
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
                    (run.run_id, task_id, drive, *(counters.get(c, 0) for c in _COUNTERS))
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
