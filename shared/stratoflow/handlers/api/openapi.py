"""The OpenAPI document, as kept in docs/openapi.json: Powertools' generated document,
post-processed to say what the API really answers."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from stratoflow.handlers.api.bodies import UPLOAD_MEDIA_TYPES

API_TITLE = "stratoflow"
API_VERSION = "1.0.0"
MAX_UPLOAD_BYTES = 5 * 1024 * 1024


def build(app: APIGatewayRestResolver) -> dict[str, Any]:
    """The OpenAPI document of `app`'s routes."""
    text = app.get_openapi_json_schema(
        title=API_TITLE,
        version=API_VERSION,
        description="Operate stratoflow workflows and runs. Requests to a deployed stack "
        "are signed with AWS SigV4 (IAM auth); the local server (`stratoflow local up`) "
        "takes its own token instead (`Authorization: Bearer TOKEN`, the token in "
        "$STRATOFLOW_HOME/local.json).",
    )
    doc: dict[str, Any] = json.loads(text)
    error = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDocument"}}}
    }
    # The upload's body is the workflow file itself, read raw by the route.
    doc["paths"]["/workflows"]["post"]["requestBody"] = {
        "required": True,
        "description": "the workflow file (YAML or JSON text)",
        "content": {
            media: {"schema": {"type": "string", "maxLength": MAX_UPLOAD_BYTES}}
            for media in UPLOAD_MEDIA_TYPES
        },
    }
    # Our validation errors are 400s with an ErrorDocument (see errors._invalid_request),
    # not Powertools' 422; every operation may also answer 404 for an unknown id or route.
    # Any request that may carry a body may name a media type its route does not take.
    for operations in doc["paths"].values():
        for method, operation in operations.items():
            responses = operation["responses"]
            responses.pop("422", None)
            responses.setdefault("400", {"description": "invalid request", **error})
            responses.setdefault("404", {"description": "not found", **error})
            if "requestBody" in operation or method in ("post", "put", "patch"):
                responses.setdefault(
                    "415", {"description": "a media type this route does not take", **error}
                )
    doc["paths"]["/workflows"]["post"]["responses"].setdefault(
        "413", {"description": "the file is over 5 MiB", **error}
    )
    schemas = doc.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    doc["components"]["securitySchemes"] = {
        "sigv4": {
            "type": "apiKey",
            "name": "Authorization",
            "in": "header",
            "x-amazon-apigateway-authtype": "awsSigv4",
            "description": "AWS SigV4 (IAM), on a deployed stack.",
        },
        "localToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "The local server's token, `token` in $STRATOFLOW_HOME/local.json "
            "(also taken as header X-Stratoflow-Token, or the cookie stratoflow_token that "
            "opening the API with ?token=TOKEN sets).",
        },
    }
    doc["security"] = [{"sigv4": []}, {"localToken": []}]
    return doc
