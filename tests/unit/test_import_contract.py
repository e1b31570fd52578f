"""The package map of docs/architecture.md, enforced: imports point inward only.

Every `import` of every module under shared/stratoflow (function-level ones included) is
read with `ast` and checked against the layer rules below; a forbidden import fails with
the module, line and imported name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "shared" / "stratoflow"


@dataclass(frozen=True)
class Rule:
    """Modules matching `layer` may import, of our own package, only `allowed`."""

    layer: str
    allowed: tuple[str, ...]
    why: str


RULES = (
    Rule("core", ("core",), "the domain is pure: it imports nothing of ours outside core"),
    Rule("ports", ("core", "ports"), "ports are contracts over the domain"),
    Rule("services", ("core", "ports", "services"), "use cases see the domain and the ports only"),
    Rule(
        "embedded",
        ("core", "ports", "config", "embedded"),
        "an adapter set depends on the domain and the ports, never on use cases or the "
        "other adapter set",
    ),
    Rule(
        "aws",
        ("core", "ports", "config", "aws", "runner.logfiles"),
        "an adapter set depends on the domain and the ports, never on use cases or the "
        "other adapter set",
    ),
    Rule(
        "handlers",
        ("core", "ports", "config", "services", "bootstrap", "handlers"),
        "handlers parse events and call services through bootstrap; never the local runtime",
    ),
)


def _layer(module: str) -> str:
    """`core.model` → "core", `services` → "services"."""
    return module.split(".", 1)[0]


def _imports(path: Path, package: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module relative to the package) of every import of ours, relative
    imports resolved against the importing module's package."""
    tree = ast.parse(path.read_text(), str(path))
    # the importing module's package (for `pkg/__init__.py` and `pkg/mod.py` alike: pkg)
    parts = list(path.relative_to(package).with_suffix("").parts)[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
            prefix = ".".join(["stratoflow", *base])
            if node.module:
                names = [f"{prefix}.{node.module}"]
            else:  # `from . import x`
                names = [f"{prefix}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            if node.module == "stratoflow":  # `from stratoflow import services`
                names = [f"stratoflow.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name == "stratoflow" or name.startswith("stratoflow."):
                yield node.lineno, name.removeprefix("stratoflow").lstrip(".")


def violations(package: Path) -> list[str]:
    """Every import that breaks a rule, as `module:line imports X (why)`."""
    found = []
    for path in sorted(package.rglob("*.py")):
        module = ".".join(path.relative_to(package).with_suffix("").parts)
        rule = next((r for r in RULES if _layer(module) == r.layer), None)
        if rule is None:
            continue
        for line, imported in _imports(path, package):
            if not any(imported == a or imported.startswith(f"{a}.") for a in rule.allowed):
                found.append(f"{module}:{line} imports stratoflow.{imported} ({rule.why})")
    return found


def test_every_import_points_inward() -> None:
    assert violations(PACKAGE) == []


def test_a_forbidden_import_is_reported(tmp_path: Path) -> None:
    # GIVEN a copy of the package map where core reaches out to an adapter and a handler
    # to the local runtime
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "model.py").write_text("from stratoflow.core.rules import decide\n")
    (tmp_path / "core" / "plan.py").write_text(
        "def f():\n    from stratoflow.embedded.runs import SqliteRunStore\n"
    )
    (tmp_path / "handlers").mkdir()
    (tmp_path / "handlers" / "api.py").write_text(
        "from stratoflow import bootstrap, local\nimport stratoflow.services\n"
    )
    # and a use case reaches an adapter through a relative import
    (tmp_path / "services").mkdir()
    (tmp_path / "services" / "runs.py").write_text(
        "from .bundle import Ports\nfrom ..embedded import runs\n"
    )
    # WHEN the contract is checked THEN exactly the three forbidden imports are named
    assert [v.split(" (")[0] for v in violations(tmp_path)] == [
        "core.plan:2 imports stratoflow.embedded.runs",
        "handlers.api:1 imports stratoflow.local",
        "services.runs:2 imports stratoflow.embedded",
    ]
