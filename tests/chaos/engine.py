"""Running seeded chaos runs on a runtime and judging them: shared by the tests and by the
engine process the kill test SIGKILLs (`python -m tests.chaos.engine`)."""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stratoflow.config import Resources
from stratoflow.core.model import Workflow
from stratoflow.core.records import RunRecord
from stratoflow.local.runtime import LocalRuntime
from stratoflow.services import execution, mend

from .dags import JOURNAL, DagDesign, generate
from .faults import Chaos, RunFaults, is_lost
from .invariants import Journal, check_run

LEASE_MARGIN_SECONDS = 0.5
KILL_GRACE_SECONDS = 0.5
"""A lease is the task's timeout plus these (2 s and 60 s in production): short, so that an
attempt whose executor died is found lost within seconds. Still longer than the clock's
per-thread jitter, and than the suite's commands live past their timeout (a `sleep` dies
at the SIGTERM), so that a lease never ends while its command runs."""


@dataclass(frozen=True)
class Profile:
    """What the runs of one runtime share: the clock's skew and the visibility timeouts."""

    skew: float
    visibility: tuple[int, int]

    def describe(self) -> str:
        tasks, reports = self.visibility
        return f"clock skew {self.skew:+.0f} s, visibility {tasks}/{reports} s"


PROFILES = (Profile(90.0, (2, 2)), Profile(-90.0, (3, 2)), Profile(0.0, (2, 3)))
RUN_DEADLINE = 240.0
"""Seconds a batch's runs have to end: far beyond what the slowest design needs."""
BLOCK = 20
"""Consecutive seeds that share a profile (so that a batch of them shares a runtime)."""


