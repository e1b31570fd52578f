#!/usr/bin/env python3
"""`make bench`: stratoflow's local engines side by side, with the floor and the peers.

    .venv/bin/python bench/run.py                  # everything; tables, results, docs block
    .venv/bin/python bench/run.py --quick          # small W4s, one run each; docs left alone
    .venv/bin/python bench/run.py --only W1,W2     # a subset of the workloads
    .venv/bin/python bench/run.py --engine embedded --no-peers --no-cli
    .venv/bin/python bench/run.py --workload W2 --engine embedded --json   # one child

Each (engine, workload) runs in a fresh child process (`--workload W --engine E --json`), so
its peak RSS is its own. In the child: the floor (the same DAG on a bare 2-thread pool, the
same `true` commands), then the engine (start-up and a warm-up run timed apart), then the
measured run(s):

* the **embedded engine** (the local default: SQLite in the engine's home): wall time,
  overhead per task, dispatch latencies from the run's task records, CPU, peak RSS; W4 at
  10,000 tasks;
* the **emulator path** (the AWS adapters on moto, `LocalRuntime(emulator=True)`): the same,
  plus every boto3 call counted through botocore's event hooks and priced by the cost model;
  its W4 is smaller (`W4_EMULATOR_WIDTH`).

Beside them: the whole `stratoflow run` process on W2 (`--cli`: interpreter, imports,
engine start-up and the run), and Luigi on W1–W3 in the same run (`bench/peers.py`,
installed into the venv if missing). The parent prints the tables, writes
bench/results.json and the measured block of docs/benchmarks.md. A benchmark, not a test:
nothing here asserts anything about time.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
try:
    import stratoflow  # noqa: F401
except ImportError:  # run from a checkout without the editable install
    sys.path.insert(0, str(ROOT / "shared"))

from cost import (  # noqa: E402
    PRICE_SOURCES,
    PRICES_AS_OF,
    LambdaUsage,
    Prices,
    TaskUsage,
    cost_per_million,
    dynamodb_item_size,
    lambda_billed_ms,
    read_units,
    write_units,
)
from peers import (  # noqa: E402
    LUIGI_ISSUE5,
    NOT_RERUN,
    NOT_RERUN_NOTE,
    PEER_WORKLOADS,
    ensure_luigi,
)
from workloads import (  # noqa: E402
    W4_EMULATOR_QUICK_WIDTH,
    W4_EMULATOR_WIDTH,
    W4_FULL_WIDTH,
    W4_QUICK_WIDTH,
    Dag,
    chain,
    edges,
    workflow_spec,
    workloads,
)

RESULTS = BENCH / "results.json"
DOCS = ROOT / "docs" / "benchmarks.md"
DOCS_BEGIN = "<!-- bench:results:begin (written by bench/run.py) -->"
DOCS_END = "<!-- bench:results:end -->"
WORKERS = 2
ALL_WORKLOADS = ("W1", "W2", "W3", "W4")
ENGINES = ("embedded", "emulator")
ENGINE_TITLES = {
    "embedded": "embedded engine (SQLite, the local default)",
    "emulator": "emulator path (AWS adapters on moto)",
}
CLI_WORKLOAD = "W2"
REPEATS = 3
"""Measured runs per (engine, workload) on the embedded engine, per Luigi workload and of the
whole-process run; the median is reported. 1 with --quick, and for DAGs over 1,000 tasks."""
CHILD_TIMEOUT = 1800.0
SETTLE_SECONDS = 0.5
"""After the run ends, time for the deleter to settle the last messages before counting."""

# Targets of issue 11 (item 7), for the embedded engine.
OVERHEAD_TARGETS_MS = {"W1": 2.0, "W2": 1.5, "W3": 3.0}
DISPATCH_P50_TARGET_MS = 2.0
W4_WALL_TARGET_S = 60.0
W4_RSS_TARGET_MIB = 300.0
CLI_TARGET_MS = 3.5
LAMBDA_PLATFORM_LOG_BYTES = 400
"""START, END and REPORT lines Lambda writes per invocation (approximate)."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ============================================================================ child: measure


def measure(
    name: str, engine: str, w4_width: int, workers: int, timeout: float | None, repeats: int
) -> dict[str, Any]:
    """One workload on one engine, in this process: the floor, then the engine's run(s)."""
    from floor import run_floor

    wl = workloads(w4_width)[name]
    dag = wl.build()
    n, e = len(dag), edges(dag)
    log(f"{name} [{engine}]: {wl.title}: {n:,} tasks, {e:,} edges")
    load = os.getloadavg()
    floor_repeats = 3 if n <= 1000 else 1
    floors = [run_floor(dag, workers) for _ in range(floor_repeats)]
    floor = statistics.median(floors)
    log(f"{name} [{engine}]: floor {floor:.2f} s (median of {floor_repeats})")
    common = {
        "engine": engine,
        "workload": name,
        "title": wl.title,
        "tasks": n,
        "edges": e,
        "workers": workers,
        "floor_s": floor,
        "floor_runs_s": floors,
        "load_average": load,
    }
    if engine == "embedded":
        specific = measure_embedded(name, dag, floor, workers, timeout, repeats)
    elif engine == "emulator":
        specific = measure_emulator(name, dag, floor, workers, timeout)
    else:
        raise ValueError(f"unknown engine {engine!r}")
    return {**common, **specific}


def _start_runtime(rt: Any, name: str) -> tuple[float, float]:
    """Start `rt` and run a 3-task chain on it: (start-up s, warm-up run s)."""
    from stratoflow.core.model import Workflow

    t0 = time.perf_counter()
    rt.start()
    startup = time.perf_counter() - t0
    warm = Workflow.model_validate(workflow_spec("bench-warmup", chain(3)))
    rid = rt.request_run(warm.id, rt.register(warm, "bench"))
    rt.wait(rid, timeout=120)
    warmup = time.perf_counter() - t0 - startup
    log(f"{name}: engine up in {startup:.3f} s (+ warm-up run {warmup:.3f} s)")
    return startup, warmup


def _wait_finished(rt: Any, run_id: str, limit: float, name: str) -> None:
    """Wait for the completion handler's "run finished" signal (rt.wait would add its own
    reads of the run to what is measured)."""
    if not rt._event_for(run_id).wait(limit):
        raise TimeoutError(f"{name}: the run did not finish within {limit:.0f} s")


def _task_times(rt: Any, run_id: str) -> dict[str, dict[str, Any]]:
    """The run's task records: status and the started/finished/settled times."""
    return {
        t: {
            "status": str(getattr(r.status, "value", r.status)),
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "settled_at": r.settled_at,
        }
        for t, r in rt.ports.runs.list_tasks(run_id).items()
    }


