"""The chaos suite's options: the long set runs with `-m chaos` (`make chaos`); a seed is
rerun alone with `--chaos-seed=N` (or CHAOS_SEED=N in the environment, which `make chaos
SEED=N` sets)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .engine import BLOCK, short_leases

SLICE = {"embedded": range(0, 20), "emulator": range(0, 5), "killed": range(0, 1)}
"""The seeds `make test` runs (under 30 s on two cores)."""
LONG = {
    "embedded": range(1000, 1500),
    "emulator": range(2000, 2100),
    "killed": range(3000, 3020),
}
"""The seeds `make chaos` runs (marker `chaos`)."""
BATCH = {"embedded": BLOCK, "emulator": 10, "killed": 1}
"""Seeds run at once on one runtime (a test each batch)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-seed",
        type=int,
        default=None,
        help="run only this seed of the chaos suite (on each engine test selected)",
    )


def chaos_seed(config: pytest.Config) -> int | None:
    """The seed asked for on the command line or in CHAOS_SEED, if any."""
    try:
        found = config.getoption("chaos_seed")
    except ValueError:  # this conftest was not loaded at start-up (pytest from the root)
        found = None
    if found is None and os.environ.get("CHAOS_SEED"):
        found = int(os.environ["CHAOS_SEED"])
    return found if found is None else int(found)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The long set only when asked for (`-m chaos`), so that `make test` runs the slice.
    markexpr = config.getoption("markexpr", default="") or ""
    if "chaos" in markexpr:
        return
    long = [item for item in items if item.get_closest_marker("chaos") is not None]
    if long:
        config.hook.pytest_deselected(items=long)
        items[:] = [item for item in items if item.get_closest_marker("chaos") is None]


def _batches(seeds: range, size: int) -> list[list[int]]:
    return [list(seeds[i : i + size]) for i in range(0, len(seeds), size)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`seeds`: the batches of a test named test_<embedded|emulator|killed>_…"""
    if "seeds" not in metafunc.fixturenames:
        return
    kind = metafunc.function.__name__.split("_")[1]
    seed = chaos_seed(metafunc.config)
    if seed is not None:
        params = [pytest.param([seed], id=f"seed{seed}")]
    else:
        params = [
            pytest.param(b, id=f"slice-seeds{b[0]}-{b[-1]}")
            for b in _batches(SLICE[kind], BATCH[kind])
        ]
        params += [
            pytest.param(b, id=f"seeds{b[0]}-{b[-1]}", marks=pytest.mark.chaos)
            for b in _batches(LONG[kind], BATCH[kind])
        ]
    metafunc.parametrize("seeds", params)


@pytest.fixture
def leases() -> Iterator[None]:
    """Short leases for the executors of this process (see engine.short_leases)."""
    with short_leases():
        yield
