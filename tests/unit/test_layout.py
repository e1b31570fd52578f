"""The layered layout of a workflow's DAG (core/layout.py): ranks, overlaps, crossings,
grouping, determinism and speed."""

from __future__ import annotations

import itertools
import random
import time

from stratoflow.core.layout import (
    GROUP_PREFIX,
    NODE_GAP,
    LayoutNode,
    layout_dag,
)


def _random_dag(n: int, seed: int, window: int = 30) -> dict[str, list[str]]:
    rng = random.Random(seed)
    deps: dict[str, list[str]] = {}
    ids: list[str] = []
    for i in range(n):
        recent = ids[-window:]
        deps[f"t{i}"] = rng.sample(recent, min(len(recent), rng.randint(0, 3)))
        ids.append(f"t{i}")
    return deps


def test_every_edge_points_down_to_a_later_rank() -> None:
    deps = _random_dag(300, seed=7)
    layout = layout_dag(deps, group_threshold=0)
    nodes = {n.id: n for n in layout.nodes}
    assert set(nodes) == set(deps)
    for task, parents in deps.items():
        for p in parents:
            assert nodes[p].rank < nodes[task].rank
            assert nodes[p].y + nodes[p].height < nodes[task].y
    # longest path: a task sits right below its lowest parent
    for task, parents in deps.items():
        expected = max((nodes[p].rank for p in parents), default=-1) + 1
        assert nodes[task].rank == expected


def test_boxes_on_a_rank_do_not_overlap_and_keep_their_order() -> None:
    layout = layout_dag(_random_dag(400, seed=3), group_threshold=0)
    ranks: dict[int, list[LayoutNode]] = {}
    for n in layout.nodes:
        ranks.setdefault(n.rank, []).append(n)
    for row in ranks.values():
        row.sort(key=lambda n: n.order)
        for a, b in itertools.pairwise(row):
            assert b.x - a.x >= (a.width + b.width) / 2 + NODE_GAP - 0.2
    assert all(n.x - n.width / 2 >= 0 and n.x + n.width / 2 <= layout.width for n in layout.nodes)
    assert all(n.y + n.height <= layout.height for n in layout.nodes)


def test_barycentre_sweeps_undo_a_crossing_the_input_order_makes() -> None:
    # Written in this order, c sits under a and d under b: a→d and b→c cross once.
    deps = {"a": [], "b": [], "c": ["b"], "d": ["a"]}
    layout = layout_dag(deps)
    nodes = {n.id: n for n in layout.nodes}
    assert layout.crossings == 0
    assert (nodes["a"].x < nodes["b"].x) == (nodes["d"].x < nodes["c"].x)


def test_crossings_are_reduced_on_a_shuffled_ladder() -> None:
    # Two ranks of 30; child i depends on parent i, the children listed in a shuffled
    # order: every crossing is avoidable.
    rng = random.Random(5)
    children = list(range(30))
    rng.shuffle(children)
    deps: dict[str, list[str]] = {f"p{i}": [] for i in range(30)}
    deps.update({f"c{i}": [f"p{i}"] for i in children})
    assert layout_dag(deps, sweeps=0).crossings > 100
    assert layout_dag(deps).crossings == 0


def test_long_edges_bend_through_the_ranks_they_cross() -> None:
    deps = {"a": [], "b": ["a"], "c": ["b"], "d": ["a", "c"]}
    layout = layout_dag(deps)
    [long_edge] = [e for e in layout.edges if (e.source, e.target) == ("a", "d")]
    assert len(long_edge.points) == 4  # a's bottom, a bend beside b and beside c, d's top
    nodes = {n.id: n for n in layout.nodes}
    for (_, y), task in zip(long_edge.points[1:3], ("b", "c"), strict=True):
        assert nodes[task].y <= y <= nodes[task].y + nodes[task].height


def test_siblings_with_the_same_parents_and_children_become_one_group() -> None:
    deps: dict[str, list[str]] = {"start": []}
    deps.update({f"shard{i:02}": ["start"] for i in range(20)})
    deps["odd"] = ["start"]  # same parent, no child: not a sibling of the shards
    deps["merge"] = [f"shard{i:02}" for i in range(20)]
    layout = layout_dag(deps, group_threshold=8)
    nodes = {n.id: n for n in layout.nodes}
    group = nodes[GROUP_PREFIX + "shard00"]
    assert group.is_group and group.members == tuple(f"shard{i:02}" for i in range(20))
    assert set(nodes) == {"start", "odd", "merge", GROUP_PREFIX + "shard00"}
    assert {(e.source, e.target) for e in layout.edges} == {
        ("start", GROUP_PREFIX + "shard00"),
        ("start", "odd"),
        (GROUP_PREFIX + "shard00", "merge"),
    }
    assert layout.node_of["shard07"] == GROUP_PREFIX + "shard00"
    assert layout.node_of["odd"] == "odd"


def test_a_group_below_the_threshold_or_expanded_is_drawn_task_by_task() -> None:
    deps: dict[str, list[str]] = {"start": []}
    deps.update({f"s{i}": ["start"] for i in range(5)})
    assert len(layout_dag(deps, group_threshold=8).nodes) == 6
    assert len(layout_dag(deps, group_threshold=5).nodes) == 2
    expanded = layout_dag(deps, group_threshold=5, expand=[GROUP_PREFIX + "s0"])
    assert {n.id for n in expanded.nodes} == set(deps)


def test_the_same_graph_always_gives_the_same_layout() -> None:
    deps = _random_dag(500, seed=11)
    assert layout_dag(deps) == layout_dag(dict(deps))


def test_ten_thousand_tasks_lay_out_in_about_a_second() -> None:
    deps = _random_dag(10_000, seed=1, window=200)
    # CPU time, not wall time: the machine is shared, and another process's work is not
    # ours. Measured at 0.7-1.0 s; an accidental quadratic step takes far longer.
    started = time.process_time()
    layout = layout_dag(deps)
    elapsed = time.process_time() - started
    assert len(layout.node_of) == 10_000
    assert elapsed < 4, f"{elapsed:.2f} s of CPU"


def test_a_ten_thousand_wide_fan_out_is_one_group() -> None:
    deps: dict[str, list[str]] = {"a": []}
    deps.update({f"x{i}": ["a"] for i in range(10_000)})
    deps["z"] = [f"x{i}" for i in range(10_000)]
    layout = layout_dag(deps)
    assert [n.id for n in layout.nodes] == ["a", GROUP_PREFIX + "x0", "z"]
