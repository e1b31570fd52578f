"""Random workflows for the chaos suite, and what each of their attempts is designed to do.

A seed gives one DAG (a chain, a fan-out, a lattice or a random graph), every trigger rule,
retries with and without delays, timeouts, priorities and sometimes a concurrency cap. Each
task's command is scripted per attempt (succeed, fail or run past its timeout) and writes
a journal line when it starts and when it ends, in the run's workdir, so that the test can
see what really ran and in which order, whatever the engine recorded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

from stratoflow.core.model import TriggerRule

JOURNAL = "journal"
"""The file, in the run's workdir, every command appends its start and end lines to."""

Outcome = Literal["ok", "fail", "timeout"]
RULES = tuple(TriggerRule)


@dataclass(frozen=True)
class TaskDesign:
    """One task: its place in the graph and the outcome of each of its attempts."""

    id: str
    depends: tuple[str, ...]
    rule: TriggerRule
    retries: int
    retry_delay: float
    timeout: float
    priority: int
    outcomes: tuple[Outcome, ...]
    """The outcome of attempt n at index n − 1 (retries + 1 of them)."""

    def command(self) -> str:
        """A POSIX shell command: a journal line, the scripted outcome, another line."""
        cases = []
        for n, outcome in enumerate(self.outcomes, start=1):
            body = {"ok": "sleep 0.02; rc=0", "fail": "rc=3", "timeout": "sleep 30; rc=0"}[outcome]
            cases.append(f"{n}) {body};;")
        return (
            f'printf "%s %s start\\n" "$STRATOFLOW_TASK_ID" "$STRATOFLOW_ATTEMPT" >> {JOURNAL}; '
            f'case "$STRATOFLOW_ATTEMPT" in {" ".join(cases)} *) rc=9;; esac; '
            f'printf "%s %s end %s\\n" "$STRATOFLOW_TASK_ID" "$STRATOFLOW_ATTEMPT" "$rc" '
            f">> {JOURNAL}; exit $rc"
        )

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "id": self.id,
            "command": self.command(),
            "trigger_rule": self.rule.value,
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "timeout": self.timeout,
            "priority": self.priority,
        }
        if self.depends:
            spec["depends"] = list(self.depends)
        return spec


@dataclass(frozen=True)
class DagDesign:
    """One random workflow of the suite (its id is made unique per run by the test)."""

    seed: int
    shape: str
    tasks: tuple[TaskDesign, ...]
    concurrency: int | None = None
    by_id: dict[str, TaskDesign] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.by_id.update({t.id: t for t in self.tasks})

    def spec(self, workflow_id: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"id": workflow_id, "tasks": [t.spec() for t in self.tasks]}
        if self.concurrency is not None:
            spec["concurrency"] = self.concurrency
        return spec

    def children(self, task_id: str) -> list[str]:
        return [t.id for t in self.tasks if task_id in t.depends]

    def describe(self) -> str:
        """One line per task, for a failure message."""
        lines = [f"{self.shape} DAG, concurrency={self.concurrency}"]
        for t in self.tasks:
            lines.append(
                f"  {t.id} <- {','.join(t.depends) or '-'} [{t.rule.value}] "
                f"retries={t.retries} timeout={t.timeout} attempts={'/'.join(t.outcomes)}"
            )
        return "\n".join(lines)


def _edges(rng: random.Random, shape: str) -> list[tuple[str, ...]]:
    """Each task's parents (task i is `t<i>`; parents come before it)."""
    if shape == "chain":
        n = rng.randint(2, 6)
        return [() if i == 0 else (f"t{i - 1}",) for i in range(n)]
    if shape == "fanout":
        width = rng.randint(2, 5)
        parents: list[tuple[str, ...]] = [()]
        parents += [("t0",)] * width
        parents.append(tuple(f"t{i}" for i in range(1, width + 1)))
        return parents
    if shape == "lattice":
        layers, width = rng.randint(2, 3), rng.randint(2, 3)
        parents = []
        for layer in range(layers):
            for _ in range(width):
                if layer == 0:
                    parents.append(())
                    continue
                above = [f"t{(layer - 1) * width + j}" for j in range(width)]
                parents.append(tuple(sorted(rng.sample(above, rng.randint(1, width)))))
        return parents
    n = rng.randint(3, 8)
    parents = []
    for i in range(n):
        if i == 0 or rng.random() < 0.15:
            parents.append(())
            continue
        k = rng.randint(1, min(3, i))
        parents.append(tuple(sorted(f"t{j}" for j in rng.sample(range(i), k))))
    return parents


def _outcomes(rng: random.Random, retries: int) -> tuple[Outcome, ...]:
    """Mostly successes, some failures, a few timeouts; retries often rescue a failure."""
    result: list[Outcome] = []
    for _ in range(retries + 1):
        r = rng.random()
        result.append("ok" if r < 0.6 else "fail" if r < 0.92 else "timeout")
    return tuple(result)


def generate(seed: int) -> DagDesign:
    """The workflow of `seed`: the same seed always gives the same design."""
    rng = random.Random(f"dag-{seed}")
    shape = rng.choice(("chain", "fanout", "lattice", "random"))
    tasks = []
    for i, depends in enumerate(_edges(rng, shape)):
        retries = rng.choice((0, 0, 1, 1, 2))
        rule = TriggerRule.ALL_SUCCESS if rng.random() < 0.35 else rng.choice(RULES)
        tasks.append(
            TaskDesign(
                id=f"t{i}",
                depends=depends,
                rule=rule,
                retries=retries,
                retry_delay=rng.choice((0.0, 0.0, 0.3, 1.0)),
                timeout=rng.choice((1.0, 1.5)),
                priority=rng.randint(-2, 2),
                outcomes=_outcomes(rng, retries),
            )
        )
    concurrency = rng.choice((None, None, None, 1, 2))
    return DagDesign(seed=seed, shape=shape, tasks=tuple(tasks), concurrency=concurrency)
