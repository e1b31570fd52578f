"""The docs' terminal sessions are run, and must print what the docs show.

Convention: a fenced block whose info string is `console` (in README.md, examples/ and
docs/) is a session to run. Each `$ ` line is a command, run by bash in a fresh folder
that has the repository's `examples/` (with STRATOFLOW_HOME there too); the lines after
it, up to the next command, are its output (stdout and stderr together). In a line of
expected output `...` matches any text, and a line that is only `...` matches any lines.
A command ending in `# exit N` must exit N; any other must exit 0. A fenced block right
after a line `<!-- file: NAME -->` is written to NAME in the folder of every session of
that document (a workflow file the text shows, then validates). Use `sh` blocks for
commands that are not to be run (they need AWS, a running engine, …).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "examples" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass
class Step:
    command: str
    expected: list[str]
    exit_code: int


@dataclass
class Session:
    doc: Path
    line: int
    steps: list[Step]
    files: dict[str, str]

    @property
    def name(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


_FILE = re.compile(r"^\s*<!-- file: (\S+) -->\s*$")


def _block(lines: list[str], start: int) -> tuple[list[str], int]:
    """The body of the fenced block opening at `start` (its indentation removed), and the
    index of its closing fence."""
    indent = len(lines[start]) - len(lines[start].lstrip())
    body: list[str] = []
    i = start + 1
    while lines[i].strip() != "```":
        body.append(lines[i][indent:])
        i += 1
    return body, i


def sessions() -> list[Session]:
    found: list[Session] = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        files: dict[str, str] = {}
        i = 0
        while i < len(lines):
            named = _FILE.match(lines[i])
            if named and lines[i + 1].strip().startswith("```"):
                body, i = _block(lines, i + 1)
                files[named.group(1)] = "\n".join(body) + "\n"
            elif lines[i].strip() == "```console":
                body, end = _block(lines, i)
                found.append(Session(doc, i + 1, _steps(body), files))
                i = end
            i += 1
    return found


def _steps(body: list[str]) -> list[Step]:
    steps: list[Step] = []
    for line in body:
        if line.startswith("$ "):
            command = line[2:]
            code = 0
            if m := re.search(r"\s+# exit (\d+)$", command):
                code, command = int(m.group(1)), command[: m.start()]
            steps.append(Step(command, [], code))
        else:
            assert steps, f"output before any command: {line!r}"
            steps[-1].expected.append(line.rstrip())
    return steps


def _matches(expected: list[str], actual: list[str]) -> bool:
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head == "...":
        return any(_matches(rest, actual[k:]) for k in range(len(actual) + 1))
    if not actual:
        return False
    pattern = ".*".join(re.escape(part) for part in head.split("..."))
    return re.fullmatch(pattern, actual[0]) is not None and _matches(rest, actual[1:])


ALL = sessions()


def test_the_docs_have_sessions_to_run() -> None:
    # The convention is in use where the docs promise what a command prints.
    names = {s.doc.name for s in ALL}
    assert {"README.md", "scheduling.md", "workflow-file.md"} <= names


@pytest.mark.parametrize("session", ALL, ids=[s.name for s in ALL])
def test_a_docs_session_prints_what_the_docs_show(session: Session, tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    for name, text in session.files.items():
        (tmp_path / name).write_text(text)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "STRATOFLOW_HOME": str(tmp_path / ".stratoflow"),
        "COLUMNS": "100",
        "NO_COLOR": "1",
        "TERM": "dumb",
    }
    env.pop("STRATOFLOW_API", None)
    env.pop("STRATOFLOW_STACK", None)
    for step in session.steps:
        done = subprocess.run(
            ["bash", "-c", step.command],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )
        actual = [line.rstrip() for line in done.stdout.splitlines()]
        where = f"{session.name}: `{step.command}`"
        assert done.returncode == step.exit_code, (
            f"{where} exited {done.returncode}:\n{done.stdout}"
        )
        assert _matches(step.expected, actual), (
            f"{where} printed:\n"
            + "\n".join(actual)
            + "\n\nthe docs show:\n"
            + "\n".join(step.expected)
        )


def test_the_matcher_itself() -> None:
    assert _matches(["a ... c"], ["a bb c"])
    assert not _matches(["a ... c"], ["a bb d"])
    assert _matches(["...", "z"], ["x", "y", "z"])
    assert not _matches(["z"], ["x", "z"])
    assert _matches([], [])
    assert not _matches([], ["extra"])
