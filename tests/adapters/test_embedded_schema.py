"""A home made by an earlier version of the embedded engine opens with this version: its
database is brought up to the current schema in place, and what it recorded is kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from stratoflow.core.records import RunRecord
from stratoflow.core.states import RunStatus
from stratoflow.embedded.db import SCHEMA_VERSION, Database
from stratoflow.embedded.runs import SqliteRunStore

# The `runs` table as schema version 1 made it (before `progress_at`).
_VERSION_1_RUNS = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    status TEXT NOT NULL,
    drive INTEGER NOT NULL DEFAULT 0,
    final_count INTEGER NOT NULL DEFAULT 0,
    leaf_bad INTEGER NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 0,
    finished_at TEXT,
    compensations TEXT,
    doc TEXT NOT NULL
);
INSERT INTO runs (run_id, workflow_id, created_at, status, doc) VALUES (
    'old', 'wf', '2026-01-01T00:00:00.000000Z', 'running',
    '{"version": 1, "logical_date": "2026-01-01T00:00:00.000000Z", "n_tasks": 1,
      "params": {}, "started_at": "2026-01-01T00:00:00.000000Z"}'
);
"""


def test_a_version_1_home_is_migrated_in_place_and_keeps_its_runs(tmp_path: Path) -> None:
    # GIVEN a database as version 1 of the engine left it, with a running run
    path = tmp_path / "engine.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(_VERSION_1_RUNS)
    # WHEN this version opens it (twice: a second engine process opening it after)
    db = Database(path)
    Database(path)
    runs = SqliteRunStore(db)
    # THEN it is at the current schema, the run is there, and new runs are watched
    conn = db.connection()
    version = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),) and SCHEMA_VERSION >= 2
    old = runs.get_run("old")
    assert old is not None and old.status is RunStatus.RUNNING
    # a started run from before is watched from its start
    assert runs.quiet_runs("9999-01-01T00:00:00.000000Z", 10) == [
        ("old", "2026-01-01T00:00:00.000000Z")
    ]
    new = RunRecord(
        run_id="new",
        workflow_id="wf",
        version=1,
        status=RunStatus.RUNNING,
        logical_date="2026-01-02T00:00:00.000000Z",
        created_at="2026-01-02T00:00:00.000000Z",
        n_tasks=1,
        started_at="2026-01-02T00:00:00.000000Z",
    )
    assert runs.create_run(new)
    assert runs.quiet_runs("9999-01-01T00:00:00.000000Z", 10) == [
        ("old", "2026-01-01T00:00:00.000000Z"),
        ("new", "2026-01-02T00:00:00.000000Z"),
    ]
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT run_id, progress_at FROM runs WHERE status IN "
        "('running', 'compensating') AND progress_at < ? ORDER BY progress_at LIMIT ?",
        ("9999", 10),
    ).fetchall()
    assert any("runs_quiet" in str(row) for row in plan), plan
