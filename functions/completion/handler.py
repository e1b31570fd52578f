"""Lambda entry point of the completion function (handler: functions/completion/handler.handler).

The handler's code lives in the stratoflow package (stratoflow.handlers.completion) so that the
local runtime, which users get from `pip install stratoflow`, calls the very same function.
"""

from stratoflow.handlers.completion import handler

__all__ = ["handler"]