def _latencies(dag: Dag, tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    first = _first_dispatch_latencies(dag, tasks)
    return {
        "dispatch_ms": _percentiles(_dispatch_latencies(dag, tasks)),
        "settle_dispatch_ms": _percentiles(_dispatch_latencies(dag, tasks, "settled_at")),
        "first_dispatch_ms": {"n": len(first), **_percentiles(first)},
    }


def measure_embedded(
    name: str, dag: Dag, floor: float, workers: int, timeout: float | None, repeats: int
) -> dict[str, Any]:
    from stratoflow.core.model import Workflow
    from stratoflow.local.runtime import LocalRuntime

    n = len(dag)
    repeats = repeats if n <= 1000 else 1
    state = Path(tempfile.mkdtemp(prefix="stratoflow-bench-"))
    rt = LocalRuntime(workers=workers, state_dir=state, redelivery_delay=0.05)
    runs: list[dict[str, Any]] = []
    try:
        startup, warmup = _start_runtime(rt, f"{name} [embedded]")
        wf = Workflow.model_validate(workflow_spec(f"bench-{name.lower()}", dag))
        version = rt.register(wf, "bench")
        limit = timeout or max(600.0, n * 0.5)
        for i in range(repeats):
            own0 = resource.getrusage(resource.RUSAGE_SELF)
            kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            run_id = rt.request_run(wf.id, version)
            if n > 1000:
                _progress_reporter(rt, name, n, start)
            _wait_finished(rt, run_id, limit, name)
            wall = time.perf_counter() - start
            own1 = resource.getrusage(resource.RUSAGE_SELF)
            kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            run = rt.wait(run_id, timeout=limit)
            tasks = _task_times(rt, run_id)
            log(
                f"{name} [embedded]: run {i + 1}/{repeats} {run.status.public} in {wall:.2f} s: "
                f"{(wall - floor) / n * 1000:.2f} ms per task over the floor"
            )
            runs.append(
                {
                    "wall_s": wall,
                    "status": run.status.public,
                    "task_statuses": dict(Counter(t["status"] for t in tasks.values())),
                    "cpu_s": {
                        "engine": _cpu(own1) - _cpu(own0),
                        "commands": _cpu(kids1) - _cpu(kids0),
                    },
                    **_latencies(dag, tasks),
                }
            )
    finally:
        t0 = time.perf_counter()
        rt.stop()
        stop = time.perf_counter() - t0
        shutil.rmtree(state, ignore_errors=True)
    median = sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2]
    wall = median["wall_s"]
    return {
        **{k: v for k, v in median.items() if k != "cpu_s"},
        "repeats": len(runs),
        "wall_runs_s": [r["wall_s"] for r in runs],
        "overhead_runs_ms_per_task": [(r["wall_s"] - floor) / n * 1000 for r in runs],
        "startup_s": startup,
        "warmup_s": warmup,
        "stop_s": stop,
        "overhead_ms_per_task": (wall - floor) / n * 1000,
        "throughput_tasks_per_s": n / wall,
        "cpu_s": median["cpu_s"],
        "cpu_ms_per_task": {k: v / n * 1000 for k, v in median["cpu_s"].items()},
        "peak_rss_mib": {
            "engine": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "emulator": None,
        },
    }


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def measure_emulator(
    name: str, dag: Dag, floor: float, workers: int, timeout: float | None
) -> dict[str, Any]:
    """The AWS adapters on the embedded moto server: one run, every boto3 call counted."""
    from meters import POLLING_OPERATIONS, HandlerTimer, Meters

    from stratoflow.core.model import Workflow
    from stratoflow.handlers import completion, dispatcher, executor
    from stratoflow.local.runtime import LocalRuntime

    n = len(dag)
    state = Path(tempfile.mkdtemp(prefix="stratoflow-bench-"))
    rt = LocalRuntime(workers=workers, state_dir=state, redelivery_delay=0.05, emulator=True)
    # The runtime calls each handler module's `handle` (by name, at each call): timed here.
    originals = {m: m.handle for m in (executor, completion, dispatcher)}
    try:
        startup, warmup = _start_runtime(rt, f"{name} [emulator]")
        wf = Workflow.model_validate(workflow_spec(f"bench-{name.lower()}", dag))
        version = rt.register(wf, "bench")

        timer = HandlerTimer()
        for module in originals:
            module.handle = timer.wrap_handler(module.__name__.rsplit(".", 1)[1], module.handle)
        assert rt.clients is not None and rt.runner is not None and rt.settings is not None
        rt.wiring.runner = timer.wrap_runner(rt.runner)
        meters = Meters([rt.clients.dynamodb, rt.clients.sqs, rt.clients.s3])
        handler_log = state / "handlers.log"
        log_before = handler_log.stat().st_size if handler_log.exists() else 0

        meters.reset()
        timer.reset()
        timer.active = True
        cpu0 = _cpu_seconds(rt)
        start = time.perf_counter()
        run_id = rt.request_run(wf.id, version)
        limit = timeout or max(600.0, n * 1.0)
        _progress_reporter(rt, name, n, start)
        _wait_finished(rt, run_id, limit, name)
        wall = time.perf_counter() - start
        cpu1 = _cpu_seconds(rt)
        time.sleep(SETTLE_SECONDS)
        timer.active = False
        calls = meters.counter.snapshot()
        detail = meters.detail
        meters.detach()
        run = rt.wait(run_id, timeout=limit)
        log_bytes = (handler_log.stat().st_size if handler_log.exists() else 0) - log_before
        log(f"{name} [emulator]: run {run.status.public} in {wall:.2f} s ({n / wall:.1f} tasks/s)")

        tasks = _task_times(rt, run_id)
        sizes = _item_sizes(rt.clients.dynamodb, rt.settings.table, f"RUN#{run_id}")
        emulator_hwm = _emulator_peak_kib(rt)
    finally:
        for module, handle in originals.items():
            module.handle = handle
        rt.stop()
        shutil.rmtree(state, ignore_errors=True)

    statuses = Counter(t["status"] for t in tasks.values())
    engine_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    inv = timer.invocations
    ex = inv.get("executor", [])
    co = inv.get("completion", [])
    di = inv.get("dispatcher", [])

    by_op = {f"{svc}.{op}": c for (svc, op), c in sorted(calls.items())}
    # The event-source mapping deletes each invocation's processed batch with one
    # DeleteMessageBatch; the local pumps gather deletes across invocations (fewer
    # requests, off every task's path), so the deletes AWS would bill are counted per
    # invocation, and the local count is kept apart.
    local_deletes = by_op.get("sqs.DeleteMessageBatch", 0)
    by_op["sqs.DeleteMessageBatch"] = len(ex) + len(co)
    polling = {k: v for k, v in by_op.items() if k.split(".", 1)[1] in POLLING_OPERATIONS}
    engine = {k: v for k, v in by_op.items() if k not in polling}
    empty_receives = detail.receives["empty"]
    billable_polling = sum(polling.values()) - empty_receives

    # -- Lambda: invocations and durations, the executor's command time taken out
    ex_overhead = [max(0.0, d - c) for d, _, c in ex]
    lambda_stats = {
        "executor": {
            "invocations": len(ex),
            "mean_ms": _mean_ms([d for d, _, _ in ex]),
            "mean_command_ms": _mean_ms([c for _, _, c in ex]),
            "mean_overhead_ms": _mean_ms(ex_overhead),
        },
        "completion": {
            "invocations": len(co),
            "mean_ms": _mean_ms([d for d, _, _ in co]),
            "mean_billed_ms": statistics.fmean(lambda_billed_ms(d) for d, _, _ in co) if co else 0,
            "mean_batch": statistics.fmean(r for _, r, _ in co) if co else 0,
        },
        "dispatcher": {"invocations": len(di), "mean_ms": _mean_ms([d for d, _, _ in di])},
    }

    # -- DynamoDB units, with item sizes as stored at the end of the run
    kind_size = {k: v["max"] for k, v in sizes.items()}
    wru = sum(
        count * write_units(kind_size.get(kind, 0)) * (2 if tx else 1)
        for (kind, tx), count in detail.writes.items()
    )
    rru = sum(
        count * read_units(kind_size.get(kind, 0), consistent)
        for (kind, consistent), count in detail.reads.items()
    ) + sum(read_units(b) for b in detail.query_bytes)
    sqs_engine_billed = sum(detail.sqs_chunks.values())
    s3_puts = sum(v for k, v in by_op.items() if k in ("s3.PutObject", "s3.DeleteObject"))
    s3_gets = sum(v for k, v in by_op.items() if k.startswith("s3.")) - s3_puts

    return {
        "status": run.status.public,
        "task_statuses": dict(statuses),
        "repeats": 1,
        "wall_runs_s": [wall],
        "startup_s": startup,
        "warmup_s": warmup,
        "wall_s": wall,
        "overhead_ms_per_task": (wall - floor) / n * 1000,
        "throughput_tasks_per_s": n / wall,
        **_latencies(dag, tasks),
        "peak_rss_mib": {
            "engine": engine_rss_kib / 1024,
            "emulator": (emulator_hwm / 1024) if emulator_hwm else None,
        },
        "calls": {
            "engine": engine,
            "polling": polling,
            "empty_receives": empty_receives,
            "local_delete_requests": local_deletes,
        },
        "calls_per_task": {
            "engine": sum(engine.values()) / n,
            "polling_billable": billable_polling / n,
            "polling_empty": empty_receives / n,
            "billable_requests": (sum(engine.values()) + billable_polling) / n,
            "lambda_invocations": (len(ex) + len(co) + len(di)) / n,
            "by_operation": {k: v / n for k, v in by_op.items()},
        },
        "items": {
            "transactions": len(detail.transactions),
            "transaction_items_per_task": sum(detail.transactions) / n,
            "edge_counter_items_per_task": detail.edge_counter_items / n,
            "edge_reads_per_task": detail.edge_reads / n,
            "writes": {f"{k}{'/tx' if tx else ''}": c for (k, tx), c in detail.writes.items()},
            "reads": {f"{k}{'' if c else '/eventual'}": v for (k, c), v in detail.reads.items()},
            "item_bytes": sizes,
        },
        "sqs": {
            "messages_received": detail.messages_received,
            "receives_with_messages": detail.receives["with_messages"],
            "engine_billed_requests": sqs_engine_billed,
            "payload_bytes": dict(detail.sqs_payload),
        },
        "units_per_task": {
            "dynamodb_wru": wru / n,
            "dynamodb_rru": rru / n,
            "sqs_requests": (sqs_engine_billed + billable_polling) / n,
            "s3_puts": s3_puts / n,
            "s3_gets": s3_gets / n,
            "log_bytes": (log_bytes + LAMBDA_PLATFORM_LOG_BYTES * (len(ex) + len(co) + len(di)))
            / n,
        },
        "lambda": lambda_stats,
        "call_latency_ms": {
            op: {
                "n": len(v),
                "mean": statistics.fmean(v) * 1000,
                **_percentiles([x * 1000 for x in v]),
            }
            for op, v in sorted(detail.latency.items())
        },
        "call_errors": dict(detail.errors),
        "cpu_s": {
            k: (cpu1[k] - cpu0[k]) if cpu1[k] is not None and cpu0[k] is not None else None
            for k in cpu0
        },
        "cpu_ms_per_task": {
            k: (cpu1[k] - cpu0[k]) / n * 1000
            if cpu1[k] is not None and cpu0[k] is not None
            else None
            for k in cpu0
        },
        "sfn_transitions": _sfn_transitions(dag),
    }


