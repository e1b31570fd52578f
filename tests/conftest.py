"""Shared fixtures: an engine on the embedded emulator, driven in-process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stratoflow.local.runtime import LocalRuntime


def _runtime(tmp_path_factory: pytest.TempPathFactory, **kwargs: Any) -> Iterator[LocalRuntime]:
    rt = LocalRuntime(state_dir=tmp_path_factory.mktemp("state"), **kwargs)
    rt.start()
    try:
        yield rt
    finally:
        rt.stop()


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    """A running engine (queues pumped into the real handlers); redeliveries are quick."""
    yield from _runtime(tmp_path_factory, workers=4, redelivery_delay=0.05)


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    """The engine's resources and handlers with nobody pumping the queues."""
    yield from _runtime(tmp_path_factory, pump=False)


@pytest.fixture(autouse=True)
def _handlers_use_this_modules_runtime(request: pytest.FixtureRequest) -> None:
    # Handlers reach AWS through process-wide defaults; re-point them at the runtime of the
    # module under test, whichever module ran before in this worker.
    for name in ("runtime", "bare"):
        if name in request.fixturenames:
            request.getfixturevalue(name).install()
