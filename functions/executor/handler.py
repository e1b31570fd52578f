"""Lambda entry point of the executor function (handler: functions/executor/handler.handler).

The handler's code lives in the stratoflow package (stratoflow.handlers.executor) so that the
local runtime, which users get from `pip install stratoflow`, calls the very same function.
"""

from stratoflow.handlers.executor import handler

__all__ = ["handler"]