def measure_cli(name: str, workers: int, repeats: int) -> dict[str, Any]:
    """The whole `stratoflow run FILE --json` process on `name`'s DAG: interpreter start,
    imports, engine start-up in a fresh STRATOFLOW_HOME, the run, the JSON, the exit."""
    from floor import run_floor

    wl = workloads()[name]
    dag = wl.build()
    n = len(dag)
    log(f"{name} [stratoflow run]: {wl.title}: {n:,} tasks, whole process")
    load = os.getloadavg()
    floors = [run_floor(dag, workers) for _ in range(3)]
    floor = statistics.median(floors)
    log(f"{name} [stratoflow run]: floor {floor:.2f} s (median of 3)")
    tmp = Path(tempfile.mkdtemp(prefix="stratoflow-bench-cli-"))
    path = tmp / f"bench-{name.lower()}.json"
    path.write_text(json.dumps(workflow_spec(f"bench-{name.lower()}", dag)))
    env = _child_env()
    cmd = [sys.executable, "-m", "stratoflow.cli", "run", str(path), "--json"]
    cmd += ["--workers", str(workers)]
    walls: list[float] = []
    try:
        for i in range(repeats):
            env["STRATOFLOW_HOME"] = str(tmp / f"home-{i}")
            start = time.perf_counter()
            proc = subprocess.run(
                cmd, env=env, cwd=tmp, capture_output=True, text=True, check=False
            )
            wall = time.perf_counter() - start
            lines = proc.stdout.strip().splitlines()
            status = json.loads(lines[-1]).get("status") if lines else None
            if proc.returncode != 0 or status != "succeeded":
                raise RuntimeError(
                    f"stratoflow run exited {proc.returncode} (run {status}): {proc.stderr[-2000:]}"
                )
            walls.append(wall)
            log(
                f"{name} [stratoflow run]: run {i + 1}/{repeats} in {wall:.2f} s: "
                f"{(wall - floor) / n * 1000:.2f} ms per task over the floor"
            )
        python_start = statistics.median(
            _timed([sys.executable, "-c", "pass"], env) for _ in range(3)
        )
        imports = statistics.median(
            _timed([sys.executable, "-c", "import stratoflow.cli, stratoflow.local.runtime"], env)
            for _ in range(3)
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    wall = statistics.median_low(walls)
    return {
        "workload": name,
        "title": wl.title,
        "tasks": n,
        "workers": workers,
        "command": "python -m stratoflow.cli run FILE --json --workers " + str(workers),
        "load_average": load,
        "floor_s": floor,
        "floor_runs_s": floors,
        "wall_s": wall,
        "wall_runs_s": walls,
        "repeats": len(walls),
        "overhead_ms_per_task": (wall - floor) / n * 1000,
        "python_start_s": python_start,
        "python_start_and_imports_s": imports,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    shared = str(ROOT / "shared")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (shared, env.get("PYTHONPATH", "")) if p)
    return env


def _progress_reporter(rt: Any, name: str, n: int, start: float) -> None:
    """Log progress every 30 s on stderr (a long W4 is otherwise silent)."""
    import threading

    def report() -> None:
        base = rt.progress.succeeded + rt.progress.failed
        while True:
            time.sleep(30)
            done = rt.progress.succeeded + rt.progress.failed - base
            if done >= n or rt._stop.is_set():
                return
            elapsed = time.perf_counter() - start
            log(f"{name}: {done:,}/{n:,} tasks reported after {elapsed:.0f} s")

    threading.Thread(target=report, name="bench-progress", daemon=True).start()


def _cpu_seconds(rt: Any) -> dict[str, float | None]:
    """CPU seconds so far: this process (the engine), its commands, and the emulator."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    emulator = None
    proc = getattr(getattr(rt, "_emulator", None), "_proc", None)
    if proc is not None:
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            emulator = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            emulator = None
    return {"engine": _cpu(own), "commands": _cpu(kids), "emulator": emulator}


def _mean_ms(values: list[float]) -> float:
    return statistics.fmean(values) * 1000 if values else 0.0


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    s = sorted(values)

    def pct(p: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]

    return {"p50": pct(50), "p95": pct(95), "p99": pct(99), "max": s[-1]}


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _dispatch_latencies(dag: Dag, tasks: dict[str, Any], since: str = "finished_at") -> list[float]:
    """For each task with parents: its start minus its last parent's finish (or, with
    `since="settled_at"`, its last parent's settlement by the completion handler), in ms."""
    out = []
    for t, parents in dag.items():
        if not parents:
            continue
        started = _ts(tasks.get(t, {}).get("started_at"))
        finishes = [_ts(tasks.get(p, {}).get(since)) for p in parents]
        if started is None or any(f is None for f in finishes):
            continue
        last = max(f for f in finishes if f is not None)
        out.append((started - last).total_seconds() * 1000)
    return out


def _first_dispatch_latencies(dag: Dag, tasks: dict[str, Any]) -> list[float]:
    """For each completion that made dependents ready: the first of them to start, minus
    that completion, in ms. Unlike the per-task latency, never a wait for a busy worker:
    when a fan-in's last parent (or a chain's parent) finishes, the workers are free."""
    first: dict[str, datetime] = {}
    finish: dict[str, datetime] = {}
    for t, parents in dag.items():
        started = _ts(tasks.get(t, {}).get("started_at"))
        finishes = [(_ts(tasks.get(p, {}).get("finished_at")), p) for p in parents]
        if not parents or started is None or any(f is None for f, _ in finishes):
            continue
        last, trigger = max((f, p) for f, p in finishes if f is not None)
        finish[trigger] = last
        if trigger not in first or started < first[trigger]:
            first[trigger] = started
    return [(first[t] - finish[t]).total_seconds() * 1000 for t in first]


def _item_sizes(db: Any, table: str, pk: str) -> dict[str, dict[str, float]]:
    from meters import item_kind

    sizes: dict[str, list[int]] = {}
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": pk}},
    }
    while True:
        resp = db.query(**kwargs)
        for item in resp.get("Items", []):
            sizes.setdefault(item_kind(item), []).append(dynamodb_item_size(item))
        if not resp.get("LastEvaluatedKey"):
            break
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
    return {k: {"n": len(v), "mean": statistics.fmean(v), "max": max(v)} for k, v in sizes.items()}


