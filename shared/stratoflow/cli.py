"""The `stratoflow` command.

Exit codes are a contract users' scripts rely on: 0 the run succeeded (or the input is
valid), 1 the run failed or was cancelled, 2 the input is invalid (and nothing ran).
Messages go to stderr; with --json, stdout carries exactly one JSON document.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from stratoflow.core.loader import WorkflowFileError, load_workflow, workflow_json_schema
from stratoflow.core.model import (
    PARAM_NAME_PATTERN,
    Workflow,
    check_param_names_distinct,
    check_params_size,
)

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
INTERRUPTED = 130

err_console = Console(stderr=True, highlight=False)


def _invalid(message: str) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    sys.exit(EXIT_INVALID)


def _load(path: str) -> Workflow:
    try:
        return load_workflow(path)
    except WorkflowFileError as err:
        _invalid(err.message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stratoflow")
def main() -> None:
    """stratoflow: DAG workflows of shell commands, on AWS Lambda/Fargate or locally."""


@main.command()
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
        err_console.print(f"[green]ok[/] {f}: workflow {wf.id!r}, {len(wf.tasks)} tasks")
    if problems:
        for message in problems:
            err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
        sys.exit(EXIT_INVALID)


@main.command()
def schema() -> None:
    """Print the JSON Schema of workflow files (for editors)."""
    click.echo(json.dumps(workflow_json_schema(), indent=2))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True
)
def graph(file: str, fmt: str) -> None:
    """Print the workflow's DAG as Mermaid or Graphviz dot."""
    from stratoflow.core.render import render_dot, render_mermaid

    wf = _load(file)
    click.echo(render_mermaid(wf) if fmt == "mermaid" else render_dot(wf))


