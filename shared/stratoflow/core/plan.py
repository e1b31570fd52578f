"""A workflow compiled for execution: resolved tasks and read-only dependency maps.

Built once per (workflow, version) and cached by the handlers: versions are immutable, so
the cache can never serve a stale definition (invariant 6).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from stratoflow.core.dag import topological_order
from stratoflow.core.model import ResolvedTask, TriggerRule, Workflow


@dataclass(frozen=True)
class Plan:
    """The engine's view of one workflow version."""

    workflow: Workflow
    version: int

    @property
    def workflow_id(self) -> str:
        return self.workflow.id

    @cached_property
    def tasks(self) -> Mapping[str, ResolvedTask]:
        return {t.id: t for t in self.workflow.resolved_tasks()}

    @cached_property
    def downstream(self) -> Mapping[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {tid: [] for tid in self.tasks}
        for task in self.tasks.values():
            for parent in task.depends:
                out[parent].append(task.id)
        return {tid: tuple(children) for tid, children in out.items()}

    @cached_property
    def leaves(self) -> frozenset[str]:
        return frozenset(tid for tid, children in self.downstream.items() if not children)

    @cached_property
    def roots(self) -> tuple[str, ...]:
        """Tasks that are ready when the run starts: no upstream, or trigger rule `always`."""
        return tuple(
            t.id
            for t in self.tasks.values()
            if not t.depends or t.trigger_rule is TriggerRule.ALWAYS
        )

    def foldable(self, child: str) -> bool:
        """Whether `child` is decided by its one parent's end alone (so the decision can be
        written with the parent's own settlement): a single parent, and not `always` (which
        starts with the run)."""
        task = self.tasks[child]
        return len(task.depends) == 1 and task.trigger_rule is not TriggerRule.ALWAYS

    @cached_property
    def may_end_run(self) -> frozenset[str]:
        """Tasks whose settlement can be the run's last: leaves, and tasks with a dependent
        that can be decided (and end) before all its parents have (several parents, or
        `always`). Any other task ends before its dependents are even decided."""
        return frozenset(
            tid
            for tid, children in self.downstream.items()
            if not children or not all(self.foldable(c) for c in children)
        )

    @cached_property
    def order(self) -> tuple[str, ...]:
        """Task ids in topological order (parents before children)."""
        return tuple(topological_order(list(self.tasks.values())))

    def upstream(self, task_id: str) -> tuple[str, ...]:
        return tuple(self.tasks[task_id].depends)

    def __len__(self) -> int:
        return len(self.tasks)
