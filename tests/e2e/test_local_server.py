"""`stratoflow local up` end to end: a folder served, a schedule firing, commands from
another terminal, hot reload, clean shutdown."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support import cli, local_up, wait_until


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(home, *args, timeout=60)


def _workflows(home: Path) -> list[dict[str, Any]]:
    return json.loads(_cli(home, "workflows", "--json").stdout)["workflows"]


EVERY_MINUTE = """\
id: every-minute
schedule: "* * * * *"
max_active_runs: 3
tasks:
  - id: tick
    command: echo "$STRATOFLOW_LOGICAL_DATE" >> ticks.txt
"""


def test_local_up_registers_a_dropped_file_and_runs_its_schedule(tmp_path: Path) -> None:
    folder, home = tmp_path / "flows", tmp_path / "home"
    folder.mkdir()
    with local_up(folder, home, "--clock-speed", "60") as server:
        (folder / "every.yaml").write_text(EVERY_MINUTE)
        # 60x clock: a minute passes every second; the first slot runs within a few seconds
        ticks = folder / "ticks.txt"
        wait_until(lambda: ticks.exists() and ticks.read_text().strip(), 30, "a scheduled run")

        def succeeded_runs() -> list[dict[str, Any]]:
            result = _cli(home, "runs", "every-minute", "--json")
            assert result.returncode == 0, result.stderr
            return [r for r in json.loads(result.stdout) if r["status"] == "succeeded"]

        [first, *_] = wait_until(succeeded_runs, 30, "a succeeded scheduled run")
        assert first["trigger"] == "schedule" and first["run_id"].startswith("every-minute@")
        status = _cli(home, "status", first["run_id"], "--json")
        assert json.loads(status.stdout)["tasks"]["tick"]["status"] == "succeeded"

        upcoming = _cli(home, "next", "every-minute", "-n", "2", "--json")
        assert upcoming.returncode == 0, upcoming.stderr
        assert len(json.loads(upcoming.stdout)) == 2

        listed = _workflows(home)
        assert [(w["workflow_id"], w["version"]) for w in listed] == [("every-minute", 1)]

        # hot reload: a changed file becomes version 2
        (folder / "every.yaml").write_text(
            EVERY_MINUTE.replace("max_active_runs: 3", "max_active_runs: 2")
        )
        wait_until(
            lambda: _workflows(home)[0]["version"] == 2,
            30,
            "version 2",
        )

        assert _cli(home, "pause", "every-minute").returncode == 0
        assert _workflows(home)[0]["paused"] is True

        backfill = [
            "backfill",
            "every-minute",
            "--start",
            "2026-01-01T00:00:00Z",
            "--end",
            "2026-01-01T00:04:00Z",
            "--json",
        ]
        assert len(json.loads(_cli(home, *backfill).stdout)) == 5
        assert json.loads(_cli(home, *backfill).stdout) == []  # idempotent

        # a broken edit is reported where the user looks, and version 2 stays active
        (folder / "every.yaml").write_text("id: every-minute\ntasks: [\n")
        listing = wait_until(
            lambda: (lambda d: d["load_errors"] and d)(
                json.loads(_cli(home, "workflows", "--json").stdout)
            ),
            30,
            "the load error",
        )
        assert "every.yaml" in listing["load_errors"][0]["source"]
        assert listing["workflows"][0]["version"] == 2
        (folder / "every.yaml").write_text(EVERY_MINUTE)

        # deleting the file deactivates the workflow
        (folder / "every.yaml").unlink()
        wait_until(
            lambda: _workflows(home)[0]["active"] is False,
            30,
            "deactivation",
        )
    assert server.proc.returncode == 0, server.stderr
    assert "registered every-minute v1" in server.stderr
    assert not (home / "local.json").exists()


def test_commands_without_a_running_engine_read_the_homes_state(tmp_path: Path) -> None:
    """The embedded engine's state is a file: it can be read with no engine running."""
    result = _cli(tmp_path / "nothing-here", "workflows", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["workflows"] == []
    missing = _cli(tmp_path / "nothing-here", "status", "no-such-run")
    assert missing.returncode == 2 and "no-such-run" in missing.stderr
    assert "Traceback" not in missing.stderr
