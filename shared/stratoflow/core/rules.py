"""Trigger rules: given how a task's upstream tasks ended so far, may it run yet?

The semantics are Airflow's (airflow/ti_deps/deps/trigger_rule_dep.py), including skip
propagation and the early firing of the one_* rules, so users' knowledge carries over.
The function is pure and monotone in the counts, which is what lets the engine decide
each task exactly once from counters updated by its parents.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cache
from itertools import product

from stratoflow.core.model import TriggerRule


class Decision(StrEnum):
    """What to do with a task whose upstream state changed."""

    WAIT = "wait"
    RUN = "run"
    SKIP = "skip"
    UPSTREAM_FAILED = "upstream_failed"


@dataclass(frozen=True)
class UpstreamCounts:
    """How many of a task's upstream tasks ended in each final state."""

    total: int
    succeeded: int = 0
    failed: int = 0
    upstream_failed: int = 0
    skipped: int = 0
    cancelled: int = 0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.upstream_failed + self.skipped + self.cancelled

    @property
    def all_done(self) -> bool:
        return self.done >= self.total


def decide(rule: TriggerRule, up: UpstreamCounts) -> Decision:
    """The decision for a task with trigger rule `rule`, given its upstream counts."""
    if up.total == 0 or rule is TriggerRule.ALWAYS:
        return Decision.RUN
    failures = up.failed + up.upstream_failed
    # A cancelled parent behaves like a failed one for the rules that guard against failure.
    bad = failures + up.cancelled
    match rule:
        case TriggerRule.ALL_SUCCESS:
            if bad:
                return Decision.UPSTREAM_FAILED
            if up.skipped:
                return Decision.SKIP
            return Decision.RUN if up.succeeded == up.total else Decision.WAIT
        case TriggerRule.ALL_FAILED:
            if up.succeeded or up.skipped:
                return Decision.SKIP
            return Decision.RUN if up.all_done else Decision.WAIT
        case TriggerRule.ALL_DONE:
            return Decision.RUN if up.all_done else Decision.WAIT
        case TriggerRule.ONE_SUCCESS:
            if up.succeeded:
                return Decision.RUN
            if not up.all_done:
                return Decision.WAIT
            return Decision.SKIP if up.skipped == up.total else Decision.UPSTREAM_FAILED
        case TriggerRule.ONE_FAILED:
            if failures:
                return Decision.RUN
            return Decision.SKIP if up.all_done else Decision.WAIT
        case TriggerRule.ONE_DONE:
            if up.succeeded or up.failed:
                return Decision.RUN
            return Decision.SKIP if up.all_done else Decision.WAIT
        case TriggerRule.NONE_FAILED:
            if bad:
                return Decision.UPSTREAM_FAILED
            return Decision.RUN if up.all_done else Decision.WAIT
        case TriggerRule.NONE_SKIPPED:
            if up.skipped:
                return Decision.SKIP
            return Decision.RUN if up.all_done else Decision.WAIT
    raise ValueError(f"unknown trigger rule {rule!r}")  # pragma: no cover


@cache
def decided_only_by_last(rule: TriggerRule, status: str) -> bool:
    """Whether a parent ending in `status` can decide a task under `rule` only by being the
    last of its parents to end in that status (all_success and a success, say).

    Then a parent whose count leaves fewer than all parents at `status` cannot have made
    the task decidable, and the engine need not read the task back. Found by trying every
    way the other parents may have ended, so it holds for whatever `decide` says.
    """
    fields = ("succeeded", "failed", "upstream_failed", "skipped", "cancelled")
    if status not in fields:
        raise ValueError(f"not an upstream status: {status!r}")
    for total in range(2, 5):
        if decide(rule, UpstreamCounts(total)) is not Decision.WAIT:
            return False  # decided before any parent ends: the first one must look
        for counts in product(range(total), repeat=len(fields)):
            if sum(counts) >= total:
                continue  # this parent is one still to end
            before = UpstreamCounts(total, *counts)
            after = replace(before, **{status: getattr(before, status) + 1})
            if decide(rule, before) is not Decision.WAIT:
                continue  # decided already, by the parent that made it so (and looked)
            if decide(rule, after) is not Decision.WAIT and getattr(after, status) < total:
                return False
    return True
