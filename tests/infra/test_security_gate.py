"""The security gate: cdk-nag AwsSolutions with zero unacknowledged findings, cfn-lint clean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk import Validations
from aws_cdk import aws_iam as iam
from stratoflow_infra.app import build_app
from stratoflow_infra.stack import StratoflowStack

from .conftest import FAST_SYNTH_CONTEXT, Synthesized

# CDK's lambda.Function adds DependsOn its role although Role: !GetAtt already orders them;
# cfn-lint warns about the redundancy (W3005). It is harmless and not ours to change.
CFN_LINT_IGNORED = ["W3005"]


def report(synth: Synthesized) -> dict:
    return json.loads((synth.outdir / "validation-report.json").read_text())


@pytest.mark.parametrize("fixture", ["synth", "synth_custom"])
def test_cdk_nag_passes_with_every_finding_fixed_or_acknowledged(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    synth: Synthesized = request.getfixturevalue(fixture)
    (nag,) = [p for p in report(synth)["pluginReports"] if p["pluginName"] == "AwsSolutions"]
    assert nag["conclusion"] == "success", nag["violations"]
    assert nag["violations"] == []


def test_the_gate_rejects_a_wildcard_policy(tmp_path: Path) -> None:
    app = build_app(dict(FAST_SYNTH_CONTEXT), outdir=str(tmp_path))
    stack = next(c for c in app.node.children if isinstance(c, StratoflowStack))
    stack.functions["executor"].role.add_to_principal_policy(
        iam.PolicyStatement(actions=["dynamodb:*"], resources=[stack.state.table.table_arn])
    )
    with pytest.raises(Exception, match=r"ValidationFailed|Validation failed"):
        app.synth()
    text = (tmp_path / "validation-report.json").read_text()
    assert "AwsSolutions-IAM5[Action::dynamodb:*]" in text


def test_every_acknowledgment_names_one_rule_and_a_real_reason(synth: Synthesized) -> None:
    acknowledged = [
        (construct.node.path, rule, reason)
        for construct in synth.stack.node.find_all()
        for entry in construct.node.metadata
        if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY
        for rule, reason in entry.data.items()
        if rule.startswith("AwsSolutions::")
    ]
    assert acknowledged, "expected the documented acknowledgments"
    for path, rule, reason in acknowledged:
        assert rule.startswith("AwsSolutions::AwsSolutions-"), (path, rule)
        if "IAM5" in rule:
            assert "[" in rule, f"{path}: IAM5 must name the finding it accepts"
        assert len(reason) >= 60, (path, rule, reason)


def test_stack_level_acknowledgments_are_not_used(synth: Synthesized) -> None:
    for entry in synth.stack.node.metadata:
        if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
            assert not any(rule.startswith("AwsSolutions::") for rule in entry.data)


@pytest.mark.parametrize("fixture", ["synth", "synth_custom"])
def test_cfn_lint_passes_on_the_synthesized_template(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    synth: Synthesized = request.getfixturevalue(fixture)
    template = synth.outdir / f"{synth.stack.stack_name}.template.json"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cfnlint.runner import main; main()",
            "--regions",
            "us-east-1",
            "eu-west-1",
            "--ignore-checks",
            *CFN_LINT_IGNORED,
            "--",
            str(template),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
