"""`stratoflow run` watches its own run as `local up`'s tick watches every run: it ends the
run at its deadline with no attempt running, and mends it when a step was lost."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from stratoflow.cli import running
from stratoflow.core.model import Workflow
from stratoflow.core.records import TaskMessage
from stratoflow.local.runtime import LocalRuntime
from stratoflow.services import mend
from tests.support import cli


def test_a_run_times_out_while_its_only_task_waits_for_a_retry(tmp_path: Path) -> None:
    # GIVEN a workflow with a 2 s run timeout whose task fails and is retried after 60 s
    (tmp_path / "wf.yaml").write_text(
        "id: deadline-in-retry\n"
        "timeout: 2s\n"
        "tasks:\n"
        "  - id: fails\n"
        "    command: exit 1\n"
        "    retries: 3\n"
        "    retry_delay: 60s\n"
    )
    # WHEN it is run, no attempt running once the first one failed
    began = time.monotonic()
    result = cli(tmp_path / "home", "run", str(tmp_path / "wf.yaml"), "--json", timeout=60)
    took = time.monotonic() - began
    # THEN the run fails at its deadline, not when the retry would have come
    doc = json.loads(result.stdout)
    assert result.returncode == 1, result.stderr
    assert (doc["status"], doc["reason"]) == ("failed", "run timed out after 2s")
    assert doc["tasks"]["fails"]["status"] == "cancelled"
    assert took < 30, took


class _LosesFirstSendOf:
    """The task queue, losing the first message of one task (the store says it is queued,
    and nothing will ever deliver it: a step lost, as with a report dead-lettered after
    its handler had decided the task)."""

    def __init__(self, inner: Any, task_id: str) -> None:
        self._inner, self._task_id = inner, task_id
        self.lost = 0
        self.sent: list[TaskMessage] = []
        self._lock = threading.Lock()

    def send_tasks(self, messages: Iterable[TaskMessage], delay_seconds: int = 0) -> None:
        batch = list(messages)
        with self._lock:
            kept = []
            for m in batch:
                if m.task_id == self._task_id and not self.lost:
                    self.lost += 1
                    continue
                kept.append(m)
            self.sent += kept
        self._inner.send_tasks(kept, delay_seconds)


def test_a_run_whose_next_task_was_lost_is_mended_by_its_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an engine whose task queue loses the first message of `b`, in a chain a → b, and
    # a quiet time of half a second
    monkeypatch.setattr(running, "WATCH_SECONDS", 0.1)
    monkeypatch.setattr(mend, "QUIET_SECONDS", 0.5)
    rt = LocalRuntime(state_dir=tmp_path / "home", workers=2).start()
    try:
        assert rt.ports is not None
        queue = _LosesFirstSendOf(rt.ports.tasks, "b")
        rt.ports.tasks = queue
        chain = Workflow.model_validate(
            {
                "id": "lost-step",
                "tasks": [
                    {"id": "a", "command": "true"},
                    {"id": "b", "command": "true", "depends": ["a"]},
                ],
            }
        )
        version = rt.register(chain, "test")
        run_id = rt.request_run("lost-step", version, workdir=str(tmp_path))
        # WHEN `stratoflow run`'s wait watches it
        waiter = threading.Thread(target=running.wait_watching, args=(rt, run_id), daemon=True)
        waiter.start()
        waiter.join(timeout=30)
        # THEN the wait ended with the run: b was sent again, and ran once
        assert not waiter.is_alive()
        run = rt.ports.runs.get_run(run_id)
        tasks = rt.ports.runs.list_tasks(run_id)
    finally:
        rt.stop()
    assert queue.lost == 1
    assert run is not None and run.status.value == "succeeded"
    assert [m.attempt for m in queue.sent if m.task_id == "b"] == [1]
    assert tasks["b"].attempt == 1