@main.command(name="next")
@click.argument("target")
@click.option("-n", "count", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--after", default=None, metavar="ISO", help="Start after this time (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of UTC times.")
@click.option(
    "--endpoint-url",
    default=None,
    metavar="URL",
    help="Read a registered WORKFLOW's schedule from this endpoint.",
)
def next_times(
    target: str, count: int, after: str | None, as_json: bool, endpoint_url: str | None
) -> None:
    """The next fire times of a workflow FILE (or a registered WORKFLOW id)."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from stratoflow.core.cron import next_fire_times

    schedule, timezone = _schedule_of(target, endpoint_url)
    if after is None:
        start = datetime.now(UTC)
    else:
        try:
            start = datetime.fromisoformat(after.replace("Z", "+00:00"))
        except ValueError:
            _invalid(f"--after {after!r}: expected an ISO 8601 time, e.g. 2026-03-08T00:00:00Z")
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    fires = next_fire_times(schedule, timezone, start, count)
    if as_json:
        click.echo(json.dumps([f.isoformat().replace("+00:00", "Z") for f in fires]))
        return
    zone = ZoneInfo(timezone)
    for fire in fires:
        local = fire.astimezone(zone)
        click.echo(f"{local:%Y-%m-%d %H:%M %Z} ({timezone})  {fire:%Y-%m-%dT%H:%M:%SZ}")


def _schedule_of(target: str, endpoint_url: str | None) -> tuple[str, str]:
    if Path(target).exists() or Path(target).suffix.lower() in (".json", ".yaml", ".yml"):
        wf = _load(target)
        if not wf.schedule:
            _invalid(f"workflow file {target!r} has no schedule")
        return wf.schedule, wf.timezone
    if endpoint_url is None:
        _invalid(
            f"{target!r} is not a workflow file; for a registered workflow pass "
            "--endpoint-url of the engine that has it"
        )
    from stratoflow.aws.clients import AwsClients
    from stratoflow.aws.dynamodb import DynamoDefinitionStore
    from stratoflow.config import Settings

    settings = Settings.from_env()
    store = DynamoDefinitionStore(AwsClients(settings.region, endpoint_url), settings.table)
    meta = store.get_meta(target)
    if meta is None or not meta.schedule:
        _invalid(f"workflow {target!r} is not registered with a schedule at {endpoint_url}")
    return meta.schedule, meta.timezone


def _parse_params(values: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            _invalid(f"--param {item!r}: expected NAME=VALUE, e.g. --param region=eu-west-1")
        name = name.strip()
        if not re.fullmatch(PARAM_NAME_PATTERN, name):
            _invalid(
                f"--param {item!r}: the name must match {PARAM_NAME_PATTERN} (it becomes "
                f"the environment variable STRATOFLOW_PARAM_{name.upper()})"
            )
        params[name] = value
    return params


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--local",
    "local",
    is_flag=True,
    default=True,
    help="Run on the embedded AWS emulator (the default).",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a parameter (repeatable); may name keys not declared in `params`.",
)
@click.option(
    "--workers",
    type=int,
    default=4,
    show_default=True,
    help="Commands run at once (the workflow's concurrency, if smaller, wins).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document when the run ends.")
@click.option(
    "--endpoint-url",
    default=None,
    metavar="URL",
    help="Use this AWS endpoint (e.g. LocalStack at http://localhost:4566) "
    "instead of the embedded emulator.",
)
def run(
    file: str,
    local: bool,
    params: tuple[str, ...],
    workers: int,
    as_json: bool,
    endpoint_url: str | None,
) -> None:
    """Run a workflow file now, locally, and wait for it to finish."""
    wf = _load(file)
    param_values = _parse_params(params)
    try:
        check_param_names_distinct({**wf.params, **param_values})
        check_params_size({**wf.params, **param_values})
    except ValueError as err:
        _invalid(f"--param: {err}")
    if workers < 1:
        _invalid(f"--workers must be at least 1, got {workers}")
    effective = min(workers, wf.concurrency) if wf.concurrency else workers
    code = _run_locally(wf, Path(file), param_values, effective, as_json, endpoint_url)
    sys.exit(code)


def _run_locally(
    wf: Workflow,
    path: Path,
    params: dict[str, str],
    workers: int,
    as_json: bool,
    endpoint_url: str | None,
) -> int:
    from stratoflow import services
    from stratoflow.local.runtime import LocalRuntime

    state_dir = Path(os.environ.get("STRATOFLOW_HOME", ".stratoflow"))
    runtime = LocalRuntime(workers=workers, state_dir=state_dir, endpoint_url=endpoint_url)
    interactive = err_console.is_terminal and not as_json
    try:
        runtime.start()
    except Exception as exc:
        _invalid(f"cannot reach the AWS endpoint {endpoint_url or '(embedded)'}: {exc}")
    try:
        version = runtime.register(wf, str(path.resolve()))
        run_id = runtime.request_run(
            wf.id, version, params=params, workdir=str(path.resolve().parent)
        )
        if not as_json:
            err_console.print(
                f"run [bold]{run_id}[/] of {wf.id} v{version} "
                f"({len(wf.tasks)} tasks, {workers} workers)"
            )
        try:
            if interactive:
                _follow(runtime, run_id, len(wf.tasks))
            else:
                runtime.wait(run_id)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: cancelling the run, stopping its tasks")
            assert runtime.ports is not None
            services.cancel_run(runtime.ports, run_id)
            runtime.cancel.set()
            runtime.quiesce()
            code = INTERRUPTED
        else:
            code = None
        assert runtime.ports is not None
        doc = services.run_status(runtime.ports, run_id)
        assert doc is not None
    finally:
        runtime.stop()
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        _print_table(doc)
    if code is not None:
        return code
    return EXIT_OK if doc["status"] == "succeeded" else EXIT_FAILED


def _follow(runtime: Any, run_id: str, total: int) -> None:
    """Live progress on the terminal until the run ends."""
    from rich.live import Live

    done = threading.Event()
    result: dict[str, Any] = {}

    def waiter() -> None:
        try:
            result["run"] = runtime.wait(run_id)
        except BaseException as exc:
            result["error"] = exc
        finally:
            done.set()

    threading.Thread(target=waiter, daemon=True).start()
    started = time.monotonic()
    with Live(console=err_console, refresh_per_second=8, transient=True) as live:
        while not done.wait(0.125):
            p = runtime.progress
            live.update(
                f"[bold]{p.succeeded}[/] succeeded  [bold red]{p.failed}[/] failed  "
                f"[bold cyan]{p.running}[/] running  of {total}  "
                f"[dim]{time.monotonic() - started:6.1f}s[/]"
            )
    if "error" in result:
        raise result["error"]


def _print_table(doc: dict[str, Any]) -> None:
    console = Console()
    table = Table(title=f"{doc['workflow_id']} · run {doc['run_id']} · {doc['status']}")
    for col in ("task", "status", "attempts", "exit", "output (last line)"):
        table.add_column(col)
    colors = {
        "succeeded": "green",
        "failed": "red",
        "upstream_failed": "red",
        "skipped": "yellow",
        "cancelled": "magenta",
    }
    for task_id, t in doc["tasks"].items():
        lines = [ln for ln in t["output_tail"].splitlines() if ln.strip()]
        table.add_row(
            task_id,
            f"[{colors.get(t['status'], 'white')}]{t['status']}[/]",
            str(t["attempts"]),
            "timeout"
            if t["timed_out"]
            else ("" if t["exit_code"] is None else str(t["exit_code"])),
            (lines[-1][:80] if lines else ""),
        )
    console.print(table)
    for c in doc.get("compensations", []):
        console.print(f"compensation {c['task_id']}: {c['status']}")


if __name__ == "__main__":  # pragma: no cover
    main()
