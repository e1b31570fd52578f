"""REST API Lambda: operate workflows and runs (API Gateway REST API, proxy integration).

Routes are Powertools' REST resolver with request validation, one router per resource
(`workflows`, `runs`); their documents are in `schemas`, the error statuses in `errors`,
what a body must be (media type, JSON depth) in `bodies`, checked before routing.
The OpenAPI document is generated from them (`openapi_document`, post-processed in
`openapi`, kept in docs/openapi.json). `stratoflow local up` serves this same handler over
HTTP (stratoflow.local.http), and the CLI talks to either.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from stratoflow.bootstrap import Wiring, environment
from stratoflow.handlers.api import (
    bodies,
    errors,
    graph,
    logpages,
    openapi,
    runs,
    wiring,
    workflows,
)
from stratoflow.handlers.observability import tracer

__all__ = ["app", "handle", "handler", "openapi_document"]

app = APIGatewayRestResolver(enable_validation=True)
app.include_router(workflows.router)
app.include_router(runs.router)
app.include_router(graph.router)
app.include_router(logpages.router)


_RESOLVING = threading.RLock()
"""Held while the resolver answers one request. Powertools' resolver keeps the request
being answered on itself (`current_event`, `context`, the matched route), as a Lambda
execution environment answers one request at a time; `stratoflow local up`'s server and
the CLI's in-process API call it from several threads, and without this one request read
another's event or lost its route (a 500). Reentrant: a route may call the API again."""


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of this API, as kept in docs/openapi.json."""
    return openapi.build(app)


errors.register(app, openapi_document)


def _refused(problem: bodies.BodyProblem) -> dict[str, Any]:
    return {
        "statusCode": int(problem.status),
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"message": problem.message}),
        "isBase64Encoded": False,
    }


def handle(event: dict[str, Any], context: Any, wired: Wiring) -> dict[str, Any]:
    """Answer one API Gateway proxy event with the engine `wired` is."""
    # Checked before the resolver sees the body: Powertools parses it first, and a bad one
    # fails there as a 500 (see bodies).
    try:
        bodies.check_body(event)
    except bodies.BodyProblem as problem:
        return _refused(problem)
    with _RESOLVING, wiring.serving(wired):
        return app.resolve(event, context)


@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context, environment())
