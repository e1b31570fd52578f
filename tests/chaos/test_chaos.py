"""Fault injection on the embedded engine: random DAGs run while messages are dropped,
duplicated, delayed and reordered, store calls fail, executors and completion handlers
die at their worst moments, leases run out, the clock is 90 s off, and an engine is
SIGKILLed and restarted; after each run the invariants of `invariants.check_run` hold
(docs/reliability.md).

A test is a batch of seeds run at once on one runtime (each seed's faults are its own, so
a batch's runs do not disturb each other's decisions). `make test` runs a short slice;
`make chaos` (`pytest -m chaos`) the long set; `--chaos-seed=N` (`make chaos SEED=N`)
reruns one seed. Every failure names its seed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.support import ROOT

from .dags import JOURNAL, generate
from .engine import (
    RUN_DEADLINE,
    judge,
    prepare,
    profile_of,
    quiesce,
    record_stats,
    report,
    run_batch,
    start_runtime,
    wait_all,
)
from .faults import Chaos


def test_embedded_runs_keep_their_invariants(
    seeds: list[int], tmp_path: Path, leases: None
) -> None:
    runs = run_batch(seeds, tmp_path, emulator=False)
    failed = [r for r in runs if r.violations]
    assert not failed, f"{len(failed)} of {len(runs)} runs broke an invariant:\n\n" + report(
        failed, "embedded"
    )


def test_killed_engine_restarted_keeps_the_invariants(
    seeds: list[int], tmp_path: Path, leases: None
) -> None:
    """An embedded engine running a seed's run (faults and all) in a process of its own is
    SIGKILLed once a seeded number of its roots' commands has started; a fresh engine on the same
    home recovers the run (as `local up` does), and the invariants hold across the kill."""
    (seed,) = seeds
    home, tag = tmp_path / "home", uuid.uuid4().hex[:8]
    workdir = tmp_path / f"seed-{seed}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "shared")])}
    engine = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.chaos.engine", "--home", str(home)),
            *("--root", str(tmp_path), "--seed", str(seed), "--tag", tag),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    # Killed once a seeded number of its roots have started, or a seeded time after the
    # run began, whichever comes first (faults may keep a root from ever starting).
    rng = random.Random(f"kill-{seed}")
    starts_wanted = rng.randint(1, sum(not t.depends for t in generate(seed).tasks))
    kill_after = rng.uniform(0.2, 2.0)
    began = workdir / "engine-began"
    deadline = time.monotonic() + 60
    kill_at = deadline
    try:
        while time.monotonic() < min(deadline, kill_at) and engine.poll() is None:
            journal = workdir / JOURNAL
            started = journal.read_text().count(" start") if journal.exists() else 0
            if started >= starts_wanted or (workdir / "engine-finished").exists():
                break
            if kill_at == deadline and began.exists():
                kill_at = time.monotonic() + kill_after
            time.sleep(0.02)  # polling another process's progress, with a deadline
        assert engine.poll() is None, engine.stderr  # (it must not die by itself)
    finally:
        if engine.poll() is None:
            os.kill(engine.pid, signal.SIGKILL)
        _, stderr = engine.communicate(timeout=30)
    assert time.monotonic() < deadline, f"seed {seed}: the engine made no progress\n{stderr}"
    # A run may end before its kill (a small one, or one whose roots all failed at once):
    # its invariants are still checked below, as an ordinary run's.
    profile = profile_of(seed)
    rt = start_runtime(home, emulator=False, recover=True)
    try:
        chaos = Chaos(embedded=True, skew=profile.skew, visibility=profile.visibility)
        chaos.install(rt)
        run = prepare(chaos, seed, tmp_path, tag)
        wait_all(rt, [run], RUN_DEADLINE)
        quiesce(rt, 15)
        judge(rt, [run])
    finally:
        rt.stop()
    record_stats([run], "killed")
    assert not run.violations, report([run], "embedded engine (killed and restarted)")
