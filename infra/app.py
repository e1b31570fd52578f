"""CDK entry point, run by `npx cdk synth|deploy` (see cdk.json)."""

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
# The stack reads resource names and settings from the `stratoflow` package itself.
sys.path[:0] = [str(_ROOT / "shared"), str(_ROOT / "infra")]

from stratoflow_infra.app import build_app  # noqa: E402

build_app().synth()
