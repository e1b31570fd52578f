"""The API handler answers requests from several threads at once (`stratoflow local up`'s
server and the CLI's in-process API call it so), each with its own event: Powertools'
resolver keeps the request it answers on itself, as one Lambda answers one at a time."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stratoflow import services
from stratoflow.core.model import Workflow
from stratoflow.handlers import api
from stratoflow.local.events import LambdaContext, api_gateway_event
from stratoflow.local.runtime import LocalRuntime
from tests.support import unique_id


def test_requests_answered_at_once_each_get_their_own_answer(runtime: LocalRuntime) -> None:
    # GIVEN two workflows
    assert runtime.ports is not None
    ids = [unique_id("threads-a"), unique_id("threads-b")]
    for wf_id in ids:
        workflow = Workflow.model_validate(
            {"id": wf_id, "tasks": [{"id": "only", "command": "true"}]}
        )
        services.register_workflow(runtime.ports, workflow, f"{wf_id}.yaml")

    def ask(n: int) -> tuple[str, int, Any]:
        wanted = ids[n % 2]
        event = api_gateway_event("GET", f"/workflows/{wanted}")
        resp = api.handle(event, LambdaContext("stratoflow-api", 29), runtime.wiring)
        return wanted, resp["statusCode"], json.loads(resp["body"])

    # WHEN 16 threads ask for one or the other, 400 requests in all, switching threads as
    # often as the interpreter can (as a loaded machine does)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(ask, range(400)))
    finally:
        sys.setswitchinterval(interval)
    # THEN every request was answered 200 with the workflow it asked for
    wrong = [
        (w, s, d.get("workflow_id", d)) for w, s, d in answers if s != 200 or d["workflow_id"] != w
    ]
    assert wrong == []
