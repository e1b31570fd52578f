"""Where an operating command goes (`--api`, `--stack`, `--endpoint-url`, or the running
`stratoflow local up`) and one request to that REST API, its failures as exit codes: 2 it
could not be sent (nothing done), 3 it was sent and no answer came, 1 the API failed."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
from rich.markup import escape

from stratoflow.cli.exits import EXIT_FAILED, EXIT_UNKNOWN, err_console, invalid
from stratoflow.client import ApiResponse, OutcomeUnknown, Target, TargetError, resolve

F = TypeVar("F", bound=Callable[..., Any])
RESEND = 3
"""Times a trigger or a cancel whose outcome is unknown is sent again (each is safe to
repeat: a trigger carries its Idempotency-Key, a second cancel changes nothing)."""


def target_options(f: F) -> F:
    """--api / --stack / --endpoint-url: where the command goes."""
    f = click.option(
        "--endpoint-url",
        default=None,
        metavar="URL",
        help="An AWS endpoint with a stratoflow engine (LocalStack: http://localhost:4566).",
    )(f)
    f = click.option(
        "--stack",
        default=None,
        metavar="NAME",
        help="A deployed stratoflow stack (its API URL from its outputs); env STRATOFLOW_STACK.",
    )(f)
    f = click.option(
        "--api",
        default=None,
        metavar="URL",
        help="The stratoflow REST API's URL; env STRATOFLOW_API. "
        "Default: the running `stratoflow local up`.",
    )(f)
    return f


def find_target(api: str | None, stack: str | None, endpoint_url: str | None) -> Target:
    """The engine the target options name; exit 2 if it cannot be found."""
    try:
        return resolve(api, stack, endpoint_url)
    except TargetError as err:
        invalid(str(err))


def call(target: Target, method: str, path: str, *, check: str | None = None, **kwargs: Any) -> Any:
    """One request; exit 2 if it could not be sent (nothing done), 3 if it was sent and
    no answer came (it may have been done: `check` names the command that tells)."""
    try:
        resp = target.client.request(method, path, **kwargs)
    except TargetError as err:
        invalid(str(err))
    except OutcomeUnknown as err:
        err_console.print(
            "[bold yellow]outcome unknown:[/] the request may have been accepted; check "
            f"`{escape(check or 'stratoflow runs <workflow>')}` ({escape(str(err))})",
            soft_wrap=True,
        )
        sys.exit(EXIT_UNKNOWN)
    if resp.ok:
        return resp.doc
    _fail(resp)


def _fail(resp: ApiResponse) -> NoReturn:
    if resp.status < 500:
        invalid(resp.message)
    err_console.print(f"[bold red]error:[/] the API failed: {escape(resp.message)}", soft_wrap=True)
    sys.exit(EXIT_FAILED)
