"""Fault injection on the emulator path: the AWS adapters on the embedded moto server,
with throttling and closed connections raised by boto3's DynamoDB client (see
test_chaos.py for the rest)."""

from __future__ import annotations

from pathlib import Path

from .engine import report, run_batch


def test_emulator_runs_keep_their_invariants(
    seeds: list[int], tmp_path: Path, leases: None
) -> None:
    runs = run_batch(seeds, tmp_path, emulator=True)
    failed = [r for r in runs if r.violations]
    assert not failed, f"{len(failed)} of {len(runs)} runs broke an invariant:\n\n" + report(
        failed, "emulator"
    )
