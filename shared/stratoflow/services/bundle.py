"""The `Ports` bundle every use case takes, and the queue limits the use cases share."""

from __future__ import annotations

from dataclasses import dataclass, field

from stratoflow.ports import (
    Clock,
    CompletionQueue,
    CredentialSource,
    DefinitionStore,
    EventPublisher,
    IdSource,
    LogReader,
    LogText,
    Metrics,
    NoSecrets,
    NoWorkers,
    ProcessEnvironment,
    RunStore,
    SecretSource,
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
    credentials: CredentialSource = field(default_factory=ProcessEnvironment)
    """What a command's environment starts from, with its credentials (invariant 12)."""
    secrets: SecretSource = field(default_factory=NoSecrets)


class _NoLogs:
    def read(self, ref: str) -> LogText:
        return LogText(text="", found=False)
