"""Wake-ups of long polls: one condition per (database file, queue) in this process.

Every change made in this process that may make a message receivable notifies the
waiters of that queue at once (`stratoflow.embedded.queues`); a change made by another
process on the same file is seen by the pollers' periodic recheck instead.
"""

from __future__ import annotations

import threading


class _Signal:
    """Wakes this process's long polls of one queue when something may have become
    receivable; `generation` tells a poller whether it missed a notification between its
    look at the database and its wait."""

    __slots__ = ("cond", "generation", "waiters")

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.generation = 0
        self.waiters = 0

    def notify(self, n: int | None = None) -> None:
        """Wake `n` waiting polls (all with None): one per message is enough, since each
        claims what it finds; waking every poll for each message only makes them race for
        it (three completion pumps, say) and spend a write transaction each on nothing."""
        with self.cond:
            self.generation += 1
            if self.waiters:
                if n is None:
                    self.cond.notify_all()
                else:
                    self.cond.notify(n)


_signals: dict[tuple[str, str], _Signal] = {}
_signals_lock = threading.Lock()


def _signal(db_key: str, queue: str) -> _Signal:
    key = (db_key, queue)
    found = _signals.get(key)
    if found is None:
        with _signals_lock:
            found = _signals.setdefault(key, _Signal())
    return found


def notify_all(db_key: str) -> None:
    """Wake every long poll of this process on the database file `db_key`."""
    with _signals_lock:
        signals = [s for (db, _), s in _signals.items() if db == db_key]
    for signal in signals:
        signal.notify()
