"""The value types of a workflow file's fields: durations (a number of seconds or a
string with a unit), maps of text (environment, params), secret references; each with the
JSON Schema editors see. Used by `stratoflow.core.model`."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_SCHEMA_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_DURATION_HINT = 'a duration such as 30 (seconds), "90s", "5m" or "1h"'


def parse_duration(value: Any) -> float:
    """Seconds from a number (seconds) or a string like "90s", "5m", "1h", "1.5h", "250ms"."""
    seconds: float | None = None
    # bool is an int subclass: `timeout: yes` in YAML must not mean one second.
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    # YAML's .inf and .nan are floats; neither is a usable timeout or delay.
    if seconds is None or not math.isfinite(seconds):
        raise ValueError(f"expected {_DURATION_HINT}, got {quoted(value)}")
    return seconds


def quoted(value: Any) -> str:
    # Written as in a JSON file, like the loader's other messages ("5 minutes", true).
    return json.dumps(value) if isinstance(value, str | bool) or value is None else repr(value)


def _duration_schema(**number_bound: float) -> WithJsonSchema:
    """JSON Schema for editors: a number of seconds, or a string with a unit."""
    number = {"type": "number", **number_bound}
    text = {"type": "string", "pattern": _DURATION_SCHEMA_PATTERN}
    return WithJsonSchema({"anyOf": [number, text]})


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[
    float, BeforeValidator(parse_duration), Field(gt=0), _duration_schema(exclusiveMinimum=0)
]
NonNegativeDuration = Annotated[
    float, BeforeValidator(parse_duration), Field(ge=0), _duration_schema(minimum=0)
]


def text_values(value: Any) -> Any:
    """A map's scalar values as the text a variable holds (`8080`, `true`); anything but a
    map is left for validation to reject."""
    if isinstance(value, dict):
        return {k: _scalar_text(v) for k, v in value.items()}
    return value


def _scalar_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


# YAML reads `PORT: 8080` as an int; environment variables and params only hold text.
_TEXT_MAP_SCHEMA = WithJsonSchema(
    {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
)
TextMap = Annotated[dict[str, str], _TEXT_MAP_SCHEMA]
SecretMap = Annotated[
    dict[str, str],
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": {"type": "string", "pattern": "^(ssm|secretsmanager):.+$"},
        }
    ),
]
PARAMS_SCHEMA = WithJsonSchema(
    {
        "type": "object",
        "additionalProperties": {
            "anyOf": [
                {"type": ["string", "number", "boolean"]},
                {
                    "type": "object",
                    "properties": {
                        "default": {"type": ["string", "number", "boolean"]},
                        "secret": {"type": "boolean"},
                    },
                    "additionalProperties": False,
                },
            ]
        },
    }
)
