"""A layered (Sugiyama-style) drawing of a workflow's DAG: where each task goes on a page.

Pure and deterministic: the same graph always gives the same coordinates, so a version's
layout can be computed once and cached (versions are immutable). The steps:

1. **Grouping.** Siblings with the same parents and the same children are drawn as one
   node once there are at least `group_threshold` of them: a 10,000-task fan-out is one
   box with counts, not 10,000 boxes. `expand` names groups to draw task by task.
2. **Ranks** by longest path from the roots, so every edge points down.
3. **Dummy nodes** on edges that span several ranks, so long edges are routed between
   boxes and take part in crossing reduction.
4. **Crossing reduction**: barycentre sweeps, down then up, keeping the order with the
   fewest crossings (counted exactly, per pair of ranks, with a Fenwick tree).
5. **Coordinates**: each rank is pulled towards the mean x of its neighbours, as close as
   the separation between boxes allows (an isotonic regression: pool adjacent violators).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

NODE_WIDTH = 168.0
NODE_HEIGHT = 40.0
NODE_GAP = 24.0
DUMMY_GAP = 12.0
RANK_GAP = 72.0
MARGIN = 24.0
GROUP_THRESHOLD = 8
MAX_DUMMIES = 20_000
"""Bends for long edges, at most: past it the longest edges are drawn straight (a random
10,000-task graph can need 300,000, and the layout would take seconds)."""
GROUP_PREFIX = "group:"
"""A group's node id is this prefix and its first member's id: task ids cannot contain ':'."""


@dataclass(frozen=True)
class LayoutNode:
    """A box: one task, or a group of siblings (`members`, in the workflow's order)."""

    id: str
    rank: int
    order: int
    x: float
    """The box's centre."""
    y: float
    """The box's top."""
    width: float
    height: float
    members: tuple[str, ...] = ()

    @property
    def is_group(self) -> bool:
        return bool(self.members)


@dataclass(frozen=True)
class LayoutEdge:
    """From the bottom of `source` to the top of `target`, through `points` (x, y)."""

    source: str
    target: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Layout:
    nodes: tuple[LayoutNode, ...]
    edges: tuple[LayoutEdge, ...]
    width: float
    height: float
    crossings: int
    """Edge crossings between adjacent ranks left in the chosen order (dummies included)."""
    node_of: Mapping[str, str] = field(default_factory=dict)
    """Every task id → the id of the node that draws it (itself, or its group)."""


def layout_dag(
    depends: Mapping[str, Sequence[str]],
    *,
    group_threshold: int = GROUP_THRESHOLD,
    expand: Iterable[str] = (),
    sweeps: int | None = None,
) -> Layout:
    """Lay out the DAG whose task ids are `depends`'s keys (in the order given) and whose
    edges go from each parent in `depends[task]` to `task`. The graph must be acyclic
    (the loader checks that). `group_threshold` below 2 turns grouping off."""
    nodes, parents, node_of, members = _group(depends, group_threshold, set(expand))
    rank = _ranks(nodes, parents)
    layers, up, down, real = _layers_with_dummies(nodes, parents, rank)
    if sweeps is None:
        # Each sweep costs about the same; big graphs get fewer, so that 10,000 tasks lay
        # out in about a second.
        size = sum(len(layer) for layer in layers)
        sweeps = 8 if size <= 2_000 else 4 if size <= 20_000 else 2
    crossings = _reduce_crossings(layers, up, down, sweeps)
    xs = _coordinates(layers, up, down, real)
    return _result(layers, up, down, real, xs, rank, members, node_of, crossings)


def _group(
    depends: Mapping[str, Sequence[str]], threshold: int, expand: set[str]
) -> tuple[list[str], dict[str, list[str]], dict[str, str], dict[str, tuple[str, ...]]]:
    """The nodes to draw (tasks and groups, in the workflow's order), each node's parent
    nodes, and the task → node map."""
    children: dict[str, list[str]] = {t: [] for t in depends}
    for task, ps in depends.items():
        for p in ps:
            children[p].append(task)
    node_of = {t: t for t in depends}
    members: dict[str, tuple[str, ...]] = {}
    if threshold >= 2:
        by_key: dict[tuple[frozenset[str], frozenset[str]], list[str]] = {}
        for task, ps in depends.items():
            by_key.setdefault((frozenset(ps), frozenset(children[task])), []).append(task)
        for siblings in by_key.values():
            gid = GROUP_PREFIX + siblings[0]
            if len(siblings) >= threshold and gid not in expand:
                members[gid] = tuple(siblings)
                for t in siblings:
                    node_of[t] = gid
    nodes: list[str] = []
    seen: set[str] = set()
    for t in depends:
        n = node_of[t]
        if n not in seen:
            seen.add(n)
            nodes.append(n)
    parents: dict[str, list[str]] = {n: [] for n in nodes}
    for task, ps in depends.items():
        n = node_of[task]
        if n in members and task != members[n][0]:
            continue  # a group's members share their parents: the first one speaks for all
        mine = parents[n]
        known = set(mine)
        for p in ps:
            pn = node_of[p]
            if pn not in known:
                known.add(pn)
                mine.append(pn)
    return nodes, parents, node_of, members


def _ranks(nodes: list[str], parents: dict[str, list[str]]) -> dict[str, int]:
    """Longest path from a root (Kahn's order, so deep chains need no recursion)."""
    children: dict[str, list[str]] = {n: [] for n in nodes}
    missing = {n: len(parents[n]) for n in nodes}
    for n in nodes:
        for p in parents[n]:
            children[p].append(n)
    rank = dict.fromkeys(nodes, 0)
    ready = [n for n in nodes if missing[n] == 0]
    ready.reverse()
    while ready:
        n = ready.pop()
        r = rank[n] + 1
        for c in children[n]:
            if rank[c] < r:
                rank[c] = r
            missing[c] -= 1
            if missing[c] == 0:
                ready.append(c)
    if any(missing.values()):
        raise ValueError("the graph has a cycle")
    return rank


Ref = int
"""A node (or dummy) in the layered graph: an index into `real`."""


def _layers_with_dummies(
    nodes: list[str], parents: dict[str, list[str]], rank: dict[str, int]
) -> tuple[list[list[Ref]], list[list[Ref]], list[list[Ref]], list[str | None]]:
    """The ranks as lists of refs, and each ref's neighbours one rank up and down.
    `real[ref]` is the node's id, or None for a dummy."""
    real: list[str | None] = list(nodes)
    index = {n: i for i, n in enumerate(nodes)}
    up: list[list[Ref]] = [[] for _ in nodes]
    down: list[list[Ref]] = [[] for _ in nodes]
    depth = max(rank.values(), default=-1) + 1
    layers: list[list[Ref]] = [[] for _ in range(depth)]
    for n in nodes:
        layers[rank[n]].append(index[n])
    longest = _longest_bent_span(nodes, parents, rank)
    for n in nodes:
        child = index[n]
        for p in parents[n]:
            prev = index[p]
            span = rank[n] - rank[p]
            for r in range(rank[p] + 1, rank[n]) if span <= longest else ():
                dummy = len(real)
                real.append(None)
                up.append([prev])
                down.append([])
                down[prev].append(dummy)
                layers[r].append(dummy)
                prev = dummy
            down[prev].append(child)
            up[child].append(prev)
    return layers, up, down, real


def _longest_bent_span(
    nodes: list[str], parents: dict[str, list[str]], rank: dict[str, int]
) -> int:
    """The longest edge span that still gets dummy nodes within `MAX_DUMMIES`."""
    spans = sorted(rank[n] - rank[p] for n in nodes for p in parents[n])
    used = 0
    longest = 1
    for span in spans:
        used += span - 1
        if used > MAX_DUMMIES:
            break
        longest = span
    return longest


def _reduce_crossings(
    layers: list[list[Ref]], up: list[list[Ref]], down: list[list[Ref]], sweeps: int
) -> int:
    """Reorder `layers` in place by barycentre sweeps; returns the crossings left."""
    pos = [0] * len(up)
    level = [0] * len(up)
    for r, layer in enumerate(layers):
        for i, ref in enumerate(layer):
            pos[ref] = i
            level[ref] = r
    # Edges drawn straight across ranks (past MAX_DUMMIES) steer the sweeps, but only
    # edges between adjacent ranks are counted.
    adjacent = [[c for c in down[ref] if level[c] == level[ref] + 1] for ref in range(len(up))]
    best = [list(layer) for layer in layers]
    best_crossings = _crossings(layers, adjacent, pos)
    for sweep in range(sweeps):
        downward = sweep % 2 == 0
        ranks = range(1, len(layers)) if downward else range(len(layers) - 2, -1, -1)
        neighbours = up if downward else down
        for r in ranks:
            layer = layers[r]

            def barycentre(ref: Ref, near: list[list[Ref]] = neighbours) -> float:
                ns = near[ref]
                if not ns:
                    return float(pos[ref])  # unconnected this way: stays where it is
                return sum(pos[n] for n in ns) / len(ns)

            layer.sort(key=barycentre)  # stable: ties keep their order
            for i, ref in enumerate(layer):
                pos[ref] = i
        found = _crossings(layers, adjacent, pos)
        if found < best_crossings:
            best_crossings = found
            best = [list(layer) for layer in layers]
        if found == 0:
            break
    for r, layer in enumerate(best):
        layers[r] = layer
    return best_crossings


def _crossings(layers: list[list[Ref]], down: list[list[Ref]], pos: list[int]) -> int:
    """Exact crossings between each pair of adjacent ranks (Barth, Jünger and Mutzel's
    bilayer count: edges sorted by upper end, inversions of their lower ends)."""
    total = 0
    for r in range(len(layers) - 1):
        lower_size = len(layers[r + 1])
        if lower_size < 2:
            continue
        ends: list[int] = []
        for ref in layers[r]:
            ends.extend(sorted(pos[c] for c in down[ref]))
        tree = [0] * (lower_size + 1)
        for seen, end in enumerate(ends):
            # inversions: ends seen so far that lie strictly right of this one
            i = end + 1
            at_or_left = 0
            while i > 0:
                at_or_left += tree[i]
                i -= i & -i
            total += seen - at_or_left
            i = end + 1
            while i <= lower_size:
                tree[i] += 1
                i += i & -i
    return total


def _coordinates(
    layers: list[list[Ref]],
    up: list[list[Ref]],
    down: list[list[Ref]],
    real: list[str | None],
) -> list[float]:
    """x of each ref's centre: packed, then pulled towards its neighbours rank by rank."""
    xs = [0.0] * len(real)
    widths = [NODE_WIDTH if name is not None else 0.0 for name in real]
    gaps: list[list[float]] = []
    for layer in layers:
        row: list[float] = []
        for a, b in itertools.pairwise(layer):
            gap = NODE_GAP if real[a] is not None and real[b] is not None else DUMMY_GAP
            row.append((widths[a] + widths[b]) / 2 + gap)
        gaps.append(row)
        x = 0.0
        for i, ref in enumerate(layer):
            if i:
                x += row[i - 1]
            xs[ref] = x
    # centre every rank on the widest one before pulling
    spans = [xs[layer[-1]] - xs[layer[0]] if layer else 0.0 for layer in layers]
    widest = max(spans, default=0.0)
    for layer, span in zip(layers, spans, strict=True):
        shift = (widest - span) / 2
        for ref in layer:
            xs[ref] += shift
    for sweep in range(4):
        downward = sweep % 2 == 0
        ranks = range(1, len(layers)) if downward else range(len(layers) - 2, -1, -1)
        near = up if downward else down
        for r in ranks:
            layer = layers[r]
            wanted = []
            for ref in layer:
                ns = near[ref]
                wanted.append(sum(xs[n] for n in ns) / len(ns) if ns else xs[ref])
            for ref, x in zip(layer, _closest_ordered(wanted, gaps[r]), strict=True):
                xs[ref] = x
    left = min((xs[layer[0]] - widths[layer[0]] / 2 for layer in layers if layer), default=0.0)
    return [x - left + MARGIN for x in xs]


def _closest_ordered(wanted: list[float], gaps: list[float]) -> list[float]:
    """The positions nearest to `wanted` (least squares) with position i+1 at least
    gaps[i] right of position i: pool adjacent violators on the gap-shifted targets."""
    offsets = [0.0]
    for g in gaps:
        offsets.append(offsets[-1] + g)
    blocks: list[list[float]] = []  # [sum, count]
    for w, off in zip(wanted, offsets, strict=True):
        blocks.append([w - off, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    out: list[float] = []
    for s, c in blocks:
        out.extend([s / c] * int(c))
    return [y + off for y, off in zip(out, offsets, strict=True)]


def _result(
    layers: list[list[Ref]],
    up: list[list[Ref]],
    down: list[list[Ref]],
    real: list[str | None],
    xs: list[float],
    rank: dict[str, int],
    members: dict[str, tuple[str, ...]],
    node_of: dict[str, str],
    crossings: int,
) -> Layout:
    ys = [0.0] * len(real)
    order = [0] * len(real)
    for r, layer in enumerate(layers):
        for i, ref in enumerate(layer):
            ys[ref] = MARGIN + r * (NODE_HEIGHT + RANK_GAP)
            order[ref] = i
    nodes: list[LayoutNode] = []
    for layer in layers:
        for ref in layer:
            name = real[ref]
            if name is not None:
                nodes.append(
                    LayoutNode(
                        id=name,
                        rank=rank[name],
                        order=order[ref],
                        x=round(xs[ref], 1),
                        y=ys[ref],
                        width=NODE_WIDTH,
                        height=NODE_HEIGHT,
                        members=members.get(name, ()),
                    )
                )
    edges: list[LayoutEdge] = []
    for ref, name in enumerate(real):
        if name is None:
            continue
        for first in down[ref]:
            points = [(round(xs[ref], 1), ys[ref] + NODE_HEIGHT)]
            nxt = first
            while real[nxt] is None:  # a dummy: the edge bends through it
                points.append((round(xs[nxt], 1), ys[nxt] + NODE_HEIGHT / 2))
                nxt = down[nxt][0]
            points.append((round(xs[nxt], 1), ys[nxt]))
            target = real[nxt]
            assert target is not None
            edges.append(LayoutEdge(name, target, tuple(points)))
    edges.sort(key=lambda e: (e.source, e.target))
    width = max((x + NODE_WIDTH / 2 for x in xs), default=0.0) + MARGIN
    height = MARGIN * 2 + len(layers) * (NODE_HEIGHT + RANK_GAP) - RANK_GAP
    return Layout(
        nodes=tuple(nodes),
        edges=tuple(edges),
        width=round(width, 1),
        height=max(height, 0.0),
        crossings=crossings,
        node_of=node_of,
    )
