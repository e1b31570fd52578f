"""`stratoflow validate`, `schema` and `graph`: commands on workflow files alone, with no
engine."""

from __future__ import annotations

import json
import sys

import click
from rich.markup import escape

from stratoflow.cli.exits import EXIT_INVALID, err_console
from stratoflow.cli.inputs import load
from stratoflow.core.loader import WorkflowFileError, load_workflow, workflow_json_schema


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate(files: tuple[str, ...]) -> None:
    """Check workflow files; exit 2 with a message naming file, field and value if invalid."""
    problems = []
    for f in files:
        try:
            wf = load_workflow(f)
        except WorkflowFileError as err:
            problems.append(err.message)
            continue
        err_console.print(f"[green]ok[/] {escape(f)}: workflow {wf.id!r}, {len(wf.tasks)} tasks")
    if problems:
        for message in problems:
            err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
        sys.exit(EXIT_INVALID)


@click.command()
def schema() -> None:
    """Print the JSON Schema of workflow files (for editors)."""
    click.echo(json.dumps(workflow_json_schema(), indent=2))


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True
)
def graph(file: str, fmt: str) -> None:
    """Print the workflow's DAG as Mermaid or Graphviz dot."""
    from stratoflow.core.render import render_dot, render_mermaid

    wf = load(file)
    click.echo(render_mermaid(wf) if fmt == "mermaid" else render_dot(wf))
