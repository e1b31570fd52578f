"""The benchmark's workloads: DAG shapes whose every task runs `true` (issue 5, item 1).

A DAG is a mapping task id → parent ids, in topological order (every task after its
parents). `workflow_spec` turns one into the dict `Workflow.model_validate` accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Dag = dict[str, list[str]]

COMMAND = "true"
W4_FULL_WIDTH = 10_000
"""The issue's W4: what `make bench` runs on the embedded engine (about a minute here)."""
W4_QUICK_WIDTH = 2_000
"""`--quick`: W4 on the embedded engine."""
W4_EMULATOR_WIDTH = 1_000
"""W4 on the emulator path in `make bench`: there it measures the API calls and the cost per
task, which hardly depend on the width, while moto's time per task grows with the messages
queued (1,000 tasks took 1.9 min here, 2,000 took 5.5 min, 10,000 would take over an hour),
over the budget of a routine benchmark (`--emulator-w4-width N` runs another size)."""
W4_EMULATOR_QUICK_WIDTH = 200
"""`--quick`: W4 on the emulator path."""


def chain(n: int) -> Dag:
    """t000 → t001 → … : each task depends on the one before."""
    ids = [f"t{i:04d}" for i in range(n)]
    return {t: ([ids[i - 1]] if i else []) for i, t in enumerate(ids)}


def fan_out_in(width: int) -> Dag:
    """root → `width` parallel tasks → sink."""
    mids = [f"m{i:05d}" for i in range(width)]
    dag: Dag = {"root": []}
    dag.update({m: ["root"] for m in mids})
    dag["sink"] = list(mids)
    return dag


def lattice(layers: int, width: int) -> Dag:
    """`layers` layers of `width` tasks; each depends on every task of the layer before."""
    dag: Dag = {}
    previous: list[str] = []
    for layer in range(layers):
        current = [f"l{layer:02d}_{i:02d}" for i in range(width)]
        for t in current:
            dag[t] = list(previous)
        previous = current
    return dag


def edges(dag: Dag) -> int:
    return sum(len(parents) for parents in dag.values())


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    build: Callable[[], Dag]


def workloads(w4_width: int = W4_FULL_WIDTH) -> dict[str, Workload]:
    """The four workloads of the issue; W4's width can be lowered (`--quick`, `--w4-width`)."""
    return {
        "W1": Workload("W1", "chain of 100", lambda: chain(100)),
        "W2": Workload("W2", "1 → 500 → 1 fan-out/fan-in", lambda: fan_out_in(500)),
        "W3": Workload("W3", "lattice 20 × 20 (all-to-all layers)", lambda: lattice(20, 20)),
        "W4": Workload(
            "W4",
            f"1 → {w4_width:,} → 1 fan-out/fan-in (scale)",
            lambda: fan_out_in(w4_width),
        ),
    }


def workflow_spec(workflow_id: str, dag: Dag) -> dict[str, object]:
    """The workflow document for `dag` (default trigger rule all_success, no retries)."""
    return {
        "id": workflow_id,
        "description": "stratoflow benchmark",
        "tasks": [
            {"id": t, "command": COMMAND, **({"depends": parents} if parents else {})}
            for t, parents in dag.items()
        ],
    }
