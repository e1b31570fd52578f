"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import os
from itertools import count
from pathlib import Path
from typing import Any

from stratoflow import services
from stratoflow.core.model import Workflow
from stratoflow.local.runtime import LocalRuntime

_ids = count()


def unique_id(stem: str) -> str:
    """A workflow id no other test in this process uses."""
    return f"{stem}-{os.getpid()}-{next(_ids)}"


def run_workflow(
    rt: LocalRuntime,
    spec: dict[str, Any],
    workdir: Path,
    params: dict[str, str] | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """Register `spec` (id made unique), run it to the end, return the run document."""
    spec = {**spec, "id": unique_id(spec.get("id", "wf"))}
    wf = Workflow.model_validate(spec)
    version = rt.register(wf, "test")
    run_id = rt.request_run(wf.id, version, params=params, workdir=str(workdir))
    rt.wait(run_id, timeout=timeout)
    assert rt.ports is not None
    doc = services.run_status(rt.ports, run_id)
    assert doc is not None
    return doc


def statuses(doc: dict[str, Any]) -> dict[str, str]:
    return {tid: t["status"] for tid, t in doc["tasks"].items()}
