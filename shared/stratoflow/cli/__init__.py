"""The `stratoflow` command: the click group `main` and the subcommands it is made of.

Each subcommand lives in the module named for what it is about (`files`, `running`,
`local`, `workflows`, `runs`, `controls`, `schedules`, `console`); exit codes are in
`stratoflow.cli.exits`. Heavy imports (the engine, boto3) stay inside the commands that
need them, so that `--help` or a mistyped option does not load the engine.
"""

from __future__ import annotations

import click

from stratoflow.cli import console, controls, files, local, running, runs, schedules, workflows


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stratoflow")
def main() -> None:
    """stratoflow: DAG workflows of shell commands, on AWS Lambda/Fargate or locally."""


main.add_command(files.validate)
main.add_command(files.schema)
main.add_command(files.graph)
main.add_command(running.run)
main.add_command(local.local)
main.add_command(workflows.workflows)
main.add_command(workflows.upload)
main.add_command(workflows.pause)
main.add_command(workflows.unpause)
main.add_command(runs.runs)
main.add_command(runs.status)
main.add_command(runs.trigger)
main.add_command(runs.logs)
main.add_command(controls.cancel)
main.add_command(controls.retry)
main.add_command(controls.rerun)
main.add_command(controls.mark)
main.add_command(schedules.next_times)
main.add_command(schedules.backfill)
main.add_command(console.console)

__all__ = ["main"]
