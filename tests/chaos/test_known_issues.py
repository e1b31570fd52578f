"""What the chaos suite found (docs/reliability.md, "Found"), each reproduced
deterministically: the regression tests of the fixes, and (#1) the decision it questioned,
which is Airflow's and documented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stratoflow.core.model import Workflow
from stratoflow.local.runtime import LocalRuntime

from .engine import start_runtime, wait_all
from .faults import Chaos, RunFaults

STRANDED_DEADLINE = 8.0
"""Seconds for runs that take about one: a run still going after this is stranded."""


class _Run:
    """Enough of `engine.ChaosRun` for `wait_all`."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id


def _start(rt: LocalRuntime, spec: dict[str, Any], workdir: Path, run_id: str) -> None:
    version = rt.register(Workflow.model_validate(spec), "known-issue")
    rt.request_run(spec["id"], version, workdir=str(workdir), run_id=run_id)


def test_an_all_success_task_whose_first_parent_to_end_was_skipped_is_skipped(
    tmp_path: Path,
) -> None:
    spec = {
        "id": "skip-then-fail",
        "tasks": [
            {"id": "ok", "command": "true"},
            {"id": "skipped", "command": "true", "depends": ["ok"], "trigger_rule": "one_failed"},
            {"id": "fails", "command": "sleep 0.5; exit 1"},
            {"id": "sink", "command": "true", "depends": ["skipped", "fails"]},
        ],
    }
    rt = start_runtime(tmp_path / "home", emulator=False)
    try:
        _start(rt, spec, tmp_path, "skip-then-fail-run")
        run = rt.wait("skip-then-fail-run", timeout=30)
        assert rt.ports is not None
        tasks = rt.ports.runs.list_tasks(run.run_id)
    finally:
        rt.stop()
    assert tasks["skipped"].status.value == "skipped"
    assert tasks["fails"].status.value == "failed"
    # Decided at once, as in Airflow (docs/workflow-file.md): the skip came first. And as
    # in Airflow the run's outcome is its leaves': `sink`, skipped, is its only leaf.
    assert tasks["sink"].status.value == "skipped"
    assert run.status.value == "succeeded"


def test_a_capped_run_ends_when_its_completion_handler_dies_before_sending(
    tmp_path: Path,
) -> None:
    spec = {
        "id": "capped-kill",
        "concurrency": 1,
        "tasks": [
            {"id": "root", "command": "true"},
            {"id": "a", "command": "true", "depends": ["root"]},
            {"id": "b", "command": "true", "depends": ["root"]},
        ],
    }
    rt = start_runtime(tmp_path / "home", emulator=False)
    try:
        chaos = Chaos(embedded=True)
        chaos.install(rt)
        # Every send of the completion handler dies once, the first time it is tried.
        faults = RunFaults(seed=0, rates={"settle.kill": 1.0}, workdir=tmp_path)
        chaos.add("capped-kill-run", "capped-kill", faults)
        _start(rt, spec, tmp_path, "capped-kill-run")
        wait_all(rt, [_Run("capped-kill-run")], STRANDED_DEADLINE)
        assert rt.ports is not None
        run = rt.ports.runs.get_run("capped-kill-run")
    finally:
        rt.stop()
    assert faults.injected["settle.kill"] >= 1
    assert run is not None and run.finished_at, run
    assert run.active == 0


class _DispatcherDiesOnce:
    """The task queue as the dispatcher meets it when its first send dies with it (as a
    Lambda that times out after creating the run)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.died = False

    def send_tasks(self, messages: Any, delay_seconds: int = 0) -> None:
        if not self.died:
            self.died = True
            raise ConnectionError("the dispatcher died before sending the root tasks")
        self._inner.send_tasks(messages, delay_seconds)


def test_a_run_request_retried_after_the_dispatcher_died_starts_the_run(tmp_path: Path) -> None:
    spec = {"id": "retried-request", "tasks": [{"id": "only", "command": "true"}]}
    rt = start_runtime(tmp_path / "home", emulator=False)
    try:
        assert rt.ports is not None
        queue = _DispatcherDiesOnce(rt.ports.tasks)
        rt.ports.tasks = queue
        with pytest.raises(ConnectionError):
            _start(rt, spec, tmp_path, "retried-request-run")
        _start(rt, spec, tmp_path, "retried-request-run")  # the retry
        wait_all(rt, [_Run("retried-request-run")], STRANDED_DEADLINE)
        run = rt.ports.runs.get_run("retried-request-run")
    finally:
        rt.stop()
    assert queue.died
    assert run is not None and run.finished_at, run


def test_an_always_task_with_parents_under_a_cap_runs_once_and_frees_its_slot(
    tmp_path: Path,
) -> None:
    spec = {
        "id": "capped-always",
        "concurrency": 1,
        "tasks": [
            {"id": "parent", "command": "sleep 0.2", "priority": 1},
            {"id": "always", "command": "true", "depends": ["parent"], "trigger_rule": "always"},
            {"id": "after", "command": "true", "depends": ["always"]},
        ],
    }
    rt = start_runtime(tmp_path / "home", emulator=False)
    try:
        _start(rt, spec, tmp_path, "capped-always-run")
        wait_all(rt, [_Run("capped-always-run")], STRANDED_DEADLINE)
        assert rt.ports is not None
        run = rt.ports.runs.get_run("capped-always-run")
    finally:
        rt.stop()
    assert run is not None and run.finished_at, run
    assert run.active == 0
