"""The one place that runs a task's shell command (docs/architecture.md, invariant 8)."""

from stratoflow.runner.process import CommandResult, run_command

__all__ = ["CommandResult", "run_command"]
