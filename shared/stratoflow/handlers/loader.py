"""Loader Lambda: registers workflow files uploaded under the bucket's workflows/ prefix.

A valid file becomes a new immutable version and the active one (its schedule too); an
invalid one is reported in an object beside the upload (`<key>.error.txt`), in the log and
as a metric, and the previous version stays active. Deleting the file deactivates the
workflow it defined; a replayed S3 event (same object version) is processed once.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event

from stratoflow import bootstrap, services
from stratoflow.config import WORKFLOWS_PREFIX
from stratoflow.core.loader import WorkflowFileError, load_workflow_text
from stratoflow.handlers.observability import logger, tracer

ERROR_SUFFIX = ".error.txt"


@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context, bootstrap.environment())


def handle(event: dict[str, Any], context: Any, wiring: bootstrap.Wiring) -> dict[str, Any]:
    ports = wiring.ports
    s3 = wiring.clients.s3
    registered: list[dict[str, Any]] = []
    errors: list[str] = []
    deactivated: list[str] = []
    for record in S3Event(event).records:
        bucket = record.s3.bucket.name
        key = unquote_plus(record.s3.get_object.key)
        if not key.startswith(WORKFLOWS_PREFIX) or key.endswith(ERROR_SUFFIX):
            continue
        source = f"s3://{bucket}/{key}"
        obj = record.s3.get_object
        # S3 delivers at least once: an event is its object version (or sequencer) at most once
        event_id = f"{record.event_name}:{obj.version_id or obj.sequencer or obj.etag}"
        if not ports.definitions.claim_source_event(source, event_id):
            logger.info("duplicate S3 event ignored", extra={"key": key, "event": event_id})
            continue
        if record.event_name.startswith("ObjectRemoved"):
            gone = ports.definitions.deactivate_source(source)
            if gone:
                deactivated.append(gone)
                logger.info("workflow deactivated", extra={"workflow_id": gone, "key": key})
            continue
        if not record.event_name.startswith("ObjectCreated"):
            continue
        text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8", "replace")
        try:
            workflow = load_workflow_text(text, key)
        except WorkflowFileError as err:
            logger.warning("invalid workflow upload", extra={"key": key, "error": err.message})
            ports.metrics.count("WorkflowLoadFailed", key)
            s3.put_object(Bucket=bucket, Key=key + ERROR_SUFFIX, Body=err.message.encode())
            ports.definitions.record_source_error(source, err.message, _now(ports))
            errors.append(err.message)
            continue
        meta = services.register_source(ports, workflow, source)
        s3.delete_object(Bucket=bucket, Key=key + ERROR_SUFFIX)
        registered.append({"workflow_id": workflow.id, "version": meta.active_version, "key": key})
        logger.info("workflow registered", extra=registered[-1])
    return {"registered": registered, "errors": errors, "deactivated": deactivated}


def _now(ports: services.Ports) -> str:
    return ports.clock.now().isoformat()
