"""What a request's body must be before any route sees it: its media type and, for JSON,
how deeply it nests.

These checks run in the handler itself, so API Gateway's requests get them as well as the
local server's. They exist because a bad body otherwise fails inside Powertools as a 500:
it parses forms and multipart bodies itself (a malformed one raises), refuses other media
types with an exception of its own, and its JSON parser recurses once per level, so a body
nested a hundred thousand levels deep raises RecursionError.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from itertools import accumulate
from typing import Any

MAX_JSON_DEPTH = 64
"""The deepest a JSON body may nest (arrays and objects). The deepest document the API
takes, a trigger's `{"params": {...}}`, nests two levels."""

JSON_MEDIA_TYPES = ("application/json",)
UPLOAD_MEDIA_TYPES = (
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
    "application/json",
)
"""What an upload's body (the workflow file's text, YAML or JSON) may be sent as. The CLI
sends application/json whatever the file; text/plain and forms are refused because they
are what a web page may send to another origin without asking first (a CORS "simple"
request)."""

UPLOAD_PATH = "/workflows"
_METHODS_WITH_BODY = ("POST", "PUT", "PATCH", "DELETE")

# A JSON string, escapes included, in the unrolled form that never backtracks.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class BodyProblem(Exception):
    """A request body refused before routing: the status and the message to answer."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def accepted_media_types(path: str) -> tuple[str, ...]:
    return UPLOAD_MEDIA_TYPES if path == UPLOAD_PATH else JSON_MEDIA_TYPES


def check_body(event: dict[str, Any]) -> None:
    """Raise BodyProblem if the event's body cannot go to its route: 415 for a media type
    the route does not take (given with or without a body) or a body sent without one,
    400 for JSON nested deeper than MAX_JSON_DEPTH."""
    method = str(event.get("httpMethod") or "").upper()
    if method not in _METHODS_WITH_BODY:
        return  # GET, HEAD and OPTIONS routes read no body
    path = str(event.get("path") or "")
    body = event.get("body") or ""
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    given = str(headers.get("content-type") or "").strip()
    media = given.split(";")[0].strip().lower()
    accepted = accepted_media_types(path)
    wanted = " or ".join([", ".join(accepted[:-1]), accepted[-1]] if accepted[:-1] else accepted)
    if media and media not in accepted:
        raise BodyProblem(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {given!r} is not accepted by {method} {path}: send {wanted}",
        )
    if body and not media:
        raise BodyProblem(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"{method} {path} got a body without a Content-Type: send {wanted}",
        )
    # An upload is a workflow file, YAML or JSON whatever its media type; the loader
    # bounds its nesting itself (and names the file in its error).
    if body and path != UPLOAD_PATH and _too_deep(body):
        raise BodyProblem(
            HTTPStatus.BAD_REQUEST,
            f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels (arrays and objects); "
            "no document of this API nests more than a few",
        )


def _too_deep(text: str) -> bool:
    # Fewer brackets than the limit cannot nest beyond it: most bodies stop here.
    opening = text.count("[") + text.count("{")
    return opening > MAX_JSON_DEPTH and json_depth(text) > MAX_JSON_DEPTH


def json_depth(text: str) -> int:
    """How deep `text` nests, as far as a JSON parser would read it: the most arrays and
    objects open at once, brackets inside strings not counted. Found without recursion and
    without a Python loop over the text: regular expressions cut out the strings and
    everything but the brackets, and the deepest running count of the rest is the depth.

    For a text that is not valid JSON the answer may be larger than what a parser would
    reach before its error (an unterminated string's brackets count), never smaller, so a
    limit checked with it holds for the parser."""
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    # The running count of open brackets, in C (map, accumulate, max): about 60 ms a MiB.
    return max(accumulate(map(_STEP.__getitem__, brackets), initial=0))
