"""Lambda entry point of the dispatcher function (handler: functions/dispatcher/handler.handler).

The handler's code lives in the stratoflow package (stratoflow.handlers.dispatcher) so that the
local runtime, which users get from `pip install stratoflow`, calls the very same function.
"""

from stratoflow.handlers.dispatcher import handler

__all__ = ["handler"]
