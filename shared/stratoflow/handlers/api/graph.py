"""A version's routes, for the web console: its graph (where each task is drawn) and its
definition (to compare two versions).

The layout (stratoflow.core.layout) is computed once per version and kept in the process:
a version never changes (invariant 6), so a cached layout is never stale. A 10,000-task
version takes about a second the first time and nothing after.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from pydantic import BaseModel, Field

from stratoflow.core.layout import GROUP_PREFIX, GROUP_THRESHOLD, Layout, layout_dag
from stratoflow.core.plan import Plan
from stratoflow.handlers.api import wiring
from stratoflow.handlers.api.schemas import WorkflowId

CACHED_LAYOUTS = 32

router = APIGatewayRouter()


class GraphNode(BaseModel):
    id: str = Field(description=f"a task id, or `{GROUP_PREFIX}<first member>` for a group")
    rank: int = Field(description="the layer, 0 at the top; every edge goes to a later one")
    order: int = Field(description="left to right within the rank")
    x: float = Field(description="the box's centre")
    y: float = Field(description="the box's top")
    width: float
    height: float
    group: bool = Field(description="siblings with the same parents and children, drawn once")
    members: list[str] = Field(description="a group's tasks, in the workflow's order")


class GraphEdge(BaseModel):
    source: str
    target: str
    points: list[tuple[float, float]] = Field(
        description="from the source's bottom to the target's top, with the bends between"
    )


class VersionDocument(BaseModel):
    workflow_id: str
    version: int
    definition: dict[str, Any] = Field(description="the version's definition, as registered")


class GraphDocument(BaseModel):
    workflow_id: str
    version: int
    width: float
    height: float
    tasks: int = Field(description="tasks in the version")
    group_threshold: int = Field(description="siblings grouped from this many on")
    nodes: list[GraphNode]
    edges: list[GraphEdge]


_cache: OrderedDict[tuple[str, int, tuple[str, ...]], tuple[Plan, GraphDocument]] = OrderedDict()
_lock = threading.Lock()


def _document(plan: Plan, layout: Layout) -> GraphDocument:
    return GraphDocument(
        workflow_id=plan.workflow_id,
        version=plan.version,
        width=layout.width,
        height=layout.height,
        tasks=len(plan),
        group_threshold=GROUP_THRESHOLD,
        nodes=[
            GraphNode(
                id=n.id,
                rank=n.rank,
                order=n.order,
                x=n.x,
                y=n.y,
                width=n.width,
                height=n.height,
                group=n.is_group,
                members=list(n.members),
            )
            for n in layout.nodes
        ],
        edges=[
            GraphEdge(source=e.source, target=e.target, points=list(e.points)) for e in layout.edges
        ],
    )


def version_graph(workflow_id: str, version: int, expand: tuple[str, ...] = ()) -> GraphDocument:
    """The laid-out graph of one version; raises LookupError (a 404) for an unknown one."""
    plan = wiring.ports().definitions.get_plan(workflow_id, version)
    key = (workflow_id, version, expand)
    with _lock:
        hit = _cache.get(key)
        # The store caches its plans too: another plan object is another store (a test's
        # other home), whose version of this number may differ.
        if hit is not None and hit[0] is plan:
            _cache.move_to_end(key)
            return hit[1]
    doc = _document(
        plan, layout_dag({tid: t.depends for tid, t in plan.tasks.items()}, expand=expand)
    )
    with _lock:
        _cache[key] = (plan, doc)
        while len(_cache) > CACHED_LAYOUTS:
            _cache.popitem(last=False)
    return doc


@router.get(
    "/workflows/<workflow_id>/versions/<version>/graph",
    tags=["workflows"],
    summary="A version's DAG, laid out in layers: boxes and edges with coordinates",
    description="Siblings with the same parents and children are one group node from "
    f"{GROUP_THRESHOLD} on; `expand` lists groups to draw task by task.",
)
def get_graph(
    workflow_id: WorkflowId,
    version: Annotated[int, Path(ge=1, le=1_000_000_000, description="a version number")],
    expand: Annotated[
        str | None,
        Query(
            max_length=4000,
            description=f"comma-separated group ids (`{GROUP_PREFIX}<task>`) to draw expanded",
        ),
    ] = None,
) -> GraphDocument:
    groups = tuple(sorted({g for g in (expand or "").split(",") if g}))
    return version_graph(workflow_id, version, groups)


@router.get(
    "/workflows/<workflow_id>/versions/<version>",
    tags=["workflows"],
    summary="A version's definition (any version, not only the active one)",
)
def get_version(
    workflow_id: WorkflowId,
    version: Annotated[int, Path(ge=1, le=1_000_000_000, description="a version number")],
) -> VersionDocument:
    plan = wiring.ports().definitions.get_plan(workflow_id, version)
    return VersionDocument(
        workflow_id=workflow_id,
        version=version,
        definition=plan.workflow.model_dump(mode="json", by_alias=True, exclude_unset=True),
    )
