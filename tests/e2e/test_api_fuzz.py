"""Property-based test of the REST API: schemathesis generates requests from
docs/openapi.json (valid and invalid ones) and sends them to a real `stratoflow local up`.

Whatever it sends, the API must not answer 5xx, must answer with a status code the document
declares, and its JSON must match the declared schema. Then the hostile bodies schemathesis
does not think of (deep nesting, media types the route does not take, none at all) go to
every operation that takes a request body: a 4xx the document declares, always.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import ROOT, http_json, local_up

schema = schemathesis.openapi.from_path(str(ROOT / "docs" / "openapi.json"))

KNOWN = """\
id: fuzz
params: {who: world}
tasks:
  - id: a
    command: echo "$STRATOFLOW_PARAM_WHO"
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The API's URL and its token."""
    base = tmp_path_factory.mktemp("fuzz")
    folder, home = base / "flows", base / "home"
    folder.mkdir()
    (folder / "fuzz.yaml").write_text(KNOWN)  # something real for the ids that hit
    with local_up(folder, home) as up:
        yield up.api, json.loads((home / "local.json").read_text())["token"]


@pytest.fixture(scope="module")
def api_url(served: tuple[str, str]) -> str:
    return served[0]


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_api_never_answers_5xx_and_keeps_to_its_document(
    case: Any, served: tuple[str, str]
) -> None:
    api, token = served
    case.call_and_validate(
        base_url=api,
        headers={"Authorization": f"Bearer {token}"},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )


DOCUMENT = json.loads((ROOT / "docs" / "openapi.json").read_text())
# Real ids where the path has them: the request reaches the route's body handling.
PATH_VALUES = {"workflow_id": "fuzz", "run_id": "fuzz@nope", "task_id": "a", "version": "1"}
WITH_BODY = [
    (method.upper(), path)
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
    if "requestBody" in operation or method in ("post", "put", "patch")
]
HOSTILE = {
    "deep-json": ("application/json", "[" * 50_000 + "]" * 50_000),
    "deep-json-unclosed": ("application/json", '{"params": ' + "{" * 50_000),
    "text-plain": ("text/plain", '{"params": {}}'),
    "empty-text-plain": ("text/plain", ""),
    "form": ("application/x-www-form-urlencoded", "params=1"),
    "multipart-no-boundary": ("multipart/form-data", "--x--"),
    "no-content-type": (None, '{"params": {}}'),
}


@pytest.mark.parametrize(("method", "path"), WITH_BODY, ids=[f"{m} {p}" for m, p in WITH_BODY])
@pytest.mark.parametrize("hostile", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_bodies_get_a_4xx_the_document_declares(
    served: tuple[str, str], method: str, path: str, hostile: str
) -> None:
    content_type, body = HOSTILE[hostile]
    target = path.format(**PATH_VALUES)
    query = [("name", "fuzz-hostile.yaml")] if path == "/workflows" else None
    status, doc = http_json(
        served[0],
        method,
        target,
        text=body,
        query=query,
        headers={"Content-Type": content_type} if content_type else {"Content-Type": ""},
    )
    declared = DOCUMENT["paths"][path][method.lower()]["responses"]
    assert 400 <= status < 500 and str(status) in declared, (status, doc)
    assert doc["message"]
