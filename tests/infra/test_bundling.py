"""The functions' code asset: built locally with Lambda-platform wheels, no Docker."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from stratoflow_infra.bundling import (
    LAMBDA_PYTHON_VERSION,
    LocalPackageBundler,
    asset_hash,
    docker_bundling_command,
    pip_install_command,
    project_dependencies,
)

from .conftest import REPO_ROOT


def test_dependencies_come_from_pyproject() -> None:
    requirements = project_dependencies()
    names = {
        r.split(">")[0].split("=")[0].split("[")[0].split("<")[0].lower() for r in requirements
    }
    assert {"pydantic", "pyyaml", "croniter", "aws-lambda-powertools"} <= names


def test_pip_installs_only_wheels_for_the_lambda_platform(tmp_path: Path) -> None:
    command = pip_install_command(str(tmp_path), ["pydantic>=2"])
    assert command[command.index("--python-version") + 1] == LAMBDA_PYTHON_VERSION
    platforms = [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]
    assert platforms and all(p.endswith("_aarch64") for p in platforms)
    assert "--only-binary=:all:" in command
    assert command[command.index("--target") + 1] == str(tmp_path)
    assert command[-1] == "pydantic>=2"


class RecordingRun:
    """Stands in for subprocess.run; fails when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, command: list[str], **kwargs: Any) -> None:
        self.calls.append(command)
        if self.fail:
            raise subprocess.CalledProcessError(1, command)


def test_local_bundle_holds_the_package_and_the_handlers(tmp_path: Path) -> None:
    run = RecordingRun()
    assert LocalPackageBundler(run=run).try_bundle(str(tmp_path)) is True
    assert (tmp_path / "stratoflow" / "config.py").is_file()
    assert (tmp_path / "functions").is_dir()
    assert not list(tmp_path.rglob("__pycache__"))
    (command,) = run.calls
    assert command[command.index("--target") + 1] == str(tmp_path)


def test_skipping_dependencies_runs_no_pip(tmp_path: Path) -> None:
    run = RecordingRun()
    assert LocalPackageBundler(install_dependencies=False, run=run).try_bundle(str(tmp_path))
    assert run.calls == []
    assert (tmp_path / "stratoflow" / "config.py").is_file()


def test_a_failing_pip_hands_over_to_docker(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert LocalPackageBundler(run=RecordingRun(fail=True)).try_bundle(str(tmp_path)) is False
    assert "trying Docker" in capsys.readouterr().err


def test_docker_fallback_does_the_same_steps() -> None:
    (shell, flag, script) = docker_bundling_command(["pydantic>=2,<3"])
    assert (shell, flag) == ("bash", "-c")
    assert "'pydantic>=2,<3'" in script
    assert "/asset-input/shared/stratoflow /asset-output/stratoflow" in script
    assert "/asset-input/functions /asset-output/functions" in script


def _index_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _index_reachable(), reason="needs the package index (pypi.org)")
def test_real_bundle_has_arm64_wheels_for_the_runtimes_python(tmp_path: Path) -> None:
    assert LocalPackageBundler(root=REPO_ROOT).try_bundle(str(tmp_path)) is True
    compiled = {p.name for p in (tmp_path / "pydantic_core").glob("*.so")}
    tag = f"cpython-{LAMBDA_PYTHON_VERSION.replace('.', '')}-aarch64-linux-gnu"
    assert any(tag in name for name in compiled), compiled
    for package in ("pydantic", "yaml", "croniter", "aws_lambda_powertools", "stratoflow"):
        assert (tmp_path / package).is_dir(), package


def _copy_sources(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "shared" / "stratoflow", root / "shared" / "stratoflow")
    shutil.copytree(REPO_ROOT / "functions", root / "functions")
    shutil.copy(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_asset_hash_changes_with_the_package_source(tmp_path: Path) -> None:
    root = _copy_sources(tmp_path)
    before = asset_hash(root, install_dependencies=True)
    with (root / "shared" / "stratoflow" / "config.py").open("a") as file:
        file.write("\n# changed\n")
    assert asset_hash(root, install_dependencies=True) != before


def test_asset_hash_changes_with_a_handler(tmp_path: Path) -> None:
    root = _copy_sources(tmp_path)
    before = asset_hash(root, install_dependencies=True)
    handler = root / "functions" / "loader" / "handler.py"
    handler.parent.mkdir(parents=True, exist_ok=True)
    handler.write_text((handler.read_text() if handler.exists() else "") + "\n# changed\n")
    assert asset_hash(root, install_dependencies=True) != before


def test_asset_hash_tells_a_bundle_without_dependencies_apart(tmp_path: Path) -> None:
    root = _copy_sources(tmp_path)
    assert asset_hash(root, install_dependencies=True) != asset_hash(
        root, install_dependencies=False
    )


def test_asset_hash_ignores_bytecode(tmp_path: Path) -> None:
    root = _copy_sources(tmp_path)
    before = asset_hash(root, install_dependencies=True)
    cache = root / "shared" / "stratoflow" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "config.cpython-311.pyc").write_bytes(b"\0")
    assert asset_hash(root, install_dependencies=True) == before
