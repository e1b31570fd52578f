"""The `Ports` bundle every use case takes, and the queue limits the use cases share."""

from __future__ import annotations

from dataclasses import dataclass, field

from stratoflow.ports import (
    Clock,
    CompletionQueue,
    DefinitionStore,
    EventPublisher,
    IdSource,
    LogReader,
    LogText,
    Metrics,
    NoWorkers,
    RunStore,
    TaskQueue,
    Workers,
)

SQS_MAX_DELAY_SECONDS = 900
SHORT_WAIT_SECONDS = 1.0


@dataclass
class Ports:
    """Everything a use case may touch. Built by `stratoflow.bootstrap`."""

    runs: RunStore
    definitions: DefinitionStore
    tasks: TaskQueue
    completions: CompletionQueue
    clock: Clock
    ids: IdSource
    events: EventPublisher
    metrics: Metrics
    workers: Workers = field(default_factory=NoWorkers)
    logs: LogReader = field(default_factory=lambda: _NoLogs())


class _NoLogs:
    def read(self, ref: str) -> LogText:
        return LogText(text="", found=False)
