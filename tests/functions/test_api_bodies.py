"""What the API handler makes of a bad body, as API Gateway hands it over (the local server
passes the same events): 4xx naming the problem, never a 500."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from stratoflow.handlers import api
from stratoflow.handlers.api.bodies import MAX_JSON_DEPTH, json_depth
from stratoflow.local.events import LambdaContext, api_gateway_event
from stratoflow.local.runtime import LocalRuntime


def _call(
    rt: LocalRuntime, method: str, target: str, body: str | None, content_type: str | None
) -> tuple[int, Any]:
    headers = {"Content-Type": content_type} if content_type else {}
    parts = urlsplit(target)
    event = api_gateway_event(
        method, parts.path, query=parse_qsl(parts.query), headers=headers, body=body
    )
    resp = api.handle(event, LambdaContext("stratoflow-api", 29), rt.wiring)
    return resp["statusCode"], json.loads(resp["body"])


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        ("", "text/plain", 415, "'text/plain' is not accepted by POST"),
        (None, "text/plain", 415, "send application/json"),
        ("", "multipart/form-data", 415, "multipart/form-data"),
        ("a=1", "application/x-www-form-urlencoded", 415, "send application/json"),
        ('{"params": {}}', None, 415, "without a Content-Type"),
        ("[" * 100_000 + "]" * 100_000, "application/json", 400, "nested deeper than 64"),
        ("[" * 100_000, "application/json", 400, "nested deeper than 64"),
        ("{" * 100_000, "application/json; charset=utf-8", 400, "nested deeper than 64"),
    ],
    ids=[
        "empty-text",
        "no-body-text",
        "multipart-no-boundary",
        "form",
        "no-content-type",
        "deep",
        "deep-unclosed",
        "deep-objects",
    ],
)
def test_a_bad_trigger_body_is_a_4xx_naming_the_problem(
    bare: LocalRuntime, body: str | None, content_type: str | None, status: int, words: str
) -> None:
    got, doc = _call(bare, "POST", "/workflows/anything/runs", body, content_type)
    assert (got, words in doc["message"]) == (status, True), doc


def test_an_upload_is_refused_as_text_plain_or_a_form(bare: LocalRuntime) -> None:
    text = "id: x\ntasks: [{id: a, command: 'true'}]\n"
    for kind in ("text/plain", "application/x-www-form-urlencoded"):
        status, doc = _call(bare, "POST", "/workflows?name=x.yaml", text, kind)
        assert status == 415 and "application/yaml" in doc["message"], doc


def test_a_body_without_content_type_on_a_route_that_reads_none_is_refused(
    bare: LocalRuntime,
) -> None:
    assert _call(bare, "POST", "/runs/r/cancel", "x", None)[0] == 415
    assert _call(bare, "POST", "/runs/r/cancel", None, None)[0] == 404  # no body: the route


def test_json_within_the_depth_limit_reaches_the_route(bare: LocalRuntime) -> None:
    """Brackets inside strings do not count; a params value must be a string (400 from
    validation, not from the depth check)."""
    inside = json.dumps({"params": {"x": "[[[[{{{{" * 50}})
    status, doc = _call(bare, "POST", "/workflows/no-such/runs", inside, "application/json")
    assert status == 404, doc
    nested = '{"params": ' + '{"a": ' * (MAX_JSON_DEPTH - 2) + "1" + "}" * (MAX_JSON_DEPTH - 1)
    status, doc = _call(bare, "POST", "/workflows/no-such/runs", nested, "application/json")
    assert status == 400 and "nested deeper" not in doc["message"], doc


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("{}", 1),
        ('[1, [2, {"a": [3]}]]', 4),
        ('["[[[[", "\\"[[[", {"k]": "}"}]', 2),
        ("[[[", 3),
        ("]]][", 0),
        ("", 0),
    ],
)
def test_json_depth_counts_open_brackets_outside_strings(text: str, depth: int) -> None:
    assert json_depth(text) == depth


def test_json_depth_of_six_mib_is_linear_and_needs_no_recursion() -> None:
    body = "[" * (3 * 1024 * 1024) + "]" * (3 * 1024 * 1024)
    began = time.perf_counter()
    assert json_depth(body) == 3 * 1024 * 1024
    # About 0.4 s idle; the bound only catches a non-linear scan (a loaded 2-core machine
    # has run this 6x slower).
    assert time.perf_counter() - began < 10
