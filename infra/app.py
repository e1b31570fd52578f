"""CDK entry point, run by `npx cdk synth|deploy` (see cdk.json)."""

import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
# The stack reads resource names and settings from the `stratoflow` package itself.
sys.path[:0] = [str(_ROOT / "shared"), str(_ROOT / "infra")]

# jsii (the Node.js process behind aws-cdk-lib) prints an 11-line banner on every synth
# for a Node.js it no longer supports, and its Python side echoes each line as a bytes
# literal. Node 20 still works (docs/deploy.md#nodejs), so the app silences the banner
# for it: END_OF_LIFE lists the majors to spare (Node 20 has been past jsii's support
# since 2026-10-30); DEPRECATED, any value, covers a major in its six months between its
# end of life and that date. Set either to "" to see jsii's warning again.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from stratoflow_infra.app import build_app  # noqa: E402

build_app().synth()
