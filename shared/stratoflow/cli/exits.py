"""Exit codes, the contract users' scripts rely on, and how a command stops on bad input.

0: done (the run succeeded, the input is valid); 1: a run failed or was cancelled, or the
engine failed; 2: the input is invalid or the engine cannot be reached, and nothing was
done; 3: a request was sent and no answer came, so it may have been carried out; 130:
interrupted. Messages go to stderr; with --json, stdout carries exactly one JSON document.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_UNKNOWN = 3
"""The request was sent and no answer came: it may have been carried out
(`stratoflow.cli.api.call`)."""
INTERRUPTED = 130

err_console = Console(stderr=True, highlight=False)


def invalid(message: str) -> NoReturn:
    """Print `message` as written (its brackets are not rich markup) and exit 2."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(EXIT_INVALID)