def profile_of(seed: int) -> Profile:
    return PROFILES[(seed // BLOCK) % len(PROFILES)]


@dataclass
class ChaosRun:
    seed: int
    design: DagDesign
    workflow_id: str
    run_id: str
    workdir: Path
    faults: RunFaults
    violations: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    """Deviations of known issues (docs/reliability.md), tolerated and counted."""
    record: RunRecord | None = None
    tasks: dict[str, Any] = field(default_factory=dict)


QUIET_SECONDS = 4.0
"""A run with no sign of life for this long is mended by the tick (10 minutes in
production): short, so that a run whose report went to the dead-letter queue ends within
the batch's deadline, and so that the mending also meets runs that are alive."""


MENDED: Counter[str] = Counter()
"""Per run id, how many times this process's tick found something to mend in it."""


def _counting(mend_run: Callable[[Any, str], bool]) -> Callable[[Any, str], bool]:
    def counted(ports: Any, run_id: str) -> bool:
        mended = mend_run(ports, run_id)
        if mended:
            MENDED[run_id] += 1
        return mended

    return counted


@contextmanager
def short_leases() -> Iterator[None]:
    """Make the executors of this process claim with short leases, and its tick mend
    quiet runs soon (see above), counting what it mends."""
    saved = execution.LEASE_MARGIN_SECONDS, execution.KILL_GRACE_SECONDS, mend.QUIET_SECONDS
    saved_mend = mend.mend_run
    execution.LEASE_MARGIN_SECONDS = LEASE_MARGIN_SECONDS
    execution.KILL_GRACE_SECONDS = KILL_GRACE_SECONDS
    mend.QUIET_SECONDS = QUIET_SECONDS
    mend.mend_run = _counting(saved_mend)
    try:
        yield
    finally:
        execution.LEASE_MARGIN_SECONDS, execution.KILL_GRACE_SECONDS, mend.QUIET_SECONDS = saved
        mend.mend_run = saved_mend


def start_runtime(home: Path, *, emulator: bool, recover: bool = False) -> LocalRuntime:
    return LocalRuntime(
        state_dir=home, workers=8, redelivery_delay=0.05, emulator=emulator, recover=recover
    ).start()


def prepare(chaos: Chaos, seed: int, root: Path, run_tag: str = "") -> ChaosRun:
    """The design, ids, workdir and faults of seed's run (nothing started yet)."""
    design = generate(seed)
    tag = run_tag or uuid.uuid4().hex[:8]
    workflow_id = f"chaos-{seed}-{tag}"
    workdir = root / f"seed-{seed}"
    workdir.mkdir(parents=True, exist_ok=True)
    run = ChaosRun(
        seed=seed,
        design=design,
        workflow_id=workflow_id,
        run_id=f"{workflow_id}-run",
        workdir=workdir,
        faults=RunFaults.for_seed(seed, workdir),
    )
    chaos.add(run.run_id, workflow_id, run.faults)
    return run


def start(rt: LocalRuntime, run: ChaosRun) -> None:
    version = rt.register(Workflow.model_validate(run.design.spec(run.workflow_id)), "chaos")
    rt.request_run(run.workflow_id, version, workdir=str(run.workdir), run_id=run.run_id)


def wait_all(rt: LocalRuntime, runs: Sequence[ChaosRun], timeout: float) -> None:
    """Wait until every run has ended (or the deadline), ticking the scheduler each second
    as EventBridge would, so that the lease sweep runs."""
    assert rt.ports is not None
    deadline = time.monotonic() + timeout
    pending = [r.run_id for r in runs]
    next_tick = 0.0
    while pending and time.monotonic() < deadline:
        if time.monotonic() >= next_tick:
            rt.tick()
            next_tick = time.monotonic() + 1.0
        try:
            rt.wait(pending[0], timeout=max(0.0, min(1.0, deadline - time.monotonic())))
        except TimeoutError:
            continue
        pending = [p for p in pending if not ((r := rt.ports.runs.get_run(p)) and r.finished_at)]


def quiesce(rt: LocalRuntime, timeout: float) -> None:
    """Let the work in flight settle (commands running, reports queued) before judging."""
    assert rt.clients is not None and rt.settings is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attrs = rt.clients.sqs.get_queue_attributes(
            QueueUrl=rt.settings.completion_queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        if rt.progress.running == 0 and not any(int(v) for v in attrs.values()):
            return
        time.sleep(0.05)  # polling the queue's state, with a deadline


def dead_letters(rt: LocalRuntime) -> dict[str, list[str]]:
    """The bodies in the dead-letter queues, by run id."""
    assert rt.clients is not None
    resources = Resources.named(rt.prefix)
    found: dict[str, list[str]] = {}
    for name in (resources.task_queue.dlq_name, resources.completion_queue.dlq_name):
        url = rt.clients.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        while True:
            got = rt.clients.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600, WaitTimeSeconds=0
            ).get("Messages", [])
            if not got:
                break
            for m in got:
                try:
                    run_id = json.loads(m["Body"]).get("run_id", "")
                except ValueError:
                    run_id = ""
                found.setdefault(run_id, []).append(f"{name}: {m['Body']}")
    return found


def judge(rt: LocalRuntime, runs: Sequence[ChaosRun]) -> None:
    """Fill each run's violations from the engine's records and the commands' journal."""
    assert rt.ports is not None
    dlq = dead_letters(rt)
    for run in runs:
        run.faults.armed = False
        run.record = rt.ports.runs.get_run(run.run_id)
        run.tasks = rt.ports.runs.list_tasks(run.run_id) if run.record else {}
        waiting = rt.ports.runs.peek_waiting(run.run_id, 100) if run.record else []
        run.violations = check_run(
            run.design,
            run.record,
            run.tasks,
            Journal.read(run.workdir),
            run.faults.lost_attempts() | _lost_at_the_end(run.tasks),
            waiting,
            dlq.get(run.run_id, []),
            run.known,
        )


def record_stats(runs: Sequence[ChaosRun], engine: str) -> None:
    """With CHAOS_STATS=path, append a line per run (engine, seed, faults injected, lost
    attempts, violations, known deviations): what docs/reliability.md's table counts."""
    path = os.environ.get("CHAOS_STATS")
    if not path:
        return
    with open(path, "a") as f:
        for run in runs:
            line = {
                "engine": engine,
                "seed": run.seed,
                "tasks": len(run.design.tasks),
                "injected": dict(run.faults.injected),
                "lost": len(run.faults.lost_attempts()),
                "violations": run.violations,
                "known": run.known,
                "mended": MENDED[run.run_id],
            }
            f.write(json.dumps(line) + "\n")


def _lost_at_the_end(tasks: dict[str, Any]) -> set[tuple[str, int]]:
    """The tasks whose last attempt the records show lost (settled from a lost report)."""
    return {(t, rec.attempt) for t, rec in tasks.items() if is_lost(rec, rec.attempt)}


def report(runs: Sequence[ChaosRun], engine: str) -> str:
    """A failure message: per failing seed, how to rerun it, what was injected, what broke."""
    out = []
    for run in runs:
        if not run.violations:
            continue
        states = " ".join(f"{t}={r.status.value}@{r.attempt}" for t, r in sorted(run.tasks.items()))
        journal = (run.workdir / JOURNAL).read_text() if (run.workdir / JOURNAL).exists() else ""
        out.append(
            f"seed {run.seed} on the {engine} engine ({profile_of(run.seed).describe()}); "
            f"rerun: make chaos SEED={run.seed}  (pytest tests/chaos --chaos-seed={run.seed} "
            f"-k {engine})\n"
            f"  run {run.run_id}: {run.record.status.value if run.record else 'missing'}\n"
            f"  faults (rates): {_rates(run.faults)}; injected: {dict(run.faults.injected)}\n"
            + "".join(f"  VIOLATION {v}\n" for v in run.violations)
            + f"  recorded: {states}\n"
            + "  "
            + run.design.describe().replace("\n", "\n  ")
            + "\n  journal: "
            + " | ".join(journal.splitlines())
        )
    return "\n\n".join(out)


def _rates(faults: RunFaults) -> str:
    return ", ".join(f"{s}={r:.2f}" for s, r in sorted(faults.rates.items()))


def run_batch(seeds: Sequence[int], root: Path, *, emulator: bool) -> list[ChaosRun]:
    """Run the seeds' runs at once on a fresh runtime with their faults; judge each."""
    profile = profile_of(seeds[0])
    assert all(profile_of(s) == profile for s in seeds), "a batch shares one profile"
    rt = start_runtime(root / "home", emulator=emulator)
    try:
        chaos = Chaos(embedded=not emulator, skew=profile.skew, visibility=profile.visibility)
        chaos.install(rt)
        runs = [prepare(chaos, seed, root) for seed in seeds]
        for run in runs:
            start(rt, run)
        wait_all(rt, runs, RUN_DEADLINE)
        quiesce(rt, 15)
        judge(rt, runs)
    finally:
        rt.stop()
    record_stats(runs, "emulator" if emulator else "embedded")
    return runs


def main() -> None:
    """The engine process of the kill test: start one seed's run, then work until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--tag", required=True)
    args = parser.parse_args()
    profile = profile_of(args.seed)
    with short_leases():
        rt = start_runtime(Path(args.home), emulator=False)
        chaos = Chaos(embedded=True, skew=profile.skew, visibility=profile.visibility)
        chaos.install(rt)
        run = prepare(chaos, args.seed, Path(args.root), args.tag)
        start(rt, run)
        (run.workdir / "engine-began").write_text(str(os.getpid()))
        wait_all(rt, [run], RUN_DEADLINE)
        (run.workdir / "engine-finished").write_text(str(os.getpid()))
        rt.stop()


if __name__ == "__main__":
    main()
