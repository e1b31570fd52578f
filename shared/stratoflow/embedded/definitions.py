"""`DefinitionStore` on SQLite: the embedded twin of `DynamoDefinitionStore`.

Tables (see `stratoflow.embedded.db`): `workflows` (a workflow's latest and active version
and its schedule state; the partial index `workflows_due` plays DynamoDB's sparse `due`
index), `versions` (immutable bodies: SQLite has no item size limit, so no body goes
elsewhere), and the loader's bookkeeping of uploaded files (`source_*`).
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime
from typing import Any

from stratoflow.core.model import Workflow
from stratoflow.core.plan import Plan
from stratoflow.core.records import WorkflowMeta, iso
from stratoflow.embedded.db import Database
from stratoflow.ports import DefinitionNotFound, RunDefaults

_META_COLUMNS = (
    "workflow_id, latest_version, active_version, paused, schedule, timezone, catchup, "
    "max_active_runs, next_slot, active_runs"
)


def _meta_from(row: Any) -> WorkflowMeta:
    return WorkflowMeta(
        workflow_id=row[0],
        latest_version=row[1],
        active_version=row[2],
        paused=bool(row[3]),
        schedule=row[4],
        timezone=row[5],
        catchup=bool(row[6]),
        max_active_runs=row[7],
        next_slot=row[8],
        active_runs=row[9],
    )


class SqliteDefinitionStore:
    """Immutable, numbered workflow versions and the schedule state of each workflow."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[tuple[str, int], Plan] = {}
        self._defaults: dict[tuple[str, int], RunDefaults] = {}
        self._lock = threading.Lock()

    def save_version(self, workflow: Workflow, source: str, now: datetime) -> int:
        version = self._save_version(workflow, source, now)
        # What a trigger takes of the version, known here without parsing it back: in a
        # process that registers and triggers (local up) no trigger ever parses it.
        defaults = RunDefaults(
            dict(workflow.params), workflow.concurrency, len(workflow.tasks), workflow.timeout
        )
        with self._lock:
            self._defaults[(workflow.id, version)] = defaults
        return version

    def _save_version(self, workflow: Workflow, source: str, now: datetime) -> int:
        body = workflow.model_dump_json(exclude_defaults=False)
        digest = hashlib.sha256(body.encode()).hexdigest()
        with self._db.write() as db:
            found = db.execute(
                "SELECT latest_version, latest_hash FROM workflows WHERE workflow_id = ?",
                (workflow.id,),
            ).fetchone()
            latest = found[0] if found else 0
            if found and found[1] == digest:
                return int(latest)
            version = latest + 1
            db.execute(
                "INSERT INTO versions (workflow_id, version, hash, source, created_at, body) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (workflow.id, version, digest, source, iso(now), body),
            )
            db.execute(
                "INSERT INTO workflows (workflow_id, latest_version, latest_hash) VALUES (?, ?, ?) "
                "ON CONFLICT (workflow_id) DO UPDATE SET latest_version = excluded.latest_version, "
                "latest_hash = excluded.latest_hash",
                (workflow.id, version, digest),
            )
            return int(version)

    def get_plan(self, workflow_id: str, version: int) -> Plan:
        key = (workflow_id, version)
        plan = self._cache.get(key)
        if plan is not None:
            return plan
        plan = Plan(Workflow.model_validate_json(self._body(workflow_id, version)), version)
        with self._lock:
            self._cache[key] = plan
        return plan

    def _body(self, workflow_id: str, version: int) -> str:
        """A version's stored definition (JSON); DefinitionNotFound if there is none."""
        row = (
            self._db.connection()
            .execute(
                "SELECT body FROM versions WHERE workflow_id = ? AND version = ?",
                (workflow_id, version),
            )
            .fetchone()
        )
        if row is None:
            raise DefinitionNotFound(f"workflow {workflow_id!r} has no version {version}")
        return str(row[0])

    def run_defaults(self, workflow_id: str, version: int) -> RunDefaults:
        # Cached like plans: a version never changes, and parsing a large one is what a
        # trigger would otherwise spend its time on.
        key = (workflow_id, version)
        found = self._defaults.get(key)
        if found is not None:
            return found
        found = RunDefaults.from_definition(self._body(workflow_id, version))
        with self._lock:
            self._defaults[key] = found
        return found

    def get_meta(self, workflow_id: str) -> WorkflowMeta | None:
        row = (
            self._db.connection()
            .execute(f"SELECT {_META_COLUMNS} FROM workflows WHERE workflow_id = ?", (workflow_id,))
            .fetchone()
        )
        return _meta_from(row) if row else None

    def list_versions(self, workflow_id: str) -> list[dict[str, Any]]:
        rows = self._db.connection().execute(
            "SELECT version, created_at, source, hash FROM versions WHERE workflow_id = ? "
            "ORDER BY version",
            (workflow_id,),
        )
        return [{"version": r[0], "created_at": r[1], "source": r[2], "hash": r[3]} for r in rows]

    def list_workflows(self) -> list[WorkflowMeta]:
        rows = self._db.connection().execute(
            f"SELECT {_META_COLUMNS} FROM workflows WHERE registered = 1 ORDER BY workflow_id"
        )
        return [_meta_from(r) for r in rows]

    def activate(self, meta: WorkflowMeta) -> None:
        with self._db.write() as db:
            db.execute(
                "INSERT INTO workflows (workflow_id, latest_version, active_version, paused, "
                "schedule, timezone, catchup, max_active_runs, next_slot, registered) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (workflow_id) DO UPDATE SET "
                # an absent active version keeps the one there, as DynamoDB's SET of the
                # present fields does
                "active_version = coalesce(excluded.active_version, active_version), "
                "paused = excluded.paused, schedule = excluded.schedule, "
                "timezone = excluded.timezone, catchup = excluded.catchup, "
                "max_active_runs = excluded.max_active_runs, next_slot = excluded.next_slot, "
                "registered = 1",
                (
                    meta.workflow_id,
                    meta.latest_version,
                    meta.active_version,
                    int(meta.paused),
                    meta.schedule,
                    meta.timezone,
                    int(meta.catchup),
                    meta.max_active_runs,
                    meta.next_slot,
                ),
            )

    def set_paused(self, workflow_id: str, paused: bool) -> bool:
        with self._db.write() as db:
            cur = db.execute(
                "UPDATE workflows SET paused = ? WHERE workflow_id = ?", (int(paused), workflow_id)
            )
            return cur.rowcount == 1

    def claim_source_event(self, source: str, event_id: str) -> bool:
        with self._db.write() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO source_events (source, event_id) VALUES (?, ?)",
                (source, event_id),
            )
            return cur.rowcount == 1

    def record_source_error(self, source: str, message: str | None, now: str) -> None:
        with self._db.write() as db:
            if message is None:
                db.execute("DELETE FROM source_errors WHERE source = ?", (source,))
                return
            db.execute(
                "INSERT INTO source_errors (source, message, at) VALUES (?, ?, ?) "
                "ON CONFLICT (source) DO UPDATE SET message = excluded.message, at = excluded.at",
                (source, message, now),
            )

    def source_errors(self) -> list[dict[str, str]]:
        rows = self._db.connection().execute(
            "SELECT source, message, at FROM source_errors ORDER BY source"
        )
        return [{"source": r[0], "message": r[1], "at": r[2]} for r in rows]

    def link_source(self, source: str, workflow_id: str) -> None:
        with self._db.write() as db:
            db.execute(
                "INSERT INTO source_links (source, workflow_id) VALUES (?, ?) "
                "ON CONFLICT (source) DO UPDATE SET workflow_id = excluded.workflow_id",
                (source, workflow_id),
            )
            db.execute(
                "INSERT INTO workflows (workflow_id, active_source) VALUES (?, ?) "
                "ON CONFLICT (workflow_id) DO UPDATE SET active_source = excluded.active_source",
                (workflow_id, source),
            )

    def deactivate_source(self, source: str) -> str | None:
        with self._db.write() as db:
            link = db.execute(
                "SELECT workflow_id FROM source_links WHERE source = ?", (source,)
            ).fetchone()
            if link is None:
                return None
            # only if that file still defines the workflow: an upload of the same workflow
            # under another name has taken over since
            cur = db.execute(
                "UPDATE workflows SET active_version = NULL, next_slot = NULL "
                "WHERE workflow_id = ? AND active_source = ?",
                (link[0], source),
            )
            return str(link[0]) if cur.rowcount == 1 else None

    def due_workflows(self, now: str, limit: int) -> list[str]:
        # The predicate is the partial index's own, so the query reads only that index.
        rows = self._db.connection().execute(
            "SELECT workflow_id FROM workflows WHERE next_slot IS NOT NULL "
            "AND schedule IS NOT NULL AND paused = 0 AND active_version IS NOT NULL "
            "AND next_slot <= ? ORDER BY next_slot LIMIT ?",
            (now, limit),
        )
        return [r[0] for r in rows]

    def advance_slot(
        self, workflow_id: str, expected: str, new: str | None, max_active: int
    ) -> bool:
        with self._db.write() as db:
            cur = db.execute(
                "UPDATE workflows SET next_slot = ?, active_runs = active_runs + 1 "
                "WHERE workflow_id = ? AND next_slot = ? AND active_runs < ?",
                (new, workflow_id, expected, max_active),
            )
            return cur.rowcount == 1
