"""Property-based test of the REST API: schemathesis generates requests from
docs/openapi.json (valid and invalid ones) and sends them to a real `stratoflow local up`.

Whatever it sends, the API must not answer 5xx, must answer with a status code the document
declares, and its JSON must match the declared schema.
"""

from __future__ import annotations

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

from tests.support import ROOT, local_up

schema = schemathesis.openapi.from_path(str(ROOT / "docs" / "openapi.json"))

KNOWN = """\
id: fuzz
params: {who: world}
tasks:
  - id: a
    command: echo "$STRATOFLOW_PARAM_WHO"
"""


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("fuzz")
    folder, home = base / "flows", base / "home"
    folder.mkdir()
    (folder / "fuzz.yaml").write_text(KNOWN)  # something real for the ids that hit
    with local_up(folder, home) as up:
        yield up.api


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_api_never_answers_5xx_and_keeps_to_its_document(case: Any, api_url: str) -> None:
    case.call_and_validate(
        base_url=api_url,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
