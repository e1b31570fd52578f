#!/usr/bin/env python3
"""`make bench`: stratoflow's benchmark on the embedded emulator, through the real handlers.

    .venv/bin/python bench/run.py                 # W1–W4 and their floors; table, results, docs
    .venv/bin/python bench/run.py --quick         # W4 at 2,000 tasks; docs left alone
    .venv/bin/python bench/run.py --only W1,W2    # a subset
    .venv/bin/python bench/run.py --workload W2 --json   # one workload, JSON on stdout

Each workload runs in a fresh child process (`--workload W --json`), so its peak RSS is its
own. In the child: the floor (the same DAG on a bare thread pool, same commands), then an
engine on the embedded emulator (start-up and a warm-up run are timed apart), then the run,
with every boto3 call counted through botocore's event hooks. The parent prints the tables,
writes bench/results.json and the measured block of docs/benchmarks.md. A benchmark, not a
test: nothing here asserts anything about time.
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
from workloads import (  # noqa: E402
    W4_DEFAULT_WIDTH,
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
SETTLE_SECONDS = 0.5
"""After the run ends, time for the deleter to settle the last messages before counting."""

# Peers measured on this machine (issue 5): orchestration overhead per task, ms.
PEERS = {
    "Luigi 3.8": {"W1": 5.5, "W2": 4.6, "W3": 19.8},
    "Dagster 1.13": {"W1": 20, "W2": 19, "W3": 24},
    "Prefect 3.9": {"W1": 97, "W2": 26, "W3": 35},
    "Airflow 3.3": {"W1": 147, "W2": 66, "W3": 76},
}
LUIGI = PEERS["Luigi 3.8"]
LAMBDA_PLATFORM_LOG_BYTES = 400
"""START, END and REPORT lines Lambda writes per invocation (approximate)."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ============================================================================ child: measure


def measure(name: str, w4_width: int, workers: int, timeout: float | None) -> dict[str, Any]:
    from floor import run_floor
    from meters import POLLING_OPERATIONS, HandlerTimer, Meters

    from stratoflow import bootstrap
    from stratoflow.core.model import Workflow
    from stratoflow.handlers import completion, dispatcher, executor
    from stratoflow.local.runtime import LocalRuntime
    from stratoflow.services import run_status

    wl = workloads(w4_width)[name]
    dag = wl.build()
    n, e = len(dag), edges(dag)
    log(f"{name}: {wl.title}: {n:,} tasks, {e:,} edges")

    repeats = 3 if n <= 1000 else 1
    floors = []
    for _ in range(repeats):
        floors.append(run_floor(dag, workers))
    floor = statistics.median(floors)
    log(f"{name}: floor {floor:.2f} s (median of {repeats})")

    state = Path(tempfile.mkdtemp(prefix="stratoflow-bench-"))
    rt = LocalRuntime(workers=workers, state_dir=state, redelivery_delay=0.05)
    originals = {m: m.handler for m in (executor, completion, dispatcher)}
    t0 = time.perf_counter()
    rt.start()
    try:
        startup = time.perf_counter() - t0
        warm = Workflow.model_validate(workflow_spec("bench-warmup", chain(3)))
        rid = rt.request_run(warm.id, rt.register(warm, "bench"))
        rt.wait(rid, timeout=120)
        warmup = time.perf_counter() - t0 - startup
        wf = Workflow.model_validate(workflow_spec(f"bench-{name.lower()}", dag))
        version = rt.register(wf, "bench")
        log(f"{name}: engine up in {startup:.2f} s (+ warm-up run {warmup:.2f} s)")

        timer = HandlerTimer()
        for module in originals:
            module.handler = timer.wrap_handler(module.__name__.rsplit(".", 1)[1], module.handler)
        assert rt.clients is not None and rt.runner is not None and rt.settings is not None
        bootstrap.install_defaults(rt.ports, rt.clients, timer.wrap_runner(rt.runner))
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
        finished = getattr(rt, "_event_for", None)
        if finished is not None:
            # The completion handler's own signal: rt.wait would add its GetItem calls,
            # which are the waiter's, not the engine's, to the count.
            if not finished(run_id).wait(limit):
                raise TimeoutError(f"{name}: the run did not finish within {limit:.0f} s")
        else:
            rt.wait(run_id, timeout=limit)
        wall = time.perf_counter() - start
        cpu1 = _cpu_seconds(rt)
        time.sleep(SETTLE_SECONDS)
        timer.active = False
        calls = meters.counter.snapshot()
        detail = meters.detail
        meters.detach()
        run = rt.wait(run_id, timeout=limit)
        log_bytes = (handler_log.stat().st_size if handler_log.exists() else 0) - log_before
        log(f"{name}: run {run.status.public} in {wall:.2f} s ({n / wall:.1f} tasks/s)")

        assert rt.ports is not None
        doc = run_status(rt.ports, run_id) or {}
        sizes = _item_sizes(rt.clients.dynamodb, rt.settings.table, f"RUN#{run_id}")
        emulator_hwm = _emulator_peak_kib(rt)
    finally:
        for module, handler in originals.items():
            module.handler = handler
        rt.stop()
        shutil.rmtree(state, ignore_errors=True)

    tasks_doc = doc.get("tasks", {})
    statuses = Counter(t["status"] for t in tasks_doc.values())
    latencies = _dispatch_latencies(dag, tasks_doc)
    first_latencies = _first_dispatch_latencies(dag, tasks_doc)
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
        "workload": name,
        "title": wl.title,
        "tasks": n,
        "edges": e,
        "workers": workers,
        "status": run.status.public,
        "task_statuses": dict(statuses),
        "floor_s": floor,
        "floor_runs_s": floors,
        "startup_s": startup,
        "warmup_s": warmup,
        "wall_s": wall,
        "overhead_ms_per_task": (wall - floor) / n * 1000,
        "throughput_tasks_per_s": n / wall,
        "dispatch_ms": _percentiles(latencies),
        "first_dispatch_ms": {"n": len(first_latencies), **_percentiles(first_latencies)},
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
        "sfn_transitions": _sfn_transitions(dag),
    }


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
    return {
        "engine": own.ru_utime + own.ru_stime,
        "commands": kids.ru_utime + kids.ru_stime,
        "emulator": emulator,
    }


