"""Trigger rules, as Airflow defines them (airflow/ti_deps/deps/trigger_rule_dep.py)."""

from dataclasses import replace

import pytest

from stratoflow.core.model import TriggerRule as R
from stratoflow.core.rules import Decision as D
from stratoflow.core.rules import UpstreamCounts, decide, decided_only_by_last


def up(total: int, **kw: int) -> UpstreamCounts:
    return UpstreamCounts(total=total, **kw)


@pytest.mark.parametrize(
    ("rule", "counts", "expected"),
    [
        # all_success: runs when every parent succeeded; a failure marks it upstream_failed at
        # once, a skip skips it (skip propagation).
        (R.ALL_SUCCESS, up(2, succeeded=1), D.WAIT),
        (R.ALL_SUCCESS, up(2, succeeded=2), D.RUN),
        (R.ALL_SUCCESS, up(3, failed=1), D.UPSTREAM_FAILED),
        (R.ALL_SUCCESS, up(3, upstream_failed=1), D.UPSTREAM_FAILED),
        (R.ALL_SUCCESS, up(2, succeeded=1, skipped=1), D.SKIP),
        # all_failed: runs when every parent failed; any success or skip skips it.
        (R.ALL_FAILED, up(2, failed=1), D.WAIT),
        (R.ALL_FAILED, up(2, failed=1, upstream_failed=1), D.RUN),
        (R.ALL_FAILED, up(2, succeeded=1), D.SKIP),
        (R.ALL_FAILED, up(2, skipped=1), D.SKIP),
        # all_done: runs once every parent is final, whatever the outcome.
        (R.ALL_DONE, up(3, failed=1, skipped=1), D.WAIT),
        (R.ALL_DONE, up(3, failed=1, skipped=1, succeeded=1), D.RUN),
        # one_success fires early, as soon as one parent succeeded.
        (R.ONE_SUCCESS, up(5, succeeded=1), D.RUN),
        (R.ONE_SUCCESS, up(2, failed=1), D.WAIT),
        (R.ONE_SUCCESS, up(2, failed=1, upstream_failed=1), D.UPSTREAM_FAILED),
        (R.ONE_SUCCESS, up(2, skipped=2), D.SKIP),
        # one_failed fires early on a failure; skipped if all finished without one.
        (R.ONE_FAILED, up(5, failed=1), D.RUN),
        (R.ONE_FAILED, up(5, upstream_failed=1), D.RUN),
        (R.ONE_FAILED, up(2, succeeded=1), D.WAIT),
        (R.ONE_FAILED, up(2, succeeded=2), D.SKIP),
        # one_done: one success or failure fires it; all skipped/upstream_failed skips it.
        (R.ONE_DONE, up(4, failed=1), D.RUN),
        (R.ONE_DONE, up(4, succeeded=1), D.RUN),
        (R.ONE_DONE, up(2, skipped=1), D.WAIT),
        (R.ONE_DONE, up(2, skipped=1, upstream_failed=1), D.SKIP),
        # none_failed: no failure among finished parents; skips are fine.
        (R.NONE_FAILED, up(2, succeeded=1), D.WAIT),
        (R.NONE_FAILED, up(2, succeeded=1, skipped=1), D.RUN),
        (R.NONE_FAILED, up(2, skipped=2), D.RUN),
        (R.NONE_FAILED, up(3, failed=1), D.UPSTREAM_FAILED),
        # none_skipped: no skip among the parents; failures are fine.
        (R.NONE_SKIPPED, up(2, failed=2), D.RUN),
        (R.NONE_SKIPPED, up(2, failed=1), D.WAIT),
        (R.NONE_SKIPPED, up(3, skipped=1), D.SKIP),
        # always: runs at once, dependencies are only for ordering display.
        (R.ALWAYS, up(3), D.RUN),
    ],
)
def test_trigger_rule_decision(rule: R, counts: UpstreamCounts, expected: D) -> None:
    assert decide(rule, counts) is expected


@pytest.mark.parametrize("rule", list(R))
def test_a_task_without_upstream_runs_whatever_its_rule(rule: R) -> None:
    assert decide(rule, up(0)) is D.RUN


@pytest.mark.parametrize("rule", [r for r in R if r is not R.ALWAYS])
def test_decisions_never_revert_to_wait_as_parents_finish(rule: R) -> None:
    # Monotonicity is what lets exactly one parent's update decide a child: once a rule is
    # decidable it stays decidable whatever the remaining parents do.
    import itertools

    outcomes = ["succeeded", "failed", "upstream_failed", "skipped"]
    for seq in itertools.product(outcomes, repeat=3):
        decided = False
        counts: dict[str, int] = {}
        for outcome in seq:
            counts[outcome] = counts.get(outcome, 0) + 1
            d = decide(rule, up(3, **counts))
            if decided:
                assert d is not D.WAIT, (rule, seq)
            decided = decided or d is not D.WAIT
        assert decided, (rule, seq)


_OUTCOMES = ("succeeded", "failed", "upstream_failed", "skipped", "cancelled")


def test_only_a_success_under_all_success_decides_a_task_only_as_its_last_parent() -> None:
    found = {
        (rule, status) for rule in R for status in _OUTCOMES if decided_only_by_last(rule, status)
    }
    assert found == {(R.ALL_SUCCESS, "succeeded")}


@pytest.mark.parametrize(
    ("rule", "status", "before"),
    [
        # Each: a parent that is not the last to end this way turns a waiting task decidable.
        (R.ALL_DONE, "succeeded", up(2, failed=1)),
        (R.ALL_SUCCESS, "failed", up(2)),
        (R.ALL_SUCCESS, "skipped", up(2)),
        (R.ONE_SUCCESS, "succeeded", up(3)),
        (R.NONE_FAILED, "succeeded", up(2, skipped=1)),
    ],
)
def test_an_outcome_that_decides_early_is_not_guarded(
    rule: R, status: str, before: UpstreamCounts
) -> None:
    after = replace(before, **{status: getattr(before, status) + 1})
    assert decide(rule, before) is D.WAIT
    assert decide(rule, after) is not D.WAIT
    assert getattr(after, status) < after.total
    assert not decided_only_by_last(rule, status)


def test_a_rule_decided_before_any_parent_ends_is_not_guarded() -> None:
    assert decide(R.ALWAYS, up(2)) is D.RUN
    assert not any(decided_only_by_last(R.ALWAYS, status) for status in _OUTCOMES)


def test_an_unknown_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="not an upstream status"):
        decided_only_by_last(R.ALL_SUCCESS, "running")
