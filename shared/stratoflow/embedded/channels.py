"""Channels of the embedded queues: which process's messages a queue client handles.

Several processes share one database file, and each handles only its own runs' messages.
An open channel is held with an `flock` on `<db dir>/channels/<name>.lock`, so when its
process dies the lock goes with it and another process can adopt its messages
(`ChannelHolder.adopt_orphans`). `EmbeddedSqs` (`stratoflow.embedded.queues`) is a
`ChannelHolder`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from stratoflow.embedded.db import Database
from stratoflow.embedded.signals import notify_all

CHANNEL_LOCK_PATIENCE = 0.5
"""How long opening a channel waits for a lock held by an adopter (which holds it for one
transaction) before deciding that a live process owns the channel."""

_CHANNEL_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")


class ChannelBusy(RuntimeError):
    """Another live process (or an adopter, for longer than a moment) holds the channel."""


def _check_channel(name: str) -> None:
    if not _CHANNEL_NAME.match(name):
        raise ValueError(
            f"channel name {name!r} must be 1-128 letters, digits, '.', '_' or '-' "
            "(not starting with '.')"
        )


@dataclass
class _HeldChannel:
    fd: int
    refs: int


# Channels this process holds, by lock-file path: flock locks belong to an open file
# description, so a second open of the same file in this process would conflict with the
# first; instances of one process that use the same channel share one lock instead.
_held: dict[str, _HeldChannel] = {}
_held_lock = threading.Lock()


def _try_lock(path: Path) -> int | None:
    """Open and exclusively flock `path`; None if someone holds it. The inode check guards
    against locking a file that its holder unlinked meanwhile (another opener would then
    create and lock a new file under the same name)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            os.close(fd)
            continue
        mine = os.fstat(fd)
        if (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino):
            return fd
        os.close(fd)


def _release_channel(path: str) -> None:
    """Drop one reference to a held channel; the last one closes its lock (GC, exit)."""
    with _held_lock:
        held = _held.get(path)
        if held is None:
            return
        held.refs -= 1
        if held.refs <= 0:
            del _held[path]
            os.close(held.fd)


@dataclass(frozen=True)
class Adopted:
    """What `adopt_orphans` took over."""

    channels: list[str]
    messages: int


class ChannelHolder:
    """The channel of a queue client (`EmbeddedSqs`): opening (locking and registering) it,
    closing it, adopting the channels of dead processes and releasing what a dead consumer
    had received. A non-empty channel is opened for the life of the object; with
    `own_channel=False` the instance only uses the channel, which its owner holds."""

    def __init__(self, db: Database, channel: str = "", *, own_channel: bool = True) -> None:
        self.db = db
        self.channel = ""
        self._db_key = os.path.realpath(db.path)
        self._channels_dir = Path(os.path.realpath(db.path.parent)) / "channels"
        self._interrupted = False
        self._lock_path: str | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        if channel and own_channel:
            self.open_channel(channel)
        elif channel:
            _check_channel(channel)
            self.channel = channel

    def open_channel(self, name: str) -> None:
        """Make `name` this instance's channel (closing the one it had): lock
        `<db dir>/channels/<name>.lock` for the life of this object and record the channel
        (name, pid, opened_at). Raises `ChannelBusy` if another process holds it."""
        self.close()
        self.channel = ""
        if not name:
            return
        _check_channel(name)
        path = str(self._channels_dir / f"{name}.lock")
        with _held_lock:
            held = _held.get(path)
            if held is not None:
                held.refs += 1
            else:
                self._channels_dir.mkdir(parents=True, exist_ok=True)
                deadline = time.monotonic() + CHANNEL_LOCK_PATIENCE
                while (fd := _try_lock(Path(path))) is None:
                    if time.monotonic() >= deadline:
                        raise ChannelBusy(
                            f"channel {name!r} is held by another process (lock {path})"
                        )
                    time.sleep(0.02)
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                _held[path] = _HeldChannel(fd, 1)
        self._lock_path = path
        self._finalizer = weakref.finalize(self, _release_channel, path)
        self.channel = name
        with self.db.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO channels (name, pid, opened_at) VALUES (?, ?, ?)",
                (name, os.getpid(), time.time()),
            )

    def close(self) -> None:
        """Close this instance's channel: delete its record and release its lock (the
        last instance of this process to hold it does). Messages left in it, and any this
        instance still sends, are then adoptable (`adopt_orphans`). The database stays
        open."""
        finalizer, path, name = self._finalizer, self._lock_path, self.channel
        self._finalizer, self._lock_path = None, None
        if finalizer is None or path is None:
            return
        with _held_lock:
            held = _held.get(path)
            last = held is not None and held.refs == 1
            if last:
                with contextlib.suppress(sqlite3.Error), self.db.write() as conn:
                    conn.execute("DELETE FROM channels WHERE name = ?", (name,))
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # while still locked: see _try_lock
        finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def adopt_orphans(self, into: str = "") -> Adopted:
        """Move the messages of every channel whose owner is gone (its lock file is free:
        the process closed it or died) to channel `into`, one transaction per channel, and
        forget those channels. Messages the dead owner had received become visible at once
        (their consumer is known to be gone; waiting out the visibility timeout would only
        delay them). Channels held by this process, and the default channel "", are never
        adopted."""
        with self.db.read() as conn:
            names = {
                row[0]
                for row in conn.execute(
                    "SELECT name FROM channels UNION SELECT DISTINCT channel FROM messages"
                )
            }
        with _held_lock:
            ours = {Path(p).stem for p in _held if Path(p).parent == self._channels_dir}
        moved = 0
        adopted: list[str] = []
        now = time.time()
        for name in sorted(names - ours - {"", into}):
            if not _CHANNEL_NAME.match(name):
                continue
            self._channels_dir.mkdir(parents=True, exist_ok=True)
            path = self._channels_dir / f"{name}.lock"
            fd = _try_lock(path)
            if fd is None:
                continue  # its owner is alive
            try:
                with self.db.write() as conn:
                    moved += conn.execute(
                        "UPDATE messages SET channel = ?, visible_at = CASE WHEN "
                        "receive_count > 0 AND visible_at > ? THEN ? ELSE visible_at END "
                        "WHERE channel = ?",
                        (into, now, now, name),
                    ).rowcount
                    conn.execute("DELETE FROM channels WHERE name = ?", (name,))
                adopted.append(name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            finally:
                os.close(fd)
        if moved:
            self._notify_all()
        return Adopted(adopted, moved)

    def release_received(self) -> int:
        """Make the messages received on this instance's channel visible again now: their
        consumer died (an engine starting on a home whose previous engine was killed).
        Returns how many."""
        now = time.time()
        with self.db.write() as conn:
            released = conn.execute(
                "UPDATE messages SET visible_at = ? WHERE channel = ? AND receive_count > 0 "
                "AND visible_at > ?",
                (now, self.channel, now),
            ).rowcount
        if released:
            self._notify_all()
        return released

    def interrupt(self) -> None:
        """End the long polls of this instance now, and make later ones return at once
        (the engine is stopping: its pumps must not wait out their poll)."""
        self._interrupted = True
        self._notify_all()

    def _notify_all(self) -> None:
        notify_all(self._db_key)
