"""The benchmark's handler timer wraps the engine's command runner without changing what
the executor asks of it: a wrapped runner still runs commands and still says where an
attempt's log goes (`CommandRunner.log_ref`), and it adds each command's time."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from stratoflow.runner.commands import command_runner

METERS_PY = Path(__file__).resolve().parents[2] / "bench" / "meters.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stratoflow_bench_meters", METERS_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_timed_runner_runs_commands_and_says_where_their_logs_go(tmp_path: Path) -> None:
    meters = _load()
    runner = command_runner(str(tmp_path), echo_logs=False)
    timer = meters.HandlerTimer()
    timed = timer.wrap_runner(runner)
    # the executor asks where the log goes before the command starts
    assert timed.log_ref("run/a.task.1.log") == runner.log_ref("run/a.task.1.log")
    outcome = timed(
        "echo hello", env={"PATH": "/usr/bin:/bin"}, cwd=None, timeout=10, log_name="run/a.1.log"
    )
    assert outcome.exit_code == 0 and "hello" in outcome.output_tail
    assert timer._local.command >= 0.0
