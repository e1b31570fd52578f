"""The task graph: soundness checks and read-only queries over a workflow's dependencies.

An edge runs from a task to each task that lists it in `depends` (upstream -> downstream).
Every walk here is iterative: a 10,000-task chain must not hit Python's recursion limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

MAX_CYCLE_SHOWN = 20


class DagNode(Protocol):
    """What the graph needs from a task: its id and the ids it depends on."""

    @property
    def id(self) -> str: ...

    @property
    def depends(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class GraphProblem:
    """One reason a task graph cannot run, located at a task's field or at the whole graph."""

    message: str
    task_index: int | None = None
    task_id: str | None = None
    field: str | None = None

    @property
    def location(self) -> str:
        """Where the problem is, e.g. `tasks[2] (id "load").depends`, or `tasks`."""
        if self.task_index is None:
            return "tasks"
        return f'tasks[{self.task_index}] (id "{self.task_id}").{self.field}'

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class GraphError(ValueError):
    """The task graph is unsound; `problems` holds every reason found, in file order."""

    def __init__(self, problems: Sequence[GraphProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


def graph_problems(tasks: Sequence[DagNode]) -> list[GraphProblem]:
    """Every graph problem: duplicate ids, self, unknown or repeated dependencies, a cycle."""
    problems: list[GraphProblem] = []
    first_index: dict[str, int] = {}
    for index, task in enumerate(tasks):
        if task.id in first_index:
            problems.append(
                GraphProblem(
                    f'duplicate task id "{task.id}" (first used by tasks[{first_index[task.id]}])',
                    index,
                    task.id,
                    "id",
                )
            )
        else:
            first_index[task.id] = index
    for index, task in enumerate(tasks):
        listed: set[str] = set()
        for dep in task.depends:
            if dep == task.id:
                message = "a task cannot depend on itself"
            elif dep not in first_index:
                message = f'unknown task "{dep}" (no task has this id)'
            elif dep in listed:
                message = f'lists "{dep}" more than once'
            else:
                listed.add(dep)
                continue
            problems.append(GraphProblem(message, index, task.id, "depends"))
    cycle = find_cycle(tasks)
    if cycle:
        problems.append(
            GraphProblem(
                f"dependency cycle: {_cycle_text(cycle)} (each task waits for the one before "
                "it, so none of them can start)"
            )
        )
    return problems


def _cycle_text(cycle: list[str]) -> str:
    # A generated workflow can hold a cycle of thousands of tasks; the message stays short.
    if len(cycle) > MAX_CYCLE_SHOWN:
        hidden = len(cycle) - MAX_CYCLE_SHOWN
        cycle = [*cycle[: MAX_CYCLE_SHOWN - 1], f"({hidden} more)", cycle[-1]]
    return " -> ".join(cycle)


def check_graph(tasks: Sequence[DagNode]) -> None:
    """Raise GraphError (a ValueError) listing every problem if the tasks cannot form a DAG."""
    problems = graph_problems(tasks)
    if problems:
        raise GraphError(problems)


def find_cycle(tasks: Sequence[DagNode]) -> list[str] | None:
    """One dependency cycle as ids in run order, first id repeated at the end; None if acyclic.

    Self dependencies and unknown ids are ignored here: `graph_problems` reports them.
    """
    upstream = _upstream_map(tasks)
    done = set(_kahn_order(upstream))
    if len(done) == len(upstream):
        return None
    # Every task Kahn's algorithm could not release still waits for another such task,
    # so walking upstream from any of them must revisit a task: that loop is a cycle.
    position: dict[str, int] = {}
    walk: list[str] = []
    node = next(task_id for task_id in upstream if task_id not in done)
    while node not in position:
        position[node] = len(walk)
        walk.append(node)
        node = next(up for up in upstream[node] if up not in done)
    cycle = walk[position[node] :][::-1]  # the walk went upstream; report in run order
    # Start at the task that comes first in the file, so the message is stable.
    file_order = {task_id: index for index, task_id in enumerate(upstream)}
    start = min(range(len(cycle)), key=lambda i: file_order[cycle[i]])
    cycle = cycle[start:] + cycle[:start]
    return [*cycle, cycle[0]]


def topological_order(tasks: Sequence[DagNode]) -> list[str]:
    """Task ids so that every task comes after its upstreams (roots in file order first).

    Raises GraphError if the graph is unsound.
    """
    check_graph(tasks)
    return _kahn_order(_upstream_map(tasks))


def downstream_map(tasks: Sequence[DagNode]) -> dict[str, list[str]]:
    """For every task id, the ids of the tasks that depend on it, in file order.

    Expects the tasks of a validated Workflow (unknown dependencies raise KeyError).
    """
    downstream: dict[str, list[str]] = {task.id: [] for task in tasks}
    for task in tasks:
        for dep in task.depends:
            downstream[dep].append(task.id)
    return downstream


def leaves(tasks: Sequence[DagNode]) -> list[str]:
    """Ids of the tasks nobody depends on, in file order."""
    return [task_id for task_id, down in downstream_map(tasks).items() if not down]


def _upstream_map(tasks: Sequence[DagNode]) -> dict[str, list[str]]:
    """Known, distinct, non-self upstream ids per task id, in file order.

    On duplicate ids the first task wins; `graph_problems` reports the others.
    """
    first: dict[str, DagNode] = {}
    for task in tasks:
        first.setdefault(task.id, task)
    return {
        task_id: [dep for dep in dict.fromkeys(task.depends) if dep != task_id and dep in first]
        for task_id, task in first.items()
    }


def _kahn_order(upstream: dict[str, list[str]]) -> list[str]:
    """Kahn's algorithm: ids whose upstreams all come first; omits tasks on or after a cycle."""
    waiting = {task_id: len(deps) for task_id, deps in upstream.items()}
    downstream: dict[str, list[str]] = {task_id: [] for task_id in upstream}
    for task_id, deps in upstream.items():
        for dep in deps:
            downstream[dep].append(task_id)
    ready = deque(task_id for task_id, count in waiting.items() if count == 0)
    order: list[str] = []
    while ready:
        task_id = ready.popleft()
        order.append(task_id)
        for child in downstream[task_id]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return order
