"""Synthesizes the real CDK app (infra/) for the infra tests.

Each synth writes to its own temporary folder, so the tests are safe under pytest-xdist.
Bundling is skipped (`stratoflow:skipBundling`): the asset holds the handlers and the
package but no pip-installed dependencies, so a synth takes seconds and needs no network.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# The same silence as infra/app.py's (the tests build the app without it): jsii's banner
# for a Node.js past its support, which Node 20 is and which still works.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
for path in (REPO_ROOT / "infra", REPO_ROOT / "shared"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from aws_cdk.assertions import Template  # noqa: E402
from stratoflow_infra.app import build_app  # noqa: E402
from stratoflow_infra.stack import StratoflowStack  # noqa: E402

FAST_SYNTH_CONTEXT: dict[str, Any] = {
    "stratoflow:skipBundling": True,
    # The CDK CLI disables construct stack traces too; recording them doubles synth time.
    "aws:cdk:disable-stack-trace": True,
}


@dataclass
class Synthesized:
    """One synthesized app: its stack object, template (as JSON and as assertions) and
    the folder holding the cloud assembly."""

    stack: StratoflowStack
    template: Template
    json: dict[str, Any]
    outdir: Path

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """Logical id → resource, for every resource of `resource_type`."""
        return {
            logical_id: resource
            for logical_id, resource in self.json["Resources"].items()
            if resource["Type"] == resource_type
        }

    def logical_id(self, construct: Any) -> str:
        """The template's logical id of an L2 construct (its default child) or L1."""
        child = getattr(construct.node, "default_child", None) or construct
        return self.stack.get_logical_id(child)


def synthesize(outdir: Path, **context: Any) -> Synthesized:
    """Synthesize the app with cdk.json's context plus `context`, cdk-nag included (a
    finding without acknowledgment raises here)."""
    app = build_app({**FAST_SYNTH_CONTEXT, **context}, outdir=str(outdir))
    stack = next(child for child in app.node.children if isinstance(child, StratoflowStack))
    assembly = app.synth()
    template_json = assembly.get_stack_by_name(stack.stack_name).template
    return Synthesized(stack, Template.from_json(template_json), template_json, outdir)


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The app with its default settings."""
    return synthesize(tmp_path_factory.mktemp("cdk-default"))


@pytest.fixture(scope="session")
def synth_custom(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The app with every optional setting changed from its default."""
    return synthesize(
        tmp_path_factory.mktemp("cdk-custom"),
        **{
            "stratoflow:stackName": "AcmeFlow",
            "stratoflow:prefix": "acme-flow",
            "stratoflow:alarmEmail": "ops@example.com",
            "stratoflow:failedRunEmail": "ops@example.com",
            "stratoflow:apiThrottleRateLimit": "20",
            "stratoflow:apiThrottleBurstLimit": "40",
            "stratoflow:executorReservedConcurrency": "20",
            "stratoflow:executorMemoryMiB": "2048",
            "stratoflow:removalPolicy": "destroy",
            "stratoflow:natGateways": "1",
            "stratoflow:logRetentionDays": "90",
            "stratoflow:oldestTaskAgeAlarmSeconds": "600",
            "stratoflow:runnerImage": "public.ecr.aws/example/runner:1",
        },
    )
