#!/usr/bin/env python3
"""Peers measured in the same run as stratoflow: Luigi, on the same DAGs and commands.

    .venv/bin/python bench/peers.py --workload W1 --json     # one workload, JSON on stdout

`bench/run.py` runs this once per workload in a fresh child process, as it runs each of
stratoflow's workloads, and installs Luigi into the venv first if it is missing
(`ensure_luigi`). Each Luigi task is one task of the DAG: `requires()` returns its parents,
`run()` runs `/bin/sh -c true` exactly as the floor does (`floor.run_true`), and completion
is in memory (nothing is written, no target is checked). Luigi runs as its users run it:
`luigi.build(..., workers=2, local_scheduler=True)`, its worker running each task in a
process of its own (Luigi does so whenever `workers` > 1). Two settings differ from Luigi's
defaults, both in Luigi's favour: its log level is WARNING (Luigi logs every task's start
and end at INFO, DEBUG by default), and its worker does not re-check, in each task's
process, that the parents are complete (`check_unfulfilled_deps = false`; the in-memory
completion of a parent is not visible in its dependent's process, and the scheduler has
already ordered them).

The overhead is computed as stratoflow's: (wall − floor) / tasks, with the floor measured in
the same process just before. The wall time is the whole `luigi.build` call: the DAG's
scheduling (Luigi walks `requires()` and asks each task whether it is complete) and the run.

Dagster, Prefect and Airflow are not re-run: their figures are the ones measured in issue 5
(`NOT_RERUN`), labelled as such wherever they are shown.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from floor import run_floor, run_true  # noqa: E402
from workloads import Dag, workloads  # noqa: E402

LUIGI_REQUIREMENT = "luigi>=3.5,<4"
PEER_WORKLOADS = ("W1", "W2", "W3")

NOT_RERUN: dict[str, dict[str, float]] = {
    "Dagster 1.13": {"W1": 20, "W2": 19, "W3": 24},
    "Prefect 3.9": {"W1": 97, "W2": 26, "W3": 35},
    "Airflow 3.3": {"W1": 147, "W2": 66, "W3": 76},
}
"""Orchestration overhead per task (ms) of peers measured on this machine in issue 5 and not
re-run since (installing and starting them costs minutes; Luigi is the fastest of the four)."""
NOT_RERUN_NOTE = "measured in issue 5, not re-run"
LUIGI_ISSUE5 = {"W1": 5.5, "W2": 4.6, "W3": 19.8}
"""Luigi 3.8's figures from issue 5: shown only if Luigi cannot be installed and measured."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- parent side


def luigi_version(python: str = sys.executable) -> str | None:
    """Luigi's version in `python`'s environment, or None when it is not installed."""
    if python == sys.executable:
        if importlib.util.find_spec("luigi") is None:
            return None
        try:
            return importlib.metadata.version("luigi")
        except importlib.metadata.PackageNotFoundError:
            return None
    proc = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('luigi'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def ensure_luigi(python: str = sys.executable) -> str | None:
    """Install Luigi from PyPI into `python`'s environment if it is missing (logged);
    returns its version, or None when it could not be installed."""
    version = luigi_version(python)
    if version is not None:
        return version
    log(
        f"peers: Luigi is not installed; installing '{LUIGI_REQUIREMENT}' from PyPI into "
        f"{Path(python).parent.parent} (pip) to measure it in this run"
    )
    proc = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            LUIGI_REQUIREMENT,
        ],
        check=False,
    )
    if proc.returncode != 0:
        log(f"peers: installing Luigi failed (pip exit {proc.returncode}); Luigi is not measured")
        return None
    importlib.invalidate_caches()
    return luigi_version(python)


# ---------------------------------------------------------------------------- child side

_DAG: Dag = {}
_DONE: set[str] = set()
_TASK_CLASS: list[type] = []


def _luigi_task_class() -> type:
    """The Luigi task class (defined once: Luigi registers task classes by name)."""
    if _TASK_CLASS:
        return _TASK_CLASS[0]
    import luigi

    class BenchTask(luigi.Task):
        """One task of the DAG: its parents are its requirements; it runs `true`."""

        name = luigi.Parameter()

        def requires(self) -> list[Any]:
            return [BenchTask(name=p) for p in _DAG[self.name]]

        def complete(self) -> bool:
            return self.name in _DONE

        def run(self) -> None:
            code = run_true()
            if code != 0:
                raise RuntimeError(f"{self.name}: true exited {code}")
            _DONE.add(self.name)

    _TASK_CLASS.append(BenchTask)
    return BenchTask


def run_luigi(dag: Dag, workers: int) -> float:
    """Run `dag` with Luigi's local scheduler and `workers` workers; the wall time in s."""
    import luigi
    from luigi.execution_summary import LuigiStatusCode

    cfg = luigi.configuration.get_config()
    cfg.set("worker", "check_unfulfilled_deps", "false")
    _DAG.clear()
    _DAG.update(dag)
    _DONE.clear()
    task = _luigi_task_class()
    has_children = {p for parents in dag.values() for p in parents}
    sinks = [task(name=t) for t in dag if t not in has_children]
    start = time.perf_counter()
    result = luigi.build(
        sinks, workers=workers, local_scheduler=True, log_level="WARNING", detailed_summary=True
    )
    wall = time.perf_counter() - start
    if result.status not in (LuigiStatusCode.SUCCESS,):
        raise RuntimeError(f"luigi: the run ended {result.status.name}: {result.summary_text}")
    return wall


def measure_luigi(name: str, workers: int, repeats: int) -> dict[str, Any]:
    wl = workloads()[name]
    dag = wl.build()
    n = len(dag)
    load = os.getloadavg()
    floors = [run_floor(dag, workers) for _ in range(3)]
    floor = statistics.median(floors)
    walls = [run_luigi(dag, workers) for _ in range(repeats)]
    wall = statistics.median_low(walls)
    version = importlib.metadata.version("luigi")
    log(
        f"{name}: Luigi {version}: floor {floor:.2f} s, wall {wall:.2f} s "
        f"(median of {repeats}): {(wall - floor) / n * 1000:.1f} ms per task"
    )
    return {
        "peer": "Luigi",
        "version": version,
        "workload": name,
        "tasks": n,
        "workers": workers,
        "load_average": load,
        "floor_s": floor,
        "floor_runs_s": floors,
        "wall_s": wall,
        "wall_runs_s": walls,
        "overhead_ms_per_task": (wall - floor) / n * 1000,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--workload", required=True, choices=PEER_WORKLOADS)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="JSON on stdout (one line)")
    args = p.parse_args(argv)
    result = measure_luigi(args.workload, args.workers, args.repeats)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
