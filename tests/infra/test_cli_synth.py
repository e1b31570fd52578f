"""`npx cdk synth` with the pinned CLI works offline (Node.js and `npm ci` required)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

CDK = REPO_ROOT / "node_modules" / ".bin" / "cdk"
OFFLINE_ENV = {
    "CDK_DISABLE_CLI_TELEMETRY": "true",
    "CDK_DISABLE_VERSION_CHECK": "1",
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
}
needs_cli = pytest.mark.skipif(
    shutil.which("node") is None or not CDK.exists(),
    reason="needs Node.js and the pinned CDK CLI: run `npm ci`",
)


def test_cli_version_is_pinned() -> None:
    package = json.loads((REPO_ROOT / "package.json").read_text())
    version = package["devDependencies"]["aws-cdk"]
    assert version[0].isdigit(), f"pin an exact aws-cdk version, got {version}"


def test_cdk_json_turns_off_what_would_reach_the_network() -> None:
    settings = json.loads((REPO_ROOT / "cdk.json").read_text())
    assert settings["notices"] is False
    assert settings["context"]["cli-telemetry"] is False


@pytest.mark.slow
@needs_cli
def test_npx_cdk_synth_produces_the_template_offline(tmp_path: Path) -> None:
    env = {**os.environ, **OFFLINE_ENV}
    # No endpoint and no credentials: nothing to reach even if something tried.
    for key in list(env):
        if key.startswith("AWS_"):
            del env[key]
    result = subprocess.run(
        [
            "npx",
            "--no-install",
            "cdk",
            "synth",
            "--no-notices",
            "-q",
            "-o",
            str(tmp_path),
            "-c",
            "stratoflow:skipBundling=true",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    template = json.loads((tmp_path / "Stratoflow.template.json").read_text())
    types = {resource["Type"] for resource in template["Resources"].values()}
    assert {
        "AWS::DynamoDB::Table",
        "AWS::SQS::Queue",
        "AWS::S3::Bucket",
        "AWS::Lambda::Function",
        "AWS::ECS::TaskDefinition",
        "AWS::CloudWatch::Dashboard",
    } <= types
