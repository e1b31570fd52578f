"""`stratoflow console`: the web console for a deployed stack (or any stratoflow API),
served on 127.0.0.1 by `stratoflow.console.proxy` (imported when the command runs: the
server and the API client stay out of every other command's start-up)."""

from __future__ import annotations

import threading

import click

from stratoflow.cli.exits import invalid
from stratoflow.console import DEFAULT_PORT


@click.command("console")
@click.option(
    "--stack",
    default=None,
    metavar="NAME",
    help="A deployed stratoflow stack (its API URL from its outputs); env STRATOFLOW_STACK.",
)
@click.option(
    "--api", default=None, metavar="URL", help="A stratoflow REST API's URL; env STRATOFLOW_API."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="The local port (0: any free one).",
)
def console(stack: str | None, api: str | None, port: int) -> None:
    """Serve the web console on 127.0.0.1 for a deployed stack: its API calls are signed
    with your AWS credentials (SigV4). A running `stratoflow local up` serves the console
    itself, at the URL it prints."""
    import os

    from stratoflow.client import TargetError, resolve
    from stratoflow.console.proxy import ConsoleProxy

    if not (stack or api or os.environ.get("STRATOFLOW_STACK") or os.environ.get("STRATOFLOW_API")):
        invalid(
            "give --stack NAME or --api URL (a running `stratoflow local up` serves the "
            "console itself: open the URL it printed)"
        )
    try:
        target = resolve(api, stack, None)
    except TargetError as err:
        invalid(str(err))
    try:
        proxy = ConsoleProxy(target, port).start()
    except OSError as err:
        invalid(f"--port {port}: cannot listen on 127.0.0.1:{port} ({err.strerror or err})")
    click.echo(
        f"stratoflow console for {target.client.where}\n"
        f"open {proxy.url}/?token={proxy.token} (Ctrl-C to stop)",
        err=True,
    )
    stopped = threading.Event()
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
