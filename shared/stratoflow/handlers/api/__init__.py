"""REST API Lambda: operate workflows and runs (API Gateway REST API, proxy integration).

Routes are Powertools' REST resolver with request validation, one router per resource
(`workflows`, `runs`); their documents are in `schemas`, the error statuses in `errors`.
The OpenAPI document is generated from them (`openapi_document`, post-processed in
`openapi`, kept in docs/openapi.json). `stratoflow local up` serves this same handler over
HTTP (stratoflow.local.http), and the CLI talks to either.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from stratoflow.handlers.api import errors, graph, openapi, runs, workflows
from stratoflow.handlers.observability import tracer

__all__ = ["app", "handler", "openapi_document"]

app = APIGatewayRestResolver(enable_validation=True)
app.include_router(workflows.router)
app.include_router(runs.router)
app.include_router(graph.router)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of this API, as kept in docs/openapi.json."""
    return openapi.build(app)


errors.register(app, openapi_document)


def _media_type_problem(event: dict[str, Any]) -> dict[str, Any] | None:
    """415 for a JSON route's body sent as something else (a form, multipart…), decided
    before the resolver sees it: Powertools parses forms and multipart bodies itself, and a
    malformed one fails there as a 500. The upload route takes its file as any text."""
    if event.get("httpMethod") not in ("POST", "PUT", "PATCH") or not event.get("body"):
        return None
    if event.get("path") == "/workflows":
        return None
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    kind = str(headers.get("content-type") or "").strip()
    if not kind or kind.split(";")[0].strip().lower() == "application/json":
        return None
    return {
        "statusCode": int(HTTPStatus.UNSUPPORTED_MEDIA_TYPE),
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(
            {"message": f"Content-Type {kind!r} is not accepted here: send application/json"}
        ),
        "isBase64Encoded": False,
    }


@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _media_type_problem(event) or app.resolve(event, context)
