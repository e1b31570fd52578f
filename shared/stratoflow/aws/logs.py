"""Reading an attempt's full output back, wherever its runner wrote it.

A log reference (recorded with the attempt when it is claimed) is either
  file:<path>                               a local run's log file, or
  cwl|<group>|<stream>|<log name>[|<ms>]    CloudWatch Logs: the stream of the Lambda
                                            function or Fargate task that ran it, where the
                                            output sits between the runner's markers
                                            (written after <ms>, epoch milliseconds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from stratoflow.aws.clients import AwsClients
from stratoflow.ports import LogText
from stratoflow.runner.logfiles import END_MARKER, MAX_LOG_BYTES, START_MARKER, read_log_file


class AttemptLogReader:
    """`LogReader` for both kinds of reference."""

    def __init__(self, clients: AwsClients | None) -> None:
        self._clients = clients

    def read(self, ref: str) -> LogText:
        if ref.startswith("file:"):
            return read_log_file(Path(ref[5:]))
        if ref.startswith("cwl|") and self._clients is not None:
            parts = ref.split("|")
            if len(parts) in (4, 5):
                since = int(parts[4]) if len(parts) == 5 and parts[4].isdigit() else None
                return self._read_cloudwatch(parts[1], parts[2], parts[3], since)
        if ref and not ref.startswith(("cwl|", "file:")):
            return read_log_file(Path(ref))  # a bare path, as older local runs recorded
        return LogText(text="", found=False)

    def _read_cloudwatch(
        self, group: str, stream: str, name: str, since: int | None = None
    ) -> LogText:
        start, end = START_MARKER.format(name=name), END_MARKER.format(name=name)
        logs: Any = self._clients.client("logs") if self._clients else None
        kwargs: dict[str, Any] = {
            "logGroupName": group,
            "logStreamNames": [stream],
        }
        if since is not None:
            kwargs["startTime"] = since
        lines: list[str] = []
        inside = False
        try:
            while True:
                resp = logs.filter_log_events(**kwargs)
                for event in resp.get("events", []):
                    message = str(event.get("message", ""))
                    bare = message.rstrip("\n")
                    if bare == start:
                        inside, lines = True, []
                        continue
                    if inside and bare == end:
                        return LogText(text=_tail("".join(lines)), found=True)
                    if inside:
                        lines.append(message if message.endswith("\n") else message + "\n")
                token = resp.get("nextToken")
                if not token:
                    break
                kwargs["nextToken"] = token
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return LogText(text="", found=False)
            raise
        return LogText(text=_tail("".join(lines)), found=inside)


def _tail(text: str) -> str:
    data = text.encode("utf-8")
    if len(data) <= MAX_LOG_BYTES:
        return text
    return data[-MAX_LOG_BYTES:].decode("utf-8", "ignore")
