"""The local engine's pumps survive transient failures: a receive or a delete that raises
(a database locked longer than its busy timeout, say) is logged and tried again, and the
run still ends as it should."""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stratoflow.embedded.queues import EmbeddedSqs
from stratoflow.local.runtime import LocalRuntime
from tests.support import run_workflow, statuses


class Flaky:
    """Stands for a method of a class: its first `failures` calls on each queue raise, the
    rest pass through."""

    def __init__(self, method: Callable[..., Any], failures: int) -> None:
        self._method = method
        self._failures = failures
        self._lock = threading.Lock()
        self.raised: Counter[str] = Counter()

    def __get__(self, instance: Any, owner: type | None = None) -> Callable[..., Any]:
        return functools.partial(self.call, instance)

    def call(self, instance: Any, *args: Any, QueueUrl: str, **kwargs: Any) -> Any:
        with self._lock:
            fail = self.raised[QueueUrl] < self._failures
            if fail:
                self.raised[QueueUrl] += 1
        if fail:
            raise sqlite3.OperationalError("database is locked")
        return self._method(instance, *args, QueueUrl=QueueUrl, **kwargs)


def test_pumps_and_the_deleter_survive_failing_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = LocalRuntime(state_dir=tmp_path / "home", workers=2, pump=True)
    # The failures start before the pumps do: their very first receives raise.
    receive = Flaky(EmbeddedSqs.receive_message, failures=3)
    delete = Flaky(EmbeddedSqs.delete_message_batch, failures=1)
    monkeypatch.setattr(EmbeddedSqs, "receive_message", receive)
    monkeypatch.setattr(EmbeddedSqs, "delete_message_batch", delete)
    rt.start()
    try:
        assert rt.settings is not None
        doc = run_workflow(
            rt,
            {
                "tasks": [
                    {"id": "a", "command": "true"},
                    {"id": "b", "command": "true", "depends": ["a"]},
                    {"id": "c", "command": "true", "depends": ["b"]},
                ]
            },
            tmp_path,
            timeout=60,
        )
        # every pump met its failures and went on
        assert receive.raised[rt.settings.task_queue_url] == 3
        assert receive.raised[rt.settings.completion_queue_url] == 3
    finally:
        rt.stop()  # the deleter sends what it still holds
    # each queue's first delete failed, and the deleter went on to the next ones
    assert sorted(delete.raised.values()) == [1, 1]
    assert doc["status"] == "succeeded"
    assert statuses(doc) == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}
    assert all(t["attempts"] == 1 for t in doc["tasks"].values())


def test_local_ups_loop_survives_a_failing_step(tmp_path: Path) -> None:
    from stratoflow.local.server import FolderServer

    rt = LocalRuntime(state_dir=tmp_path / "home", pump=False).start()
    said: list[str] = []
    server = FolderServer(tmp_path, rt, say=said.append, api_port=None)
    calls = 0

    def scan() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise sqlite3.OperationalError("database is locked")
        server.stop()  # the second turn came: the loop went on

    server.scan = scan  # type: ignore[method-assign]
    try:
        server.serve()
    finally:
        rt.stop()
    assert calls == 2
    assert said == [
        "warning: looking at the folder failed (OperationalError: database is locked); "
        "trying again",
        "looking at the folder works again (after 1 failure(s))",
    ]
