"""The floor: the same DAG run by a bare topological thread pool in one process.

Each task is `/bin/sh -c true` started as the runner starts it (a new session, stdin from
/dev/null, stdout and stderr to one pipe that is read to its end), so the floor costs what
the commands themselves cost and nothing of orchestration: the difference between a
workload's wall time and its floor is the orchestrator's overhead.
"""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from workloads import Dag

SHELL = "/bin/sh"


def run_true(command: str = "true") -> int:
    proc = subprocess.Popen(
        [SHELL, "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    proc.stdout.read()
    proc.stdout.close()
    return proc.wait()


def run_floor(dag: Dag, workers: int = 2) -> float:
    """Run `dag` with a pool of `workers` threads; returns the wall time in seconds."""
    children: dict[str, list[str]] = {t: [] for t in dag}
    waiting = {t: len(parents) for t, parents in dag.items()}
    for t, parents in dag.items():
        for p in parents:
            children[p].append(t)
    lock = threading.Lock()
    done = threading.Event()
    remaining = [len(dag)]
    failures: list[BaseException] = []

    with ThreadPoolExecutor(workers, thread_name_prefix="floor") as pool:

        def task(t: str) -> None:
            try:
                code = run_true()
                if code != 0:
                    raise RuntimeError(f"floor: {t} exited {code}")
            except BaseException as exc:
                failures.append(exc)
                done.set()
                return
            ready: list[str] = []
            with lock:
                for c in children[t]:
                    waiting[c] -= 1
                    if waiting[c] == 0:
                        ready.append(c)
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()
            for c in ready:
                pool.submit(task, c)

        start = time.perf_counter()
        for t, n in list(waiting.items()):
            if n == 0:
                pool.submit(task, t)
        done.wait()
        wall = time.perf_counter() - start
    if failures:
        raise failures[0]
    return wall