def _emulator_peak_kib(rt: Any) -> int | None:
    proc = getattr(getattr(rt, "_emulator", None), "_proc", None)
    if proc is None:
        return None
    try:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _sfn_transitions(dag: Dag) -> int:
    """State transitions of the same DAG on Step Functions Standard, at the least: one per
    task (a Task state), plus one per topological level wider than one task (the Parallel
    or Map state that runs it). Retries, Choice/Pass states and error handling add more."""
    level: dict[str, int] = {}
    for t, parents in dag.items():
        level[t] = 1 + max((level[p] for p in parents), default=0)
    widths = Counter(level.values())
    return len(dag) + sum(1 for w in widths.values() if w > 1)


# ============================================================================ parent
# ============================================================================ parent


def _run_json(cmd: list[str], what: str) -> dict[str, Any]:
    """Run a child that prints one JSON document last on stdout; its stderr passes through."""
    try:
        proc = subprocess.run(
            cmd,
            env=_child_env(),
            stdout=subprocess.PIPE,
            text=True,
            check=False,
            timeout=CHILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{what}: no result within {CHILD_TIMEOUT:.0f} s") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_child(name: str, engine: str, args: argparse.Namespace) -> dict[str, Any]:
    width = args.w4_width if engine == "embedded" else args.emulator_w4_width
    cmd = [sys.executable, str(Path(__file__).resolve()), "--workload", name, "--engine", engine]
    cmd += ["--json", "--w4-width", str(width), "--workers", str(args.workers)]
    cmd += ["--repeats", str(args.repeats)]
    if args.timeout:
        cmd += ["--timeout", str(args.timeout)]
    return _run_json(cmd, f"workload {name} on the {engine} engine")


def run_cli_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--cli", name, "--json"]
    cmd += ["--workers", str(args.workers), "--repeats", str(args.repeats)]
    return _run_json(cmd, f"stratoflow run of {name}")


def run_peer_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(BENCH / "peers.py"), "--workload", name, "--json"]
    cmd += ["--workers", str(args.workers), "--repeats", str(args.repeats)]
    return _run_json(cmd, f"Luigi on {name}")


def lambda_memory() -> dict[str, int]:
    """The memory infra/ configures for each function (read from its source, no CDK import)."""
    memory = {"dispatcher": 512, "completion": 512, "executor": 1024}
    try:
        stack = ast.parse((ROOT / "infra/stratoflow_infra/stack.py").read_text())
        for node in ast.walk(stack):
            if isinstance(node, ast.Assign) and any(
                getattr(t, "id", "") == "FUNCTION_MEMORY_MIB" for t in node.targets
            ):
                memory.update(ast.literal_eval(node.value))
        settings = ast.parse((ROOT / "infra/stratoflow_infra/settings.py").read_text())
        for node in ast.walk(settings):
            if (
                isinstance(node, ast.AnnAssign)
                and getattr(node.target, "id", "") == "executor_memory_mib"
                and node.value is not None
            ):
                memory["executor"] = ast.literal_eval(node.value)
    except (OSError, SyntaxError, ValueError):
        pass
    return memory


def usage_of(r: dict[str, Any], memory: dict[str, int]) -> TaskUsage:
    n = r["tasks"]
    lam = r["lambda"]
    u = r["units_per_task"]
    functions = {
        # The executor's own work: its handler time minus the command's.
        "executor": LambdaUsage(
            lam["executor"]["invocations"] / n,
            lam["executor"]["mean_overhead_ms"],
            memory["executor"],
        ),
        "completion": LambdaUsage(
            lam["completion"]["invocations"] / n,
            lam["completion"]["mean_billed_ms"],
            memory["completion"],
        ),
        "dispatcher": LambdaUsage(
            lam["dispatcher"]["invocations"] / n,
            lambda_billed_ms(lam["dispatcher"]["mean_ms"] / 1000),
            memory["dispatcher"],
        ),
    }
    return TaskUsage(
        functions=functions,
        sqs_requests=u["sqs_requests"],
        dynamodb_wru=u["dynamodb_wru"],
        dynamodb_rru=u["dynamodb_rru"],
        s3_puts=u["s3_puts"],
        s3_gets=u["s3_gets"],
        log_bytes=u["log_bytes"],
        sfn_transitions=r["sfn_transitions"] / n,
    )


def _margin(value: float, limit: float, unit: str) -> str:
    unit = f" {unit}" if unit else ""
    if value <= limit:
        return f"{limit - value:,.2f}{unit} under ({value / limit:.0%} of the limit)"
    return f"{value - limit:,.2f}{unit} over ({value / limit:.1f}× the limit)"


