"""What the user hands a command, checked: a workflow file, `--param NAME=VALUE`s, and
`--emulator` (an optional extra); each exits 2 naming what is wrong."""

from __future__ import annotations

import re

import click

from stratoflow.cli.exits import invalid
from stratoflow.core.field_checks import PARAM_NAME_PATTERN
from stratoflow.core.loader import WorkflowFileError, load_workflow
from stratoflow.core.model import Workflow


def load(path: str) -> Workflow:
    """The workflow in the file at `path`; exit 2 with the loader's message if invalid."""
    try:
        return load_workflow(path)
    except WorkflowFileError as err:
        invalid(err.message)


def parse_params(values: tuple[str, ...]) -> dict[str, str]:
    """`--param NAME=VALUE` options as a dict; exit 2 naming the first malformed one."""
    params: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            invalid(f"--param {item!r}: expected NAME=VALUE, e.g. --param region=eu-west-1")
        name = name.strip()
        if not re.fullmatch(PARAM_NAME_PATTERN, name):
            invalid(
                f"--param {item!r}: the name must match {PARAM_NAME_PATTERN} (it becomes "
                f"the environment variable STRATOFLOW_PARAM_{name.upper()})"
            )
        params[name] = value
    return params


EMULATOR = click.option(
    "--emulator",
    is_flag=True,
    help="Run the AWS adapters on an embedded moto server instead of the embedded engine "
    "(needs the extra: pip install 'stratoflow[emulator]').",
)


def check_emulator(emulator: bool) -> None:
    """Exit 2 if --emulator is asked for without moto installed."""
    if not emulator:
        return
    import importlib.util

    if importlib.util.find_spec("moto") is None:
        invalid(
            "--emulator needs moto, an optional extra: pip install 'stratoflow[emulator]' "
            "(or leave --emulator out to use the embedded engine)"
        )
