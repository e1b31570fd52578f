"""The task graph: soundness checks and queries, iterative even for 10,000 tasks."""

from __future__ import annotations

import json
import sys
import time
from typing import NamedTuple

import pytest

from stratoflow.core.dag import (
    GraphError,
    check_graph,
    downstream_map,
    find_cycle,
    graph_problems,
    leaves,
    topological_order,
)
from stratoflow.core.loader import load_workflow_text

LARGE = 10_000


class Node(NamedTuple):
    id: str
    depends: list[str]


def graph(**depends: str) -> list[Node]:
    """Nodes from keyword arguments: graph(a="", b="a", c="a b") means c depends on a and b."""
    return [Node(task_id, deps.split()) for task_id, deps in depends.items()]


def chain_text(length: int) -> str:
    tasks = [{"id": "t0", "command": "true"}] + [
        {"id": f"t{i}", "command": "true", "depends": [f"t{i - 1}"]} for i in range(1, length)
    ]
    return json.dumps({"id": "chain", "tasks": tasks})


def fan_out_fan_in_text(width: int) -> str:
    middle = [f"m{i}" for i in range(width)]
    tasks = [
        {"id": "start", "command": "true"},
        *({"id": m, "command": "true", "depends": ["start"]} for m in middle),
        {"id": "finish", "command": "true", "depends": middle},
    ]
    return json.dumps({"id": "fan", "tasks": tasks})


# ---- queries ---------------------------------------------------------------------------------


def test_topological_order_puts_every_task_after_its_upstreams() -> None:
    tasks = graph(report="load", load="extract clean", clean="extract", extract="")

    order = topological_order(tasks)

    assert order.index("extract") < order.index("clean") < order.index("load")
    assert order.index("load") < order.index("report")


def test_topological_order_keeps_file_order_among_roots() -> None:
    assert topological_order(graph(c="", a="", b="")) == ["c", "a", "b"]


def test_topological_order_refuses_a_cyclic_graph() -> None:
    with pytest.raises(GraphError, match="dependency cycle"):
        topological_order(graph(a="b", b="a"))


def test_downstream_map_lists_dependents_in_file_order_and_leaves_empty() -> None:
    tasks = graph(extract="", load="extract", audit="extract", report="load")

    assert downstream_map(tasks) == {
        "extract": ["load", "audit"],
        "load": ["report"],
        "audit": [],
        "report": [],
    }


def test_leaves_are_the_tasks_nobody_depends_on() -> None:
    assert leaves(graph(extract="", load="extract", audit="extract", report="load")) == [
        "audit",
        "report",
    ]


# ---- checks -----------------------------------------------------------------------------------


def test_sound_graph_passes_the_check() -> None:
    check_graph(graph(a="", b="a", c="a b"))


def test_graph_error_is_a_value_error_for_pydantic() -> None:
    assert issubclass(GraphError, ValueError)


def test_every_problem_is_collected() -> None:
    tasks = [*graph(a="a", b="zzz", c="b b"), Node("a", [])]

    messages = [str(p) for p in graph_problems(tasks)]

    assert messages == [
        'tasks[3] (id "a").id: duplicate task id "a" (first used by tasks[0])',
        'tasks[0] (id "a").depends: a task cannot depend on itself',
        'tasks[1] (id "b").depends: unknown task "zzz" (no task has this id)',
        'tasks[2] (id "c").depends: lists "b" more than once',
    ]


def test_cycle_is_listed_in_run_order_from_its_first_task_in_the_file() -> None:
    tasks = graph(root="", b="a", c="b", a="root c")

    assert find_cycle(tasks) == ["b", "c", "a", "b"]


def test_tasks_downstream_of_a_cycle_are_not_part_of_it() -> None:
    tasks = graph(after="b", a="b", b="a")

    assert find_cycle(tasks) == ["a", "b", "a"]


def test_acyclic_graph_has_no_cycle() -> None:
    assert find_cycle(graph(a="", b="a", c="a b")) is None


def test_cycle_message_names_the_tasks_in_order() -> None:
    with pytest.raises(GraphError) as caught:
        check_graph(graph(a="c", b="a", c="b"))

    assert str(caught.value).startswith("tasks: dependency cycle: a -> b -> c -> a")


def test_cycle_message_shortens_a_long_cycle() -> None:
    tasks = [Node(f"t{i}", [f"t{(i - 1) % 100}"]) for i in range(100)]

    with pytest.raises(GraphError) as caught:
        check_graph(tasks)

    assert "t18 -> (81 more) -> t0 (each task" in str(caught.value)


# ---- size: iterative, and fast -----------------------------------------------------------------


def test_long_chain_is_ordered_without_recursion() -> None:
    tasks = [Node("t0", [])] + [Node(f"t{i}", [f"t{i - 1}"]) for i in range(1, LARGE)]

    assert sys.getrecursionlimit() < LARGE
    assert topological_order(tasks) == [f"t{i}" for i in range(LARGE)]


def test_long_cycle_is_found_without_recursion() -> None:
    tasks = [Node(f"t{i}", [f"t{(i - 1) % LARGE}"]) for i in range(LARGE)]

    cycle = find_cycle(tasks)

    assert cycle is not None
    assert cycle[:3] == ["t0", "t1", "t2"]
    assert len(cycle) == LARGE + 1


def test_ten_thousand_task_chain_loads_in_under_a_second() -> None:
    text = chain_text(LARGE)

    started = time.perf_counter()
    workflow = load_workflow_text(text, "chain.json")
    elapsed = time.perf_counter() - started

    assert len(workflow.tasks) == LARGE
    assert elapsed < 1.0


def test_ten_thousand_task_fan_out_fan_in_loads_in_under_a_second() -> None:
    text = fan_out_fan_in_text(LARGE - 2)

    started = time.perf_counter()
    workflow = load_workflow_text(text, "fan.json")
    elapsed = time.perf_counter() - started

    assert leaves(workflow.tasks) == ["finish"]
    assert elapsed < 1.0


def test_ten_thousand_task_yaml_chain_loads() -> None:
    # YAML is slower to parse than JSON (PyYAML), so only correctness is asserted here.
    text = "id: chain\ntasks:\n  - {id: t0, command: 'true'}\n" + "".join(
        f"  - {{id: t{i}, command: 'true', depends: t{i - 1}}}\n" for i in range(1, LARGE)
    )

    assert len(load_workflow_text(text, "chain.yaml").tasks) == LARGE
