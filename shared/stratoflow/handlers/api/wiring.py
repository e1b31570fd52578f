"""The wiring the API's routes work with: the one handed to `handle` for the request being
answered (a context variable, so requests answered at once in several threads, or by
several engines in one process, each see their own)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from stratoflow.bootstrap import Wiring
from stratoflow.services import Ports

_current: ContextVar[Wiring] = ContextVar("stratoflow_api_wiring")


def current() -> Wiring:
    return _current.get()


def ports() -> Ports:
    return _current.get().ports


@contextmanager
def serving(wiring: Wiring) -> Iterator[None]:
    """Answer requests with `wiring` inside this block."""
    token = _current.set(wiring)
    try:
        yield
    finally:
        _current.reset(token)
