"""Builds the CDK app: the stack from context settings, with the cdk-nag security gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from .bundling import REPO_ROOT
from .nag import acknowledge_findings
from .settings import StackSettings
from .stack import StratoflowStack

CDK_JSON = REPO_ROOT / "cdk.json"


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """The `context` of cdk.json: the CLI passes it to the app; tests read it here, so an
    app built in a test is the app `cdk synth` builds."""
    return dict(json.loads(path.read_text(encoding="utf-8")).get("context", {}))


def build_app(context: dict[str, Any] | None = None, outdir: str | None = None) -> App:
    """The app with its one stack. `context` overrides cdk.json's (tests, rehearsals)."""
    app = App(context={**cdk_json_context(), **(context or {})}, outdir=outdir)
    settings = StackSettings.from_context(app.node)
    stack = StratoflowStack(
        app,
        settings.stack_name,
        settings=settings,
        description="stratoflow: serverless DAG workflow orchestrator",
        # Environment-agnostic: account and region come from the deploying credentials, and
        # synth needs no lookup (no AWS call, no cdk.context.json), so it works offline
        # and the same template serves every account.
    )
    acknowledge_findings(stack, settings.prefix)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app
