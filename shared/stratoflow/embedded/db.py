"""The embedded engine's database: one SQLite file under the engine's home.

Every adapter of `stratoflow.embedded` keeps its state here, so a run, its queued messages
and its workflow's versions survive a restart of the engine together (nothing is held only
in memory). WAL lets readers run beside the writer; `synchronous=NORMAL` with WAL loses no
committed transaction on a process crash (only on a power cut, the last few).

Concurrency: one connection per thread (sqlite3 connections must not be shared across
threads mid-transaction), and one process-wide lock around write transactions. SQLite's own
busy handler waits by sleeping in steps of up to 100 ms; threads of one process therefore
queue on a Python lock, which wakes the next writer at once, and only writers of other
processes (several `stratoflow run` on one home) meet SQLite's busy timeout.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from stratoflow.core.states import TaskStatus

COUNTER_COLUMN: dict[TaskStatus, str] = {
    TaskStatus.SUCCEEDED: "u_ok",
    TaskStatus.FAILED: "u_fail",
    TaskStatus.UPSTREAM_FAILED: "u_upfail",
    TaskStatus.SKIPPED: "u_skip",
    TaskStatus.CANCELLED: "u_cancel",
}
"""The `tasks` table's upstream counter column for each final status of a parent."""

DB_FILE = "engine.db"
BUSY_TIMEOUT_MS = 30_000
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- runs (stratoflow.embedded.runs)
CREATE TABLE IF NOT EXISTS runs (
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
    doc TEXT NOT NULL,
    progress_at TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs (workflow_id, created_at, run_id);

CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    status TEXT,
    attempt INTEGER,
    drive INTEGER,
    u_ok INTEGER NOT NULL DEFAULT 0,
    u_fail INTEGER NOT NULL DEFAULT 0,
    u_upfail INTEGER NOT NULL DEFAULT 0,
    u_skip INTEGER NOT NULL DEFAULT 0,
    u_cancel INTEGER NOT NULL DEFAULT 0,
    lease_until REAL,
    owner TEXT,
    worker TEXT,
    propagated INTEGER NOT NULL DEFAULT 0,
    logs TEXT,
    exit_code INTEGER,
    timed_out INTEGER NOT NULL DEFAULT 0,
    started_at TEXT,
    finished_at TEXT,
    settled_at TEXT,
    decided_at TEXT,
    output_tail TEXT,
    log_ref TEXT,
    error TEXT,
    PRIMARY KEY (run_id, task_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_by_lease ON tasks (lease_until) WHERE lease_until IS NOT NULL;

CREATE TABLE IF NOT EXISTS waiting (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS compensations (
    run_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    timed_out INTEGER NOT NULL DEFAULT 0,
    started_at TEXT,
    finished_at TEXT,
    output_tail TEXT NOT NULL DEFAULT '',
    log_ref TEXT,
    PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;

-- definitions (stratoflow.embedded.definitions)
CREATE TABLE IF NOT EXISTS workflows (
    workflow_id TEXT PRIMARY KEY,
    latest_version INTEGER NOT NULL DEFAULT 0,
    latest_hash TEXT,
    active_version INTEGER,
    paused INTEGER NOT NULL DEFAULT 0,
    schedule TEXT,
    timezone TEXT NOT NULL DEFAULT 'UTC',
    catchup INTEGER NOT NULL DEFAULT 0,
    max_active_runs INTEGER NOT NULL DEFAULT 1,
    next_slot TEXT,
    active_runs INTEGER NOT NULL DEFAULT 0,
    active_source TEXT,
    registered INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS workflows_due ON workflows (next_slot)
    WHERE next_slot IS NOT NULL AND schedule IS NOT NULL AND paused = 0
      AND active_version IS NOT NULL;

CREATE TABLE IF NOT EXISTS versions (
    workflow_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    hash TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (workflow_id, version)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS source_events (
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (source, event_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS source_links (
    source TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS source_errors (
    source TEXT PRIMARY KEY,
    message TEXT NOT NULL,
    at TEXT NOT NULL
) WITHOUT ROWID;

-- queues (stratoflow.embedded.queues)
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    visibility_timeout REAL NOT NULL,
    max_receive_count INTEGER,
    dead_letter_queue TEXT,
    retention_seconds REAL NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    channel TEXT NOT NULL DEFAULT '',
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    md5 TEXT NOT NULL,
    sent_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    first_received_at REAL,
    receipt TEXT
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, channel, visible_at);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_receipt ON messages (receipt)
    WHERE receipt IS NOT NULL;

CREATE TABLE IF NOT EXISTS channels (
    name TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    opened_at REAL NOT NULL
) WITHOUT ROWID;

-- objects (stratoflow.embedded.objects)
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    body BLOB NOT NULL,
    etag TEXT NOT NULL,
    version_id TEXT NOT NULL,
    modified_at REAL NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
"""


class Database:
    """One SQLite file, shared by every embedded adapter of an engine (and by other
    processes on the same home)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        with self._write_lock:
            # executescript commits as it goes: each statement is idempotent on its own.
            self.connection().executescript(_SCHEMA)
        with self.write() as db:
            _migrate(db)
            db.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    @classmethod
    def in_home(cls, home: str | Path) -> Database:
        return cls(Path(home) / DB_FILE)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode: transactions are explicit)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys=OFF")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: the write lock is taken at the start, so
        the transaction never has to upgrade a read lock and deadlock): all or nothing."""
        with self._write_lock:
            conn = self.connection()
            if conn.in_transaction:  # nested: part of the caller's transaction
                yield conn
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several reads (a deferred transaction)."""
        conn = self.connection()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this object opened (at engine shutdown)."""
        with self._connections_lock:
            for conn in self._connections:
                with suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a home made by an earlier version up to this schema, in place (version 2:
    a run's last sign of life, `progress_at`, and its index for the dispatcher's tick)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    if "progress_at" not in columns:
        db.execute("ALTER TABLE runs ADD COLUMN progress_at TEXT")
        # Started runs are watched from their start; a run whose start is pending is not.
        db.execute(
            "UPDATE runs SET progress_at = json_extract(doc, '$.started_at') "
            "WHERE json_extract(doc, '$.started_at') IS NOT NULL"
        )
    # Partial: only live runs are looked at, and the literal statuses let SQLite use it
    # for `quiet_runs`' query.
    db.execute(
        "CREATE INDEX IF NOT EXISTS runs_quiet ON runs (progress_at) "
        "WHERE status IN ('running', 'compensating')"
    )
    db.execute(
        "UPDATE meta SET value = ? WHERE name = 'schema_version' AND CAST(value AS INTEGER) < ?",
        (str(SCHEMA_VERSION), SCHEMA_VERSION),
    )
