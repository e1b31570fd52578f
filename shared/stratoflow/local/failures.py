"""What the local engine survives and what stops it.

Every loop of the local engine (the pumps, the deleter, `local up`'s folder scan and
scheduler tick, `stratoflow run`'s wait for its run) treats a failure as transient: it is
logged, the loop backs off and tries again. A few failures cannot heal by waiting, and an
engine that went on would only spin, or worse, record work that is lost when it exits:

* the engine's SQLite file is corrupt or not a database (SQLITE_CORRUPT, SQLITE_NOTADB);
* the disk is full, or the file cannot be written or read (SQLITE_FULL, SQLITE_IOERR,
  SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_PERM; an OSError ENOSPC, EDQUOT or EROFS);
* the file was deleted or replaced under the engine (SQLite keeps writing to the open,
  unlinked file without a single error: `HomeWatch` notices it by the file's identity).

Those stop the engine cleanly with a one-line reason (`EngineFailed`); everything else,
a database locked beyond its busy timeout or an emulator connection closed included, is
transient.
"""

from __future__ import annotations

import errno
import os
import random
import sqlite3
import threading
from pathlib import Path

BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0

_FATAL_SQLITE = (
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_READONLY",
    "SQLITE_CANTOPEN",
    "SQLITE_PERM",
)
_FATAL_ERRNO = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class EngineFailed(RuntimeError):
    """The local engine met a failure it cannot recover from; `reason` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def unrecoverable(exc: BaseException) -> str | None:
    """Why `exc` stops the engine (one line), or None if trying again may succeed."""
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        # Extended codes (SQLITE_IOERR_WRITE, SQLITE_READONLY_DBMOVED…) share the prefix.
        if any(name == code or name.startswith(code + "_") for code in _FATAL_SQLITE):
            return f"the engine's database failed ({name}: {exc})"
        return None
    if isinstance(exc, OSError) and exc.errno in _FATAL_ERRNO:
        return f"the disk refused a write ({errno.errorcode[exc.errno]}: {exc.strerror})"
    return None


def backoff_delay(failures: int) -> float:
    """The wait after `failures` failures in a row: doubling from 0.1 s up to 5 s, with
    jitter (×0.5–1.5) so that loops failing together do not retry together."""
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** min(max(failures, 1) - 1, 6))
    return delay * random.uniform(0.5, 1.5)


class HomeWatch:
    """Notices the engine's database file deleted or replaced while the engine has it open
    (no SQLite call fails then: writes go on to the unlinked file and are lost at exit)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def problem(self) -> str | None:
        """None while the file is the one the engine opened; else why not (one line)."""
        if self._identity is None:
            return None
        now = self._stat()
        if now is None:
            return f"its database {self.path} was deleted"
        if now != self._identity:
            return f"its database {self.path} was deleted or replaced by another file"
        return None


class FailureLatch:
    """The first unrecoverable failure of an engine, set by whichever thread met it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.event = threading.Event()

    def set(self, reason: str) -> bool:
        """Record `reason` unless a failure is already recorded; True if it was."""
        with self._lock:
            if self.reason is not None:
                return False
            self.reason = reason
        self.event.set()
        return True
