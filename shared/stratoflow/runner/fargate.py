"""Container entrypoint of the Fargate executor: `python -m stratoflow.runner.fargate`.

Runs one attempt, given as JSON in STRATOFLOW_TASK_MESSAGE, through the same service and
runner as the Lambda executor, and reports it to the completion queue. Locally the runtime
starts this very module as a process for `executor: fargate` tasks.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from stratoflow import bootstrap, services
from stratoflow.config import ENV_TASK_MESSAGE, Settings
from stratoflow.core.records import TaskMessage
from stratoflow.runner import metadata
from stratoflow.runner.commands import command_runner


def main() -> int:
    body = os.environ.get(ENV_TASK_MESSAGE)
    if not body:
        sys.stderr.write(f"stratoflow fargate runner: {ENV_TASK_MESSAGE} is not set\n")
        return 2
    msg = TaskMessage.from_json(body)
    if msg.not_before is not None:
        # A container has no queue to hand the message back to: wait out the retry delay.
        time.sleep(max(0.0, msg.not_before - time.time()))
        msg = TaskMessage(**{**msg.__dict__, "not_before": None})
    # ECS stops a task with SIGTERM (then SIGKILL after the stop timeout): take it as a
    # cancel, so the command's process tree is killed and the attempt still reported.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runner = command_runner(Settings.from_env().log_dir, cancel=stop)
    wiring = bootstrap.from_environment()
    result = services.execute_task(wiring.ports, msg, runner, worker=metadata.task_arn())
    sys.stderr.write(
        f"stratoflow fargate runner: {msg.task_id} attempt {msg.attempt}: {result.outcome.value}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
