"""One code asset for all four functions: the handlers, `stratoflow` and its dependencies.

Bundling runs locally, without Docker: pip installs the project's dependencies as wheels
built for the Lambda platform (`--platform ... --only-binary=:all:`), whatever machine runs
the synth. Only if that fails (no pip, no index) does CDK fall back to the same steps in
the Lambda build image, which needs Docker.

Asset layout (so a handler is `functions/<name>/handler.handler`):

    stratoflow/                the package, from shared/stratoflow
    functions/<name>/handler.py
    <dependencies>/            boto3, pydantic, ... for the Lambda runtime's Python
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, IgnoreMode, ILocalBundling
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path("shared") / "stratoflow"
FUNCTIONS_DIR = Path("functions")

LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
LAMBDA_PYTHON_VERSION = LAMBDA_RUNTIME.name.removeprefix("python")  # "3.14"
# Lambda's Python runtimes run on Amazon Linux 2023 (glibc 2.34): any wheel for an older
# manylinux works. pip matches `--platform` tags literally, so list the common ones.
PIP_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")

# What the asset is made from; everything else in the repository (.venv, node_modules,
# cdk.out, tests) stays out of the asset's fingerprint. Docker-style: later lines re-include.
SOURCE_PATTERNS = [
    "*",
    f"!{PACKAGE_DIR.as_posix()}",
    f"!{FUNCTIONS_DIR.as_posix()}",
    "!pyproject.toml",
    "**/__pycache__",
    "**/*.pyc",
]
_COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "tests")


def project_dependencies(root: Path = REPO_ROOT) -> list[str]:
    """The runtime requirements of the `stratoflow` package, from pyproject.toml."""
    with (root / "pyproject.toml").open("rb") as file:
        return list(tomllib.load(file)["project"]["dependencies"])


def asset_hash(root: Path, *, install_dependencies: bool) -> str:
    """The asset's identity: the package and handler sources, the declared dependencies
    and the target platform. (CDK's output hash would apply the source exclusions to the
    bundle too and miss most of it; its source hash would have to walk the whole repo.)"""
    digest = hashlib.sha256()
    recipe = {
        "python": LAMBDA_PYTHON_VERSION,
        "platforms": PIP_PLATFORMS,
        "dependencies": project_dependencies(root) if install_dependencies else None,
    }
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    for base in (PACKAGE_DIR, FUNCTIONS_DIR):
        for path in sorted((root / base).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(path.relative_to(root).as_posix().encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def pip_install_command(target: str, dependencies: Sequence[str]) -> list[str]:
    """pip arguments that install `dependencies` as Lambda-platform wheels into `target`."""
    platforms = [arg for platform in PIP_PLATFORMS for arg in ("--platform", platform)]
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--implementation",
        "cp",
        "--python-version",
        LAMBDA_PYTHON_VERSION,
        *platforms,
        "--only-binary=:all:",
        "--target",
        target,
        *dependencies,
    ]


def copy_sources(root: Path, output_dir: Path) -> None:
    """Put the `stratoflow` package and the handlers into the asset."""
    shutil.copytree(
        root / PACKAGE_DIR, output_dir / "stratoflow", ignore=_COPY_IGNORE, dirs_exist_ok=True
    )
    shutil.copytree(
        root / FUNCTIONS_DIR, output_dir / "functions", ignore=_COPY_IGNORE, dirs_exist_ok=True
    )


@jsii.implements(ILocalBundling)
class LocalPackageBundler:
    """Bundles on the synthesizing machine; returns False (→ Docker) when pip fails."""

    def __init__(
        self,
        *,
        root: Path = REPO_ROOT,
        install_dependencies: bool = True,
        run: Callable[..., Any] = subprocess.run,
    ) -> None:
        self._root = root
        self._install_dependencies = install_dependencies
        self._run = run

    def try_bundle(self, output_dir: str, *_args: Any, **_options: Any) -> bool:
        """Called by CDK with an empty `output_dir` to fill; False asks for Docker."""
        try:
            if self._install_dependencies:
                command = pip_install_command(output_dir, project_dependencies(self._root))
                self._run(command, check=True)
            copy_sources(self._root, Path(output_dir))
        except (OSError, subprocess.CalledProcessError) as error:
            print(f"stratoflow: local bundling failed ({error}); trying Docker", file=sys.stderr)
            return False
        return True


def docker_bundling_command(dependencies: Sequence[str]) -> list[str]:
    """The same steps inside the Lambda build image (source mounted at /asset-input)."""
    install = " ".join(shlex.quote(requirement) for requirement in dependencies)
    return [
        "bash",
        "-c",
        f"pip install --no-cache-dir --no-compile --target /asset-output {install}"
        f" && cp -r /asset-input/{PACKAGE_DIR.as_posix()} /asset-output/stratoflow"
        f" && cp -r /asset-input/{FUNCTIONS_DIR.as_posix()} /asset-output/functions",
    ]


def functions_code(*, install_dependencies: bool) -> lambda_.Code:
    """The asset shared by all functions. Without dependencies (tests, emulator rehearsals)
    the code deploys but cannot run: no pip, no network, a synth in seconds."""
    dependencies = project_dependencies() if install_dependencies else []
    return lambda_.Code.from_asset(
        str(REPO_ROOT),
        exclude=SOURCE_PATTERNS,
        ignore_mode=IgnoreMode.DOCKER,
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=asset_hash(REPO_ROOT, install_dependencies=install_dependencies),
        bundling=BundlingOptions(
            image=LAMBDA_RUNTIME.bundling_image,
            platform="linux/arm64",
            command=docker_bundling_command(dependencies),
            local=LocalPackageBundler(install_dependencies=install_dependencies),
        ),
    )


def handler_path(function: str) -> str:
    """The Lambda handler setting for functions/<function>/handler.py's `handler`."""
    return f"{FUNCTIONS_DIR.as_posix()}/{function}/handler.handler"