def peer_table(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The peers as shown: [{label, measured, note, overhead: {W: ms}}], Luigi first."""
    out = []
    luigi = (doc.get("peers") or {}).get("Luigi")
    if luigi and luigi.get("measured"):
        out.append(
            {
                "label": f"Luigi {luigi['version']}",
                "measured": True,
                "note": "measured in this run",
                "overhead": {
                    w: r["overhead_ms_per_task"] for w, r in luigi.get("workloads", {}).items()
                },
            }
        )
    else:
        out.append(
            {
                "label": "Luigi 3.8",
                "measured": False,
                "note": NOT_RERUN_NOTE,
                "overhead": dict(LUIGI_ISSUE5),
            }
        )
    for label, figures in NOT_RERUN.items():
        out.append({"label": label, "measured": False, "note": NOT_RERUN_NOTE, "overhead": figures})
    return out


def evaluate_targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 11's targets (item 7) for the embedded engine, each met or missed, with the
    measured value and the margin. `met` is None where this run did not measure it."""
    out: list[dict[str, Any]] = []
    emb = doc["engines"].get("embedded", {})

    def target(name: str, goal: str, measured: str, met: bool | None, margin: str) -> None:
        out.append(
            {"target": name, "goal": goal, "measured": measured, "met": met, "margin": margin}
        )

    for w, limit in OVERHEAD_TARGETS_MS.items():
        if w in emb:
            v = emb[w]["overhead_ms_per_task"]
            target(
                f"{w} overhead per task",
                f"≤ {limit} ms",
                f"{v:.2f} ms",
                v <= limit,
                _margin(v, limit, "ms"),
            )
    if "W1" in emb:
        v = emb["W1"]["dispatch_ms"]["p50"]
        settled = emb["W1"]["settle_dispatch_ms"]["p50"]
        target(
            "W1 chain dispatch latency p50 (parent's finish → start)",
            f"≤ {DISPATCH_P50_TARGET_MS} ms",
            f"{v:.2f} ms (from the parent's settlement: {settled:.2f} ms)",
            v <= DISPATCH_P50_TARGET_MS,
            _margin(v, DISPATCH_P50_TARGET_MS, "ms"),
        )
    if "W4" in emb:
        r = emb["W4"]
        full = r["tasks"] >= W4_FULL_WIDTH + 2
        ok = r["status"] == "succeeded"
        note = "" if full else f"this run's W4 has {r['tasks']:,} tasks, not 10,002: not judged"
        wall, rss = r["wall_s"], r["peak_rss_mib"]["engine"]
        target(
            "W4 at 10,000: wall time",
            f"< {W4_WALL_TARGET_S:.0f} s",
            f"{wall:.1f} s ({r['tasks']:,} tasks, {r['status']})",
            (wall < W4_WALL_TARGET_S and ok) if full else None,
            _margin(wall, W4_WALL_TARGET_S, "s") if full else note,
        )
        target(
            "W4 at 10,000: peak RSS (the engine's whole process)",
            f"< {W4_RSS_TARGET_MIB:.0f} MiB",
            f"{rss:.0f} MiB",
            (rss < W4_RSS_TARGET_MIB and ok) if full else None,
            _margin(rss, W4_RSS_TARGET_MIB, "MiB") if full else note,
        )
    cli = doc.get("cli")
    if cli:
        v = cli["overhead_ms_per_task"]
        target(
            f"whole-process `stratoflow run` of {cli['workload']}, per task over the floor",
            f"≤ {CLI_TARGET_MS} ms",
            f"{v:.2f} ms",
            v <= CLI_TARGET_MS,
            _margin(v, CLI_TARGET_MS, "ms"),
        )
    luigi = peer_table(doc)[0]
    for w in PEER_WORKLOADS:
        if w in emb and w in luigi["overhead"]:
            v, limit = emb[w]["overhead_ms_per_task"], luigi["overhead"][w]
            source = "measured now" if luigi["measured"] else NOT_RERUN_NOTE
            target(
                f"{w} overhead below {luigi['label']}'s",
                f"< {limit:.2f} ms ({source})",
                f"{v:.2f} ms",
                v < limit,
                f"{limit / v:.1f}× below" if v < limit else _margin(v, limit, "ms"),
            )
    return out


def evaluate_aws_targets(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 5's request and cost targets, on the emulator path's counts (what the same code
    sends to AWS)."""
    out: list[dict[str, Any]] = []

    def target(name: str, goal: str, measured: str, met: bool | None, margin: str) -> None:
        out.append(
            {"target": name, "goal": goal, "measured": measured, "met": met, "margin": margin}
        )

    if "W2" in results and "W4" in results:
        a = results["W2"]["calls_per_task"]["billable_requests"]
        b = results["W4"]["calls_per_task"]["billable_requests"]
        diff = (b - a) / a * 100
        target(
            f"W4 ({results['W4']['tasks']:,} tasks) calls/task within 10% of W2",
            "|Δ| ≤ 10%",
            f"{b:.2f} vs {a:.2f} ({diff:+.1f}%)",
            abs(diff) <= 10,
            f"{abs(diff):.1f}% apart",
        )
    for w, r in results.items():
        v = r["calls_per_task"]["billable_requests"]
        target(f"{w} billable requests/task", "≤ 8", f"{v:.2f}", v <= 8, _margin(v, 8, ""))
    for w, r in results.items():
        c = r["cost_per_million"]
        v, sfn = c["total"], c["step_functions"]
        target(f"{w} cost per million tasks", "≤ $5", f"${v:.2f}", v <= 5, "$" + _margin(v, 5, ""))
        x = c["cheaper_than_step_functions"]
        target(
            f"{w} vs Step Functions (${sfn:.2f}/M)",
            "≥ 5×",
            f"Step Functions ÷ ours = {x:.1f}×",
            x >= 5,
            f"{x / 5:.2f} of the goal" if x < 5 else f"{x - 5:.1f}× to spare",
        )
    return out


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for pkg in ("boto3", "botocore", "moto", "luigi"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:
            versions[pkg] = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024**2, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
        "packages": versions,
    }


def git_commit() -> dict[str, Any]:
    def git(*a: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *a], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


# ---------------------------------------------------------------------------- output


def _f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _spread(values: list[float], digits: int) -> str:
    """The median with the range of the runs when there were several."""
    med = sorted(values)[(len(values) - 1) // 2]
    if len(values) < 2:
        return _f(med, digits)
    return f"{_f(med, digits)} ({_f(min(values), digits)}–{_f(max(values), digits)})"


def _load(r: dict[str, Any]) -> str:
    load = r.get("load_average")
    return "—" if not load else f"{load[0]:.2f}"


def overview_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    engines = doc["engines"]
    emb, emu = engines.get("embedded", {}), engines.get("emulator", {})
    peers = peer_table(doc)
    head = [
        "overhead ms per task",
        "tasks",
        "embedded engine",
        "emulator path",
        *(f"{p['label']}" + ("" if p["measured"] else " †") for p in peers),
    ]
    rows = []
    for w in ALL_WORKLOADS:
        if w not in emb and w not in emu:
            continue
        tasks = (emb.get(w) or emu.get(w))["tasks"]
        emu_cell = "—"
        if w in emu:
            emu_cell = _f(emu[w]["overhead_ms_per_task"], 2)
            if emu[w]["tasks"] != tasks:
                emu_cell += f" (at {emu[w]['tasks']:,} tasks)"
        rows.append(
            [
                w,
                f"{tasks:,}",
                _f(emb[w]["overhead_ms_per_task"], 2) if w in emb else "—",
                emu_cell,
                *(_peer_cell(p, w) for p in peers),
            ]
        )
    cli = doc.get("cli")
    if cli:
        rows.append(
            [
                f"{cli['workload']}, whole `stratoflow run` process",
                f"{cli['tasks']:,}",
                _f(cli["overhead_ms_per_task"], 2),
                "—",
                *("—" for _ in peers),
            ]
        )
    return head, rows


def _peer_cell(peer: dict[str, Any], workload: str) -> str:
    v = peer["overhead"].get(workload)
    if v is None:
        return "—"
    return _f(v, 2) if peer["measured"] else f"{v:g}"


def engine_rows(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = [
        "workload",
        "tasks",
        "floor s",
        "wall s",
        "overhead ms/task",
        "dispatch p50 / p95 ms (parent finished → start)",
        "from the parent's settlement p50 / p95 ms",
        "first dispatch p50 / max ms",
        "tasks/s",
        "engine CPU ms/task",
        "peak RSS MiB",
        "start-up / stop s",
        "load",
    ]
    rows = []
    for w, r in results.items():
        d, s, rss = r["dispatch_ms"], r["settle_dispatch_ms"], r["peak_rss_mib"]
        fd = r["first_dispatch_ms"]
        runs = r.get("overhead_runs_ms_per_task") or [r["overhead_ms_per_task"]]
        memory = _f(rss["engine"], 0)
        if rss.get("emulator") is not None:
            memory += f" + emulator {_f(rss['emulator'], 0)}"
        rows.append(
            [
                f"{w}: {r['title']}",
                f"{r['tasks']:,}",
                _f(r["floor_s"], 2),
                _spread(r["wall_runs_s"], 2),
                _spread(runs, 2),
                f"{_f(d['p50'], 2)} / {_f(d['p95'], 2)}",
                f"{_f(s['p50'], 2)} / {_f(s['p95'], 2)}",
                f"{_f(fd['p50'], 2)} / {_f(fd['max'], 1)}",
                _f(r["throughput_tasks_per_s"], 0),
                _f((r.get("cpu_ms_per_task") or {}).get("engine"), 2),
                memory,
                f"{_f(r['startup_s'], 3)} / {_f(r.get('stop_s'), 3)}",
                _load(r),
            ]
        )
    return head, rows


def cli_rows(cli: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = [
        "workload",
        "tasks",
        "floor s",
        "wall s (whole process)",
        "overhead ms/task",
        "python start s",
        "python start + imports s",
        "peak RSS MiB",
        "load",
    ]
    rows = [
        [
            f"{cli['workload']}: {cli['title']}",
            f"{cli['tasks']:,}",
            _f(cli["floor_s"], 2),
            _spread(cli["wall_runs_s"], 2),
            _spread([(w - cli["floor_s"]) / cli["tasks"] * 1000 for w in cli["wall_runs_s"]], 2),
            _f(cli["python_start_s"], 3),
            _f(cli["python_start_and_imports_s"], 3),
            _f(cli["peak_rss_mib"], 0),
            _load(cli),
        ]
    ]
    return head, rows


def _local_deletes(r: dict[str, Any]) -> int | None:
    """DeleteMessageBatch requests the local pumps sent (results from before they were
    counted apart have none)."""
    value = r["calls"].get("local_delete_requests")
    return None if value is None else int(value)


def calls_rows(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    ops: list[str] = sorted(
        {op for r in results.values() for op in r["calls_per_task"]["by_operation"]}
    )
    from meters import POLLING_OPERATIONS

    engine_ops = [o for o in ops if o.split(".", 1)[1] not in POLLING_OPERATIONS]
    polling_ops = [o for o in ops if o not in engine_ops]
    head = ["calls per task", *results.keys()]
    rows = []
    for op in engine_ops:
        rows.append(
            [op, *(_f(r["calls_per_task"]["by_operation"].get(op, 0), 3) for r in results.values())]
        )
    rows.append(
        [
            "= engine (stratoflow's code)",
            *(_f(r["calls_per_task"]["engine"], 2) for r in results.values()),
        ]
    )
    for op in polling_ops:
        per_task = [_f(r["calls_per_task"]["by_operation"].get(op, 0), 3) for r in results.values()]
        if not op.endswith(".DeleteMessageBatch"):
            rows.append([f"{op} (event-source polling)", *per_task])
            continue
        rows.append([f"{op} (event-source polling: one per invocation)", *per_task])
        local = [_local_deletes(r) for r in results.values()]
        rows.append(
            [
                "  sent here by the local pumps (not billed)",
                *(
                    "—" if sent is None else _f(sent / r["tasks"], 3)
                    for sent, r in zip(local, results.values(), strict=True)
                ),
            ]
        )
    rows.append(
        [
            "  of which empty receives",
            *(_f(r["calls_per_task"]["polling_empty"], 3) for r in results.values()),
        ]
    )
    rows.append(
        [
            "= billable requests (engine + polling, no empty receives)",
            *(_f(r["calls_per_task"]["billable_requests"], 2) for r in results.values()),
        ]
    )
    rows.append(
        [
            "Lambda invocations",
            *(_f(r["calls_per_task"]["lambda_invocations"], 3) for r in results.values()),
        ]
    )
    rows.append(
        [
            "DynamoDB transaction items",
            *(_f(r["items"]["transaction_items_per_task"], 2) for r in results.values()),
        ]
    )
    rows.append(
        [
            "  of which per-edge counter updates",
            *(_f(r["items"]["edge_counter_items_per_task"], 2) for r in results.values()),
        ]
    )
    rows.append(
        [
            "dependents read back (BatchGetItem keys)",
            *(_f(r["items"]["edge_reads_per_task"], 2) for r in results.values()),
        ]
    )
    return head, rows


def time_rows(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Where the time goes: CPU of each process per task, and the emulator's cost per call."""
    head = ["per task", *results.keys()]

    def per_task(r: dict[str, Any], key: str) -> str:
        v = (r.get("cpu_s") or {}).get(key)
        return "—" if v is None else f"{v / r['tasks'] * 1000:.1f}"

    def per_call(r: dict[str, Any]) -> str:
        v = (r.get("cpu_s") or {}).get("emulator")
        # The requests the emulator served: deletes as the local pumps sent them.
        polling = dict(r["calls"]["polling"])
        local = _local_deletes(r)
        if local is not None:
            polling["sqs.DeleteMessageBatch"] = local
        calls = sum(r["calls"]["engine"].values()) + sum(polling.values())
        return "—" if v is None or not calls else f"{v / calls * 1000:.1f}"

    def latency(r: dict[str, Any]) -> str:
        lat = r["call_latency_ms"]
        ops = [op for op in lat if op != "sqs.ReceiveMessage"]
        n = sum(lat[op]["n"] for op in ops)
        return "—" if not n else f"{sum(lat[op]['mean'] * lat[op]['n'] for op in ops) / n:.1f}"

    rows = [
        ["engine process CPU ms", *(per_task(r, "engine") for r in results.values())],
        ["emulator process CPU ms", *(per_task(r, "emulator") for r in results.values())],
        ["commands (sh -c true) CPU ms", *(per_task(r, "commands") for r in results.values())],
        ["emulator CPU ms per API call", *(per_call(r) for r in results.values())],
        ["mean API call latency ms (receives excluded)", *(latency(r) for r in results.values())],
        [
            "executor handler ms (command excluded)",
            *(f"{r['lambda']['executor']['mean_overhead_ms']:.1f}" for r in results.values()),
        ],
        [
            "completion handler ms per invocation",
            *(f"{r['lambda']['completion']['mean_ms']:.1f}" for r in results.values()),
        ],
        [
            "reports per completion invocation",
            *(f"{r['lambda']['completion']['mean_batch']:.2f}" for r in results.values()),
        ],
    ]
    return head, rows


def cost_rows(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = ["$ per million tasks", *results.keys()]
    keys = [
        ("Lambda requests", "lambda_requests"),
        ("Lambda GB-seconds", "lambda_compute"),
        ("SQS requests", "sqs"),
        ("DynamoDB writes", "dynamodb_write"),
        ("DynamoDB reads", "dynamodb_read"),
        ("S3 requests", "s3"),
        ("= orchestration total", "total"),
        ("Step Functions Standard, same DAG", "step_functions"),
    ]
    rows = [
        [label, *(f"{r['cost_per_million'][k]:.2f}" for r in results.values())] for label, k in keys
    ]
    # Lambda's GB-seconds are the one part measured as time, here against moto; the rest
    # are counts, the same wherever the calls go.
    rows.insert(
        len(keys) - 1,
        [
            "  of which counts only (all but Lambda GB-seconds)",
            *(
                f"{r['cost_per_million']['total'] - r['cost_per_million']['lambda_compute']:.2f}"
                for r in results.values()
            ),
        ],
    )
    rows.append(
        [
            "Step Functions ÷ ours",
            *(
                f"{r['cost_per_million']['cheaper_than_step_functions']:.1f}×"
                for r in results.values()
            ),
        ]
    )
    rows.append(
        [
            "(beside: CloudWatch Logs ingestion)",
            *(f"{r['cost_per_million']['cloudwatch_logs']:.2f}" for r in results.values()),
        ]
    )
    return head, rows


def target_rows(targets: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = ["target", "goal", "measured", "met?", "by how much"]
    rows = [
        [
            t["target"],
            t["goal"],
            t["measured"],
            "met" if t["met"] else ("missed" if t["met"] is False else "n/a"),
            t["margin"],
        ]
        for t in targets
    ]
    return head, rows


def sections(doc: dict[str, Any]) -> list[tuple[str, tuple[list[str], list[list[str]]]]]:
    """The tables, in order: (title, (head, rows))."""
    engines = doc["engines"]
    out = []
    if engines:
        out.append(
            (
                "Orchestration overhead per task, ms = (wall − floor) / tasks; 2 workers, every "
                "task `true` († " + NOT_RERUN_NOTE + ")",
                overview_rows(doc),
            )
        )
    if engines.get("embedded"):
        out.append(
            (
                "The embedded engine (the local default), in-process",
                engine_rows(engines["embedded"]),
            )
        )
    if doc.get("cli"):
        out.append(("The whole `stratoflow run` process (embedded engine)", cli_rows(doc["cli"])))
    emu = engines.get("emulator")
    if emu:
        width = doc.get("emulator_w4_width")
        note = f"; W4 at {width:,} tasks" if width and "W4" in emu else ""
        out += [
            ("The emulator path (AWS adapters on moto)" + note, engine_rows(emu)),
            ("Emulator path: AWS API calls per task (at botocore's before-call)", calls_rows(emu)),
            ("Emulator path: where the time goes (per task unless marked)", time_rows(emu)),
            (
                "Emulator path: implied AWS cost of the orchestration (us-east-1 on-demand, "
                + PRICES_AS_OF
                + ")",
                cost_rows(emu),
            ),
        ]
    if doc.get("targets"):
        out.append(("Targets (issue 11, item 7): the embedded engine", target_rows(doc["targets"])))
    if doc.get("aws_targets"):
        out.append(
            (
                "Targets (issue 5): requests and cost, on the emulator path's counts",
                target_rows(doc["aws_targets"]),
            )
        )
    return out


def print_tables(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    for title, (head, rows) in sections(doc):
        table = Table(title=title, title_justify="left")
        for i, h in enumerate(head):
            table.add_column(h, justify="left" if i == 0 else "right")
        for row in rows:
            style = None
            if head[0] == "target":
                style = {"met": "green", "missed": "red"}.get(row[3])
            table.add_row(*row, style=style)
        console.print(table)
    for f in doc.get("failures", []):
        console.print(f"[red]failed[/]: {f}")


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def describe_run(doc: dict[str, Any]) -> str:
    m, g = doc["machine"], doc["git"]
    loads = [
        r["load_average"][0]
        for rs in doc["engines"].values()
        for r in rs.values()
        if r.get("load_average")
    ]
    luigi = (doc.get("peers") or {}).get("Luigi") or {}
    for r in luigi.get("workloads", {}).values():
        if r.get("load_average"):
            loads.append(r["load_average"][0])
    end = doc.get("load_average_at_end") or [None]
    return (
        f"Measured {doc['finished_at']} at commit `{(g['commit'] or '?')[:12]}`"
        + (" (with uncommitted changes)" if g.get("dirty") else "")
        + f" on {m['cpu_count']} × {m['cpu_model']}, {m['memory_gib']} GiB, Python {m['python']}"
        + f", moto {m['packages'].get('moto')}, Luigi {m['packages'].get('luigi')}. "
        + f"`make bench` took {doc.get('elapsed_s', 0) / 60:.1f} min. "
        + f"Load average (1 min) at start {m['load_average_at_start'][0]:.2f}"
        + (f", {min(loads):.2f}–{max(loads):.2f} at the children's starts" if loads else "")
        + (f", {end[0]:.2f} at the end" if end[0] is not None else "")
        + " (the machine is shared: others ran tests meanwhile). "
        + f"Workers: {doc['workers']}. "
        + (
            f"Repeats: the median of {doc['repeats']} runs per workload on the embedded engine "
            "(1 for W4), of Luigi and of the whole process; 1 run on the emulator path. "
            if doc["repeats"] > 1
            else "One run of each. "
        )
        + f"W4: {doc['w4_width']:,} wide on the embedded engine, "
        + f"{doc['emulator_w4_width']:,} on the emulator path."
    )


def markdown_block(doc: dict[str, Any]) -> str:
    parts = [DOCS_BEGIN, "", describe_run(doc), ""]
    for title, (head, rows) in sections(doc):
        parts += [f"**{title}**", "", markdown_table(head, rows), ""]
    parts.append(DOCS_END)
    return "\n".join(parts)


def update_docs(doc: dict[str, Any]) -> bool:
    if not DOCS.exists():
        return False
    text = DOCS.read_text()
    if DOCS_BEGIN not in text or DOCS_END not in text:
        return False
    head, rest = text.split(DOCS_BEGIN, 1)
    _, tail = rest.split(DOCS_END, 1)
    DOCS.write_text(head + markdown_block(doc) + tail)
    return True


def is_full(doc: dict[str, Any]) -> bool:
    """Whether `doc` is a whole `make bench` (the docs block is rewritten only from one)."""
    engines = doc.get("engines", {})
    luigi = (doc.get("peers") or {}).get("Luigi") or {}
    return (
        not doc.get("quick")
        and not doc.get("failures")
        and all(set(engines.get(e, {})) == set(ALL_WORKLOADS) for e in ENGINES)
        and doc.get("w4_width", 0) >= W4_FULL_WIDTH
        and bool(doc.get("cli"))
        and bool(luigi.get("measured"))
        and set(luigi.get("workloads", {})) == set(PEER_WORKLOADS)
    )


# ============================================================================ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--only", help="comma-separated workloads to run (default: W1,W2,W3,W4)")
    p.add_argument(
        "--engine",
        choices=(*ENGINES, "both"),
        default="both",
        help="which local engine(s) to measure (default: both)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"W4 at {W4_QUICK_WIDTH:,} (embedded) and {W4_EMULATOR_QUICK_WIDTH:,} (emulator) "
        "tasks, one run of each; docs left alone",
    )
    p.add_argument(
        "--w4-width",
        type=int,
        default=None,
        help=f"W4's width on the embedded engine (default {W4_FULL_WIDTH:,}; in a child, "
        "the width of its engine)",
    )
    p.add_argument("--emulator-w4-width", type=int, default=None, help="W4's width, emulator path")
    p.add_argument(
        "--repeats", type=int, default=None, help=f"runs per workload (default {REPEATS})"
    )
    p.add_argument("--no-peers", action="store_true", help="do not measure Luigi")
    p.add_argument("--no-cli", action="store_true", help="do not time the `stratoflow run` process")
    p.add_argument("--no-console", action="store_true", help="do not time the web console")
    p.add_argument("--workers", type=int, default=WORKERS)
    p.add_argument("--timeout", type=float, default=None, help="per run, seconds")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    p.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="re-render the tables (and the docs block) from a results file, running nothing",
    )
    # The children's modes.
    p.add_argument("--workload", help="child: run one workload in this process")
    p.add_argument("--cli", metavar="WORKLOAD", help="child: time `stratoflow run` of a workload")
    p.add_argument("--json", action="store_true", help="child: one JSON line on stdout")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else REPEATS
    if args.w4_width is None and args.workload and args.engine == "emulator":
        # A child on the emulator path, given no width: the emulator path's default.
        args.w4_width = W4_EMULATOR_QUICK_WIDTH if args.quick else W4_EMULATOR_WIDTH
    if args.w4_width is None:
        args.w4_width = W4_QUICK_WIDTH if args.quick else W4_FULL_WIDTH
    if args.emulator_w4_width is None:
        args.emulator_w4_width = W4_EMULATOR_QUICK_WIDTH if args.quick else W4_EMULATOR_WIDTH

    if args.render:
        rendered: dict[str, Any] = json.loads(args.render.read_text())
        if "engines" not in rendered:
            p.error(f"{args.render} is from an earlier bench/run.py (no 'engines'); run again")
        rendered["targets"] = evaluate_targets(rendered)
        rendered["aws_targets"] = evaluate_aws_targets(rendered["engines"].get("emulator", {}))
        print_tables(rendered)
        if is_full(rendered) and not args.no_docs and update_docs(rendered):
            print(f"docs: {DOCS} (measured block updated)")
        return 0

    if args.workload or args.cli:
        engine = "embedded" if args.engine == "both" else args.engine
        if args.cli:
            result = measure_cli(args.cli.upper(), args.workers, args.repeats)
        else:
            # The parent passes each engine's W4 width as --w4-width.
            result = measure(
                args.workload.upper(),
                engine,
                args.w4_width,
                args.workers,
                args.timeout,
                args.repeats,
            )
        print(json.dumps(result) if args.json else json.dumps(result, indent=2))
        return 0

    names = [w.strip().upper() for w in (args.only or ",".join(ALL_WORKLOADS)).split(",")]
    names = [w for w in names if w]
    unknown = set(names) - set(ALL_WORKLOADS)
    if unknown:
        p.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    engines = list(ENGINES) if args.engine == "both" else [args.engine]
    t_start = time.perf_counter()
    started = datetime.now(UTC)
    machine = machine_info()
    memory = lambda_memory()
    log(
        f"engines {', '.join(engines)}; workloads {', '.join(names)}; W4 at "
        f"{args.w4_width:,} (embedded) / {args.emulator_w4_width:,} (emulator path); "
        f"{args.repeats} run(s) each; load average {os.getloadavg()[0]:.2f}"
    )
    if "emulator" in engines and "W4" in names and args.emulator_w4_width < args.w4_width:
        log(
            f"the emulator path runs W4 at {args.emulator_w4_width:,} tasks, not "
            f"{args.w4_width:,}: it measures calls and cost per task there, and moto's time "
            "per task grows with the messages queued (--emulator-w4-width to change it)"
        )
    luigi_version = None
    if not args.no_peers and any(w in PEER_WORKLOADS for w in names):
        luigi_version = ensure_luigi(sys.executable)
        if luigi_version:
            log(f"peers: Luigi {luigi_version} will be measured on the same DAGs")
            machine["packages"]["luigi"] = luigi_version
    results: dict[str, dict[str, dict[str, Any]]] = {e: {} for e in engines}
    luigi: dict[str, Any] = {"version": luigi_version, "measured": False, "workloads": {}}
    failures: list[str] = []
    for name in names:
        for engine in engines:
            try:
                r = run_child(name, engine, args)
            except RuntimeError as exc:
                log(f"{exc}")
                failures.append(str(exc))
                continue
            if engine == "emulator":
                r["cost_per_million"] = cost_per_million(usage_of(r, memory)).as_dict()
            results[engine][name] = r
        if luigi_version and name in PEER_WORKLOADS:
            try:
                pr = run_peer_child(name, args)
            except RuntimeError as exc:
                log(f"{exc}")
                failures.append(str(exc))
                continue
            luigi["workloads"][name] = pr
            luigi["measured"] = True
    cli = None
    if not args.no_cli and "embedded" in engines and CLI_WORKLOAD in names:
        try:
            cli = run_cli_child(CLI_WORKLOAD, args)
        except RuntimeError as exc:
            log(f"{exc}")
            failures.append(str(exc))
    console = None
    if not args.no_console and not args.quick:
        try:  # the web console's run pages in chromium (bench/console.py)
            console = _run_json([sys.executable, str(BENCH / "console.py"), "--json"], "console")
        except RuntimeError as exc:
            log(f"{exc}")
            failures.append(str(exc))
    doc: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "elapsed_s": time.perf_counter() - t_start,
        "git": git_commit(),
        "machine": machine,
        "load_average_at_end": os.getloadavg(),
        "workers": args.workers,
        "repeats": args.repeats,
        "w4_width": args.w4_width,
        "emulator_w4_width": args.emulator_w4_width,
        "quick": args.quick,
        "lambda_memory_mb": memory,
        "prices": {"as_of": PRICES_AS_OF, "sources": PRICE_SOURCES, **vars(Prices())},
        "engines": {e: rs for e, rs in results.items() if rs},
        "cli": cli,
        "console": console,
        "peers": {"Luigi": luigi} if luigi_version else {},
        "peers_not_rerun": {"note": NOT_RERUN_NOTE, "overhead_ms_per_task": NOT_RERUN},
        "failures": failures,
    }
    doc["targets"] = evaluate_targets(doc)
    doc["aws_targets"] = evaluate_aws_targets(results.get("emulator", {}))
    args.results.write_text(json.dumps(doc, indent=2) + "\n")
    print_tables(doc)
    if console:
        from console import print_table as print_console

        print_console(console)
    print(f"results: {args.results} ({doc['elapsed_s'] / 60:.1f} min)")
    if is_full(doc) and not args.no_docs and update_docs(doc):
        print(f"docs: {DOCS} (measured block updated)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
