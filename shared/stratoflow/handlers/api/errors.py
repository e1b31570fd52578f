"""Every error the API answers, in one place: one exception handler per error type.

Every error is JSON `{"message": ...}` naming what was wrong: 4xx for the caller's
mistakes, never a 5xx for bad input. Routes raise; the handlers here choose the status:

- `ApiError`: the status it carries (a route's own check);
- `RequestValidationError` (Powertools' validation of path, query, header and body): 400;
- `RequestUnsupportedContentType` (a body Powertools cannot parse): 415 (`bodies` refuses
  such bodies before routing; this is the backstop);
- `LookupError` (no such workflow, run, task or attempt): 404;
- `WorkflowInactive`, `IdempotencyConflict`, `RunNotRetryable`: 409;
- anything else: 500 naming the request id, the details in the function's log;
- no route: 405 when the path takes other methods, else 404.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

from stratoflow import services
from stratoflow.handlers.observability import logger
from stratoflow.ports import RunNotRetryable


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(status: HTTPStatus, body: Any) -> Response[Any]:
    return Response(
        status_code=int(status),
        content_type=content_types.APPLICATION_JSON,
        body=body,
    )


def _message(status: HTTPStatus, message: str) -> Response[Any]:
    return json_response(status, {"message": message})


def register(app: APIGatewayRestResolver, document: Callable[[], dict[str, Any]]) -> None:
    """Register the error handlers on `app`; `document` gives its OpenAPI document (the
    routes and their methods, for the 405s)."""

    @app.exception_handler(ApiError)
    def _api_error(err: ApiError) -> Response[Any]:
        return _message(err.status, err.message)

    @app.exception_handler(RequestValidationError)
    def _invalid_request(err: RequestValidationError) -> Response[Any]:
        problems = []
        for e in err.errors():
            if e.get("type") == "json_invalid":
                problems.append("body: not valid JSON")
                continue
            loc = e.get("loc", ())
            where = ".".join(str(p) for p in loc if p != "body" or len(e["loc"]) == 1)
            problems.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
        return _message(HTTPStatus.BAD_REQUEST, "invalid request: " + "; ".join(problems))

    @app.exception_handler(RequestUnsupportedContentType)
    def _unsupported_media_type(err: RequestUnsupportedContentType) -> Response[Any]:
        return _message(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "the body's Content-Type is not accepted here"
        )

    @app.exception_handler(LookupError)
    def _not_found(err: LookupError) -> Response[Any]:
        if isinstance(err, KeyError | IndexError):  # a bug, not an unknown id
            return _unexpected(err)
        return _message(HTTPStatus.NOT_FOUND, str(err))

    @app.exception_handler([services.WorkflowInactive, services.IdempotencyConflict])
    @app.exception_handler(RunNotRetryable)
    def _conflict(err: Exception) -> Response[Any]:
        return _message(HTTPStatus.CONFLICT, str(err))

    @app.exception_handler(Exception)
    def _unexpected(err: Exception) -> Response[Any]:
        # The details stay in the function's log; the caller gets the id to find them by.
        logger.exception("unexpected error")
        request_id = app.current_event.request_context.request_id or "unknown"
        return _message(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            f"internal error (request {request_id}); see the api function's log",
        )

    @functools.cache
    def route_patterns() -> list[tuple[re.Pattern[str], list[str]]]:
        return [
            (re.compile(re.sub(r"\{[^}]+\}", "[^/]+", path)), list(methods))
            for path, methods in document()["paths"].items()
        ]

    @app.not_found
    def _no_route(_: Exception) -> Response[Any]:
        ev = app.current_event
        allowed = sorted(
            method.upper()
            for pattern, methods in route_patterns()
            if pattern.fullmatch(ev.path)
            for method in methods
        )
        if allowed:
            return Response(
                status_code=int(HTTPStatus.METHOD_NOT_ALLOWED),
                content_type=content_types.APPLICATION_JSON,
                body={"message": f"{ev.path} takes {', '.join(allowed)}, not {ev.http_method}"},
                headers={"Allow": ", ".join(allowed)},
            )
        return _message(HTTPStatus.NOT_FOUND, f"no route {ev.http_method} {ev.path}")
