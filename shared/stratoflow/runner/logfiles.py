"""Reading an attempt's log file back (the runner writes one per attempt, invariant 8)."""

from __future__ import annotations

from pathlib import Path

from stratoflow.ports import LogText

START_MARKER = "----- stratoflow output {name} -----"
END_MARKER = "----- end of output {name} -----"
"""Where an attempt's output begins and ends in a stream shared with others (CloudWatch)."""
MAX_LOG_BYTES = 5 * 1024 * 1024
"""At most this much of one attempt's output is returned (the end of it): an API response
must stay under API Gateway's 10 MB and a terminal does not want more."""


def read_log_file(path: Path) -> LogText:
    """The last MAX_LOG_BYTES of the file; found=False if it does not exist (yet)."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - MAX_LOG_BYTES))
            data = f.read()
    except FileNotFoundError:
        return LogText(text="", found=False)
    return LogText(text=data.decode("utf-8", "replace"), found=True)


class FileLogReader:
    """`LogReader` for `file:<path>` references (the embedded engine's only kind)."""

    def read(self, ref: str) -> LogText:
        if ref.startswith("file:"):
            return read_log_file(Path(ref[5:]))
        return LogText(text="", found=False)
