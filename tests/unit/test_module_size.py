"""No module of the package over ~500 lines (issue #12), unless docs/architecture.md says
why it is whole: a long module is usually several ideas, and its name then explains none."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "shared" / "stratoflow"
MAX_LINES = 500
WHOLE = {
    "ports.py": "the contract of every port, each method saying its condition and outcome; "
    "an adapter's author reads it as one page (docs/architecture.md, Module size)",
}
"""Modules allowed over MAX_LINES (path relative to the package), and why."""


def oversized(package: Path) -> dict[str, int]:
    """Every module under `package` longer than MAX_LINES lines, with its length."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            found[path.relative_to(package).as_posix()] = lines
    return found


def test_no_module_is_over_the_limit_unless_it_says_why() -> None:
    too_long = {m: n for m, n in oversized(PACKAGE).items() if m not in WHOLE}
    assert too_long == {}, (
        f"over {MAX_LINES} lines: {too_long}; split by concern, or add the module to WHOLE "
        "with the reason (and say it in docs/architecture.md, Module size)"
    )


def test_every_module_allowed_over_the_limit_still_is() -> None:
    # An exception that no longer applies would let the module grow back unnoticed.
    long = oversized(PACKAGE)
    assert [m for m in WHOLE if m not in long] == []


def test_a_long_module_is_reported(tmp_path: Path) -> None:
    # GIVEN a package with one module at the limit and one a line over it
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "runs.py").write_text("x = 1\n" * MAX_LINES)
    (tmp_path / "model.py").write_text("x = 1\n" * (MAX_LINES + 1))
    # WHEN the sizes are checked THEN only the longer one is named, with its length
    assert oversized(tmp_path) == {"model.py": MAX_LINES + 1}
