"""Shared fixtures: engines driven in-process.

`runtime` and `bare` run on the embedded engine (SQLite in a temporary home), the local
default; `emulator_runtime` and `emulator_bare` run the AWS adapters on the embedded moto
server, for what only the AWS code path can show (API calls made, item layouts).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stratoflow.local.runtime import LocalRuntime


def make_runtime(tmp_path_factory: pytest.TempPathFactory, **kwargs: Any) -> Iterator[LocalRuntime]:
    rt = LocalRuntime(state_dir=tmp_path_factory.mktemp("state"), **kwargs)
    rt.start()
    try:
        yield rt
    finally:
        rt.stop()


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    """A running embedded engine (queues pumped into the real handlers); quick redeliveries."""
    yield from make_runtime(tmp_path_factory, workers=4, redelivery_delay=0.05)


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    """The embedded engine's resources and handlers with nobody pumping the queues."""
    yield from make_runtime(tmp_path_factory, pump=False)


@pytest.fixture(scope="module")
def emulator_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    """Like `runtime`, on the AWS adapters and the embedded moto server."""
    yield from make_runtime(tmp_path_factory, workers=4, redelivery_delay=0.05, emulator=True)


@pytest.fixture(scope="module")
def emulator_bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    """Like `bare`, on the AWS adapters and the embedded moto server."""
    yield from make_runtime(tmp_path_factory, pump=False, emulator=True)
