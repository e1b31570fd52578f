"""Lambda entry point of the REST API (handler: functions/api/handler.handler)."""

from stratoflow.handlers.api import handler

__all__ = ["handler"]
