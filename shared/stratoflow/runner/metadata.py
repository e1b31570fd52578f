"""What a Fargate task knows about itself, from the ECS task metadata endpoint (v4).

The runner records its task ARN with the attempt (so a cancel can StopTask it) and its
awslogs group and stream (so `stratoflow logs` finds the attempt's output). Outside ECS the
endpoint's variable is unset and both are None.
"""

from __future__ import annotations

import functools
import json
import os
import urllib.request
from typing import Any

METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"
TIMEOUT_SECONDS = 2.0


def _get(path: str) -> dict[str, Any] | None:
    base = os.environ.get(METADATA_ENV)
    if not base:
        return None
    try:
        with urllib.request.urlopen(base + path, timeout=TIMEOUT_SECONDS) as resp:
            data = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@functools.cache
def task_arn() -> str | None:
    data = _get("/task")
    arn = data.get("TaskARN") if data else None
    return str(arn) if arn else None


@functools.cache
def awslogs_stream() -> tuple[str, str] | None:
    data = _get("")
    options = (data or {}).get("LogOptions") or {}
    group, stream = options.get("awslogs-group"), options.get("awslogs-stream")
    return (str(group), str(stream)) if group and stream else None