def _mean_ms(values: list[float]) -> float:
    return statistics.fmean(values) * 1000 if values else 0.0


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    s = sorted(values)

    def pct(p: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]

    return {"p50": pct(50), "p99": pct(99), "max": s[-1]}


def _dispatch_latencies(dag: Dag, tasks: dict[str, Any]) -> list[float]:
    """For each task with parents: its start minus its last parent's finish, in ms."""

    def ts(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    out = []
    for t, parents in dag.items():
        if not parents:
            continue
        started = ts(tasks.get(t, {}).get("started_at"))
        finishes = [ts(tasks.get(p, {}).get("finished_at")) for p in parents]
        if started is None or any(f is None for f in finishes):
            continue
        last = max(f for f in finishes if f is not None)
        out.append((started - last).total_seconds() * 1000)
    return out


def _first_dispatch_latencies(dag: Dag, tasks: dict[str, Any]) -> list[float]:
    """For each completion that made dependents ready: the first of them to start, minus
    that completion, in ms. Unlike the per-task latency, never a wait for a busy worker:
    when a fan-in's last parent (or a chain's parent) finishes, the workers are free."""

    def ts(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    first: dict[str, datetime] = {}
    finish: dict[str, datetime] = {}
    for t, parents in dag.items():
        started = ts(tasks.get(t, {}).get("started_at"))
        finishes = [(ts(tasks.get(p, {}).get("finished_at")), p) for p in parents]
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


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--workload",
        name,
        "--json",
        "--w4-width",
        str(args.w4_width),
        "--workers",
        str(args.workers),
    ]
    env = dict(os.environ)
    shared = str(ROOT / "shared")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (shared, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"workload {name} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def evaluate_targets(results: dict[str, dict[str, Any]], w4_full: bool) -> list[dict[str, Any]]:
    """The issue's targets, each met or missed, with the measured value and the margin."""
    out: list[dict[str, Any]] = []

    def target(name: str, measured: Any, goal: str, met: bool | None, margin: str) -> None:
        out.append(
            {"target": name, "measured": measured, "goal": goal, "met": met, "margin": margin}
        )

    def ratio(value: float, limit: float) -> str:
        return f"{value / limit:.1f}× the limit" if value > limit else f"{limit - value:.2f} under"

    if "W2" in results:
        v = results["W2"]["overhead_ms_per_task"]
        target("W2 overhead per task", f"{v:.1f} ms", "≤ 10 ms", v <= 10, ratio(v, 10))
    if "W1" in results:
        v = results["W1"]["dispatch_ms"]["p50"]
        target("W1 dispatch latency p50", f"{v:.1f} ms", "≤ 20 ms", v <= 20, ratio(v, 20))
    for w, luigi in LUIGI.items():
        if w in results:
            v = results[w]["overhead_ms_per_task"]
            target(
                f"{w} overhead below Luigi",
                f"{v:.1f} ms",
                f"< {luigi} ms",
                v < luigi,
                ratio(v, luigi),
            )
    if "W2" in results and "W4" in results:
        a = results["W2"]["calls_per_task"]["billable_requests"]
        b = results["W4"]["calls_per_task"]["billable_requests"]
        diff = (b - a) / a * 100
        target(
            "W4 calls/task within 10% of W2",
            f"{b:.2f} vs {a:.2f} ({diff:+.1f}%)",
            "|Δ| ≤ 10%",
            abs(diff) <= 10,
            f"{abs(diff):.1f}% apart",
        )
    for w, r in results.items():
        v = r["calls_per_task"]["billable_requests"]
        target(f"{w} billable requests/task", f"{v:.2f}", "≤ 8", v <= 8, ratio(v, 8))
    for w, r in results.items():
        c = r["cost_per_million"]
        v, sfn = c["total"], c["step_functions"]
        target(f"{w} cost per million tasks", f"${v:.2f}", "≤ $5", v <= 5, ratio(v, 5))
        x = c["cheaper_than_step_functions"]
        target(
            f"{w} vs Step Functions (${sfn:.2f}/M)",
            f"Step Functions ÷ ours = {x:.1f}×",
            "≥ 5×",
            x >= 5,
            f"{x / 5:.2f} of the goal" if x < 5 else f"{x - 5:.1f}× to spare",
        )
    if "W4" in results:
        r = results["W4"]
        rss = r["peak_rss_mib"]
        total = rss["engine"] + (rss["emulator"] or 0)
        met: bool | None = total < 1024 and w4_full and r["status"] == "succeeded"
        note = f"engine {rss['engine']:.0f} + emulator {rss['emulator'] or 0:.0f} MiB"
        if not w4_full:
            note += f"; this run's W4 has {r['tasks']:,} tasks, not 10,000"
            met = None
        target(
            "W4 (10,000) completes, peak RSS < 1 GiB", f"{total:.0f} MiB", "< 1024 MiB", met, note
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
    versions = {}
    for pkg in ("boto3", "botocore", "moto"):
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


def summary_rows(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = [
        "workload",
        "tasks",
        "floor s",
        "wall s",
        "overhead ms/task",
        "dispatch p50 / p99 ms",
        "first dispatch p50 / max ms",
        "tasks/s",
        "peak RSS engine + emulator MiB",
        "start-up s",
    ]
    rows = []
    for w, r in results.items():
        d, rss = r["dispatch_ms"], r["peak_rss_mib"]
        fd = r.get("first_dispatch_ms") or {"p50": None, "max": None}
        rows.append(
            [
                f"{w}: {r['title']}",
                f"{r['tasks']:,}",
                _f(r["floor_s"], 2),
                _f(r["wall_s"], 2),
                _f(r["overhead_ms_per_task"]),
                f"{_f(d['p50'])} / {_f(d['p99'])}",
                f"{_f(fd['p50'])} / {_f(fd['max'])}",
                _f(r["throughput_tasks_per_s"]),
                f"{_f(rss['engine'], 0)} + {_f(rss['emulator'], 0)}",
                _f(r["startup_s"], 2),
            ]
        )
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


def print_tables(results: dict[str, dict[str, Any]], targets: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    for title, (head, rows) in (
        (
            "stratoflow on the embedded emulator, 2 workers, every task `true`",
            summary_rows(results),
        ),
        ("AWS API calls per task (counted at botocore's before-call)", calls_rows(results)),
        ("Where the time goes (per task unless marked)", time_rows(results)),
        (
            "Implied AWS cost of the orchestration (us-east-1 on-demand, " + PRICES_AS_OF + ")",
            cost_rows(results),
        ),
        ("Targets (issue 5)", target_rows(targets)),
    ):
        table = Table(title=title, title_justify="left")
        for i, h in enumerate(head):
            table.add_column(h, justify="left" if i == 0 else "right")
        for row in rows:
            style = None
            if head[0] == "target":
                style = "green" if row[3] == "met" else "red"
            table.add_row(*row, style=style)
        console.print(table)


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_block(doc: dict[str, Any]) -> str:
    results, m, g = doc["workloads"], doc["machine"], doc["git"]
    parts = [
        DOCS_BEGIN,
        "",
        f"Measured {doc['finished_at']} at commit `{(g['commit'] or '?')[:12]}`"
        + (" (with uncommitted changes)" if g.get("dirty") else "")
        + f" on {m['cpu_count']} × {m['cpu_model']}, {m['memory_gib']} GiB, Python {m['python']}, "
        f"moto {m['packages'].get('moto')}; load average at start "
        f"{m['load_average_at_start'][0]:.2f}. Workers: {doc['workers']}. "
        f"W4 width: {doc['w4_width']:,}.",
        "",
        markdown_table(*summary_rows(results)),
        "",
        markdown_table(*calls_rows(results)),
        "",
        markdown_table(*time_rows(results)),
        "",
        markdown_table(*cost_rows(results)),
        "",
        markdown_table(*target_rows(doc["targets"])),
        "",
        DOCS_END,
    ]
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


# ============================================================================ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--workload", help="run one workload in this process (the parent's child)")
    p.add_argument("--json", action="store_true", help="with --workload: JSON on stdout")
    p.add_argument("--only", help="comma-separated workloads to run (default: W1,W2,W3,W4)")
    p.add_argument("--quick", action="store_true", help=f"W4 at {W4_QUICK_WIDTH:,} tasks")
    p.add_argument("--w4-width", type=int, default=None, help="W4's fan-out width")
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
    args = p.parse_args(argv)
    if args.render:
        doc = json.loads(args.render.read_text())
        w4_full = doc["w4_width"] >= W4_FULL_WIDTH
        doc["targets"] = evaluate_targets(doc["workloads"], w4_full)
        print_tables(doc["workloads"], doc["targets"])
        full = set(doc["workloads"]) == {"W1", "W2", "W3", "W4"} and not doc.get("quick")
        if full and not args.no_docs and update_docs(doc):
            print(f"docs: {DOCS} (measured block updated)")
        return 0
    if args.w4_width is None:
        args.w4_width = W4_QUICK_WIDTH if args.quick else W4_DEFAULT_WIDTH

    if args.workload:
        result = measure(args.workload, args.w4_width, args.workers, args.timeout)
        if args.json:
            print(json.dumps(result))
        else:
            print(json.dumps(result, indent=2))
        return 0

    names = [w.strip().upper() for w in (args.only or "W1,W2,W3,W4").split(",") if w.strip()]
    started = datetime.now(UTC)
    machine = machine_info()
    memory = lambda_memory()
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        r = run_child(name, args)
        cost = cost_per_million(usage_of(r, memory))
        r["cost_per_million"] = cost.as_dict()
        results[name] = r
    w4_full = args.w4_width >= W4_FULL_WIDTH
    targets = evaluate_targets(results, w4_full)
    doc = {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_commit(),
        "machine": machine,
        "workers": args.workers,
        "w4_width": args.w4_width,
        "quick": args.quick,
        "lambda_memory_mb": memory,
        "prices": {"as_of": PRICES_AS_OF, "sources": PRICE_SOURCES, **vars(Prices())},
        "workloads": results,
        "targets": targets,
    }
    args.results.write_text(json.dumps(doc, indent=2) + "\n")
    print_tables(results, targets)
    print(f"results: {args.results}")
    full = set(names) == {"W1", "W2", "W3", "W4"} and not args.quick
    if full and not args.no_docs and update_docs(doc):
        print(f"docs: {DOCS} (measured block updated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
