"""The system adapters: the real clock and random ids, for production wiring."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass
class SystemClock:
    """The real clock, for production wiring."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class RandomIds:
    """Sortable unique ids: a millisecond timestamp then random hex."""

    prefix: str = ""
    _rand: Callable[[int], bytes] = field(default=os.urandom)

    def new_id(self) -> str:
        return f"{self.prefix}{int(time.time() * 1000):013d}-{self._rand(6).hex()}"
