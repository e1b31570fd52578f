"""What the embedded engine recorded is there for the next engine on the same home: versions
and pins, paused flags, schedule slots (missed ones follow `catchup`), queued and delayed
messages. Two engines in turn on one temporary home, each with an injected clock."""

from __future__ import annotations

from pathlib import Path

from stratoflow import services
from stratoflow.core.model import Workflow
from stratoflow.local.runtime import LocalRuntime
from tests.functions.test_schedules import FakeClock, utc


def _engine(home: Path, clock: FakeClock) -> LocalRuntime:
    rt = LocalRuntime(state_dir=home, pump=False).start()
    assert rt.ports is not None
    rt.ports.clock = clock
    return rt


def _pending(rt: LocalRuntime, url: str) -> dict[str, str]:
    assert rt.clients is not None
    return rt.clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def test_a_restarted_engine_has_every_record_and_catches_up_missed_slots(tmp_path: Path) -> None:
    home = tmp_path / "home"
    clock = FakeClock(utc(2026, 3, 7, 10, 30))
    hourly = Workflow.model_validate(
        {
            "id": "hourly",
            "schedule": "@hourly",
            "catchup": True,
            "max_active_runs": 5,
            "tasks": [{"id": "a", "command": "true"}],
        }
    )
    paused = Workflow.model_validate(
        {"id": "paused", "schedule": "@hourly", "tasks": [{"id": "a", "command": "true"}]}
    )
    # GIVEN an engine that registered two versions, pinned a run to the first, paused a
    # workflow, queued a task and delayed another, and was then stopped
    first = _engine(home, clock)
    try:
        assert first.ports is not None and first.settings is not None
        v1 = first.register(hourly, "v1")
        pinned, _ = services.start_run(first.ports, first.ports.definitions.get_plan("hourly", v1))
        v2 = first.register(hourly.model_copy(update={"description": "v2"}), "v2")
        first.register(paused, "p")
        assert first.ports.definitions.set_paused("paused", True)
        assert first.clients is not None
        first.clients.sqs.send_message(
            QueueUrl=first.settings.task_queue_url, MessageBody="later", DelaySeconds=900
        )
        queued_before = _pending(first, first.settings.task_queue_url)
    finally:
        first.stop()

    # WHEN a new engine starts on the same home three hours later
    clock.set(utc(2026, 3, 7, 13, 30))
    second = _engine(home, clock)
    try:
        assert second.ports is not None and second.settings is not None
        defs = second.ports.definitions
        # THEN it has both versions, the run's pin, the paused flag, the queued messages
        assert [v["version"] for v in defs.list_versions("hourly")] == [v1, v2]
        run = second.ports.runs.get_run(pinned.run_id)
        assert run is not None and run.version == v1
        meta = defs.get_meta("paused")
        assert meta is not None and meta.paused
        queued_after = _pending(second, second.settings.task_queue_url)
        assert (
            queued_after["ApproximateNumberOfMessages"]
            == (queued_before["ApproximateNumberOfMessages"])
        )
        assert queued_after["ApproximateNumberOfMessagesDelayed"] == "1"
        # AND its first tick starts the slots missed meanwhile (catchup), not the paused one's
        started = second.tick()
        assert sorted(started) == [
            "hourly@20260307T110000Z",
            "hourly@20260307T120000Z",
            "hourly@20260307T130000Z",
        ]
    finally:
        second.stop()
