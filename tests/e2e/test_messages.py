"""CLI messages are printed as written: brackets in them are not rich markup."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from stratoflow.cli import main
from tests.support import cli


def test_the_missing_extra_is_named_with_its_brackets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = importlib.util.find_spec

    def without_moto(name: str, *args: Any) -> Any:
        return None if name == "moto" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_moto)
    flow = tmp_path / "one.yaml"
    flow.write_text("id: one\ntasks:\n  - id: a\n    command: 'true'\n")
    result = CliRunner().invoke(main, ["run", str(flow), "--emulator"])
    assert result.exit_code == 2
    assert "pip install 'stratoflow[emulator]'" in result.output


def test_a_validation_error_keeps_the_brackets_of_the_value(tmp_path: Path) -> None:
    flow = tmp_path / "rule.yaml"
    flow.write_text(
        "id: rule\ntasks:\n  - id: a\n    command: 'true'\n"
        "  - id: b\n    command: 'true'\n    depends: [a]\n    trigger_rule: '[red]one_failed'\n"
    )
    result = cli(tmp_path / "home", "validate", str(flow))
    assert result.returncode == 2
    assert "[red]one_failed" in result.stderr


def test_task_output_in_the_final_table_keeps_its_brackets(tmp_path: Path) -> None:
    flow = tmp_path / "echo.yaml"
    flow.write_text("id: echo\ntasks:\n  - id: a\n    command: echo '[bold]not markup[/]'\n")
    result = cli(tmp_path / "home", "run", str(flow))
    assert result.returncode == 0, result.stderr
    assert "[bold]not markup[/]" in result.stdout


def test_task_output_with_escape_sequences_is_shown_in_tables_and_kept_in_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Brackets, markup-like text and ANSI escape sequences from a task's output: tables
    (`run`'s final one, `status`) show them as text, never obey them; `logs` gives the
    output byte for byte, as the command wrote it."""
    monkeypatch.setenv("COLUMNS", "200")  # room for the whole line in the output column
    home = tmp_path / "home"
    flow = tmp_path / "esc.yaml"
    flow.write_text(
        "id: esc\ntasks:\n  - id: a\n"
        "    command: printf 'pip install \"stratoflow[local]\" [red]x \\033[2J\\033[31mred\\n'\n"
    )
    ran = cli(home, "run", str(flow), "--json")
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]
    for result in (cli(home, "run", str(flow)), cli(home, "status", run_id)):
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout
        assert 'pip install "stratoflow[local]" [red]x \\x1b[2J\\x1b[31mred' in result.stdout
    logs = cli(home, "logs", run_id, "a")
    assert logs.returncode == 0, logs.stderr
    assert 'pip install "stratoflow[local]" [red]x \x1b[2J\x1b[31mred' in logs.stdout
