"""Lambda entry point of the loader function (handler: functions/loader/handler.handler).

The handler's code lives in the stratoflow package (stratoflow.handlers.loader) so that the
local runtime, which users get from `pip install stratoflow`, calls the very same function.
"""

from stratoflow.handlers.loader import handler

__all__ = ["handler"]
