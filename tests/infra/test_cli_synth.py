"""`npx cdk synth` with the pinned CLI works offline (Node.js and `npm ci` required), and
says nothing but its progress: no Node.js banner from jsii, no unconfigured feature flags."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO_ROOT, Synthesized

CDK = REPO_ROOT / "node_modules" / ".bin" / "cdk"
OFFLINE_ENV = {
    "CDK_DISABLE_CLI_TELEMETRY": "true",
    "CDK_DISABLE_VERSION_CHECK": "1",
}
needs_cli = pytest.mark.skipif(
    shutil.which("node") is None or not CDK.exists(),
    reason="needs Node.js and the pinned CDK CLI: run `npm ci`",
)
# Recommended flags cdk.json sets otherwise, each for a reason given in docs/deploy.md.
FLAGS_SET_AGAINST_RECOMMENDATION = {
    "@aws-cdk/aws-ec2:restrictDefaultSecurityGroup",
    "@aws-cdk/core:enableAdditionalMetadataCollection",
}


def flag_report(outdir: Path) -> dict[str, dict[str, Any]]:
    """aws-cdk-lib's feature flags as the cloud assembly reports them to the CLI: each one's
    recommended value, cdk.json's value (`userValue`) and the value when unset."""
    manifest = json.loads((outdir / "manifest.json").read_text())
    (report,) = (
        artifact["properties"]["flags"]
        for artifact in manifest["artifacts"].values()
        if artifact["type"] == "cdk:feature-flag-report"
    )
    return dict(report)


def test_cli_version_is_pinned() -> None:
    package = json.loads((REPO_ROOT / "package.json").read_text())
    version = package["devDependencies"]["aws-cdk"]
    assert version[0].isdigit(), f"pin an exact aws-cdk version, got {version}"


def test_cdk_json_turns_off_what_would_reach_the_network() -> None:
    settings = json.loads((REPO_ROOT / "cdk.json").read_text())
    assert settings["notices"] is False
    assert settings["context"]["cli-telemetry"] is False


def test_cdk_json_sets_every_feature_flag_aws_cdk_lib_recommends(synth: Synthesized) -> None:
    flags = flag_report(synth.outdir)
    # The CLI's own test for "N feature flags are not configured": unset, and unset does
    # not already behave as recommended.
    unset = sorted(
        name
        for name, flag in flags.items()
        if "userValue" not in flag
        and flag.get("unconfiguredBehavesLike", {}).get("v2", False) != flag["recommendedValue"]
    )
    assert not unset, (
        f"aws-cdk-lib recommends feature flags that cdk.json leaves unset: {', '.join(unset)}; "
        "see docs/deploy.md#cdk-feature-flags for how to add them"
    )
    against = {
        name
        for name, flag in flags.items()
        if "userValue" in flag and flag["userValue"] != flag["recommendedValue"]
    }
    assert against == FLAGS_SET_AGAINST_RECOMMENDATION


def test_the_stack_itself_keeps_its_tags(synth: Synthesized) -> None:
    # explicitStackTags: `Tags.of(stack)` no longer reaches the stack, only its resources.
    manifest = json.loads((synth.outdir / "manifest.json").read_text())
    stack = manifest["artifacts"][synth.stack.artifact_id]
    assert stack["properties"].get("tags") == {
        "project": "stratoflow",
        "stratoflow:prefix": "stratoflow",
    }


@pytest.mark.slow
@needs_cli
def test_npx_cdk_synth_produces_the_template_offline_and_quietly(tmp_path: Path) -> None:
    env = {**os.environ, **OFFLINE_ENV}
    # No endpoint and no credentials: nothing to reach even if something tried. No jsii
    # silence either (conftest.py sets it for this process): the app must bring its own.
    for key in list(env):
        if key.startswith(("AWS_", "JSII_SILENCE_")):
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
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
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
    # What is left is CDK's progress line for the Lambda asset; anything else is noise: on
    # Node 20 jsii's 11-line end-of-life banner (as b'!!…' lines), a flags count, warnings.
    noise = [
        line
        for line in output.splitlines()
        if line.strip() and not line.startswith("Bundling asset Stratoflow/")
    ]
    assert not noise, "\n".join(noise)
