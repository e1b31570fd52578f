"""`stratoflow run`'s live view on a real terminal (a pty, through `script`): every frame
counts the run's tasks by their recorded state, so the counts always add up to the tasks
of the run, and the end agrees with `status --json`."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import cli, cli_env

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STATES = (
    "succeeded|failed|upstream_failed|skipped|cancelled|running|up_for_retry|queued|waiting|pending"
)
COUNT = re.compile(rf"(\d+) ({STATES})\b")


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux's script")
def test_the_flaky_examples_live_view_counts_tasks_by_state(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**cli_env(home), "COLUMNS": "100", "TERM": "xterm"}
    command = (
        f"{shlex.quote(sys.executable)} -m stratoflow.cli run {ROOT}/examples/flaky/flaky.yaml"
    )
    done = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout
    screen = ANSI.sub("", done.stdout).replace("\r", "\n")
    frames = [line for line in screen.splitlines() if " of 5 " in f"{line} "]
    assert frames, screen
    for frame in frames:
        counts = {state: int(n) for n, state in COUNT.findall(frame)}
        assert sum(counts.values()) == 5, frame  # every task, once: nothing drifts
    # a retry was shown as such while flaky waited for its next attempt
    assert any("up_for_retry" in frame for frame in frames), frames
    assert "failed: doomed" in screen

    [summary] = [
        line for line in screen.splitlines() if line.startswith("run ") and " failed: " in line
    ]
    assert "3 succeeded · 1 failed · 1 upstream_failed · took " in summary
    run_id = summary.split()[1]
    doc = json.loads(cli(home, "status", run_id, "--json").stdout)
    states = [t["status"] for t in doc["tasks"].values()]
    assert sorted(states) == sorted(["succeeded"] * 3 + ["failed", "upstream_failed"])
