#!/usr/bin/env python3
"""Where the embedded engine's time goes: py-spy on one benchmark child, summarised.

    .venv/bin/python bench/profile_engine.py                     # W1 on the embedded engine
    .venv/bin/python bench/profile_engine.py --workload W2 --repeats 3 --out /tmp/w2.txt
    .venv/bin/python bench/profile_engine.py --summarise /tmp/x.txt --tasks 1000
    .venv/bin/python bench/profile_engine.py --transactions  # SQLite write transactions per task

Runs `py-spy record -r 500 --format raw -o OUT -- python bench/run.py --workload W --engine
embedded --json --repeats N` (the same child `make bench` runs, with more repeats so that the
measured runs dominate the profile) and summarises OUT: samples in imports and in the floor
are set apart, and what remains (the engine's threads during the runs, and its start-up and
3-task warm-up run) is summarised by own time (the innermost Python frame: a frame that calls
into C, such as SQLite or fork/exec, is charged with the C code's time), cumulatively by module
and by stratoflow function. py-spy samples threads that are running or runnable (idle threads,
blocked in a wait, are not sampled), so a sample is about 1000 / rate ms of one thread's
active time; the figures per task divide by the tasks of the measured runs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from workloads import workloads  # noqa: E402

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse(path: Path) -> list[tuple[list[tuple[str, str]], str, int]]:
    """py-spy's raw (collapsed) output: [(frames outermost first as (function, file), the
    innermost frame's line, n)]."""
    stacks = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        frames, last = [], ""
        for frame in stack.split(";"):
            m = _FRAME.match(frame)
            frames.append((m["func"], m["file"]) if m else (frame, "?"))
            last = (m["line"] or "") if m else ""
        stacks.append((frames, last, int(count)))
    return stacks


def module_of(file: str) -> str:
    """A frame's module, from the file name py-spy prints (relative to sys.path)."""
    if file.startswith("<frozen "):
        return file[len("<frozen ") : -1].split(".")[0]
    name = file.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    for prefix in ("stratoflow.", "concurrent.", "json.", "email.", "importlib."):
        if name.startswith(prefix):
            depth = 3 if prefix == "stratoflow." else 2
            return ".".join(name.split(".")[:depth])
    return name.split(".")[0] if "." in name else name


WAITS = frozenset(
    {
        "Condition.wait",
        "Event.wait",
        "Queue.get",
        "_worker",  # concurrent.futures: an idle pool thread, blocked in its queue's get
        "Thread._wait_for_tstate_lock",
        "Thread.join",
        "Semaphore.acquire",
        "select",
        "poll",
        "sleep",
    }
)
"""Innermost frames that are a thread blocked waiting (py-spy does not always see such a
thread as idle): counted apart from the work."""


def category(frames: list[tuple[str, str]]) -> str:
    funcs = {f for f, _ in frames}
    if "_find_and_load" in funcs:
        return "imports"
    if "run_floor" in funcs or any(file == "floor.py" for _, file in frames):
        return "floor"
    if "rmtree" in funcs:
        return "cleanup (the benchmark's)"
    if not frames or not frames[-1][0].strip() or frames[-1][0] in WAITS:
        return "waiting"
    return "engine"


def _waited_in(frames: list[tuple[str, str]]) -> str:
    """Where a waiting thread waits: the innermost frame outside threading/queue/futures."""
    for func, file in reversed(frames):
        if module_of(file) not in ("threading", "queue", "concurrent.futures", "?"):
            return f"{func} ({file})"
    return "(no Python frame)" if not frames or not frames[-1][0].strip() else frames[-1][0]


def summarise(path: Path, tasks: int, rate: int, top: int) -> str:
    stacks = parse(path)
    ms = 1000 / rate
    by_cat: Counter[str] = Counter()
    own: Counter[str] = Counter()
    own_module: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    cumulative_fn: Counter[str] = Counter()
    waits: Counter[str] = Counter()
    engine_total = 0
    lines: dict[str, Counter[str]] = {}
    for frames, lineno, n in stacks:
        cat = category(frames)
        by_cat[cat] += n
        if cat == "waiting":
            waits[_waited_in(frames)] += n
        if cat != "engine":
            continue
        engine_total += n
        func, file = frames[-1]
        own[f"{func} ({file})"] += n
        lines.setdefault(f"{func} ({file})", Counter())[lineno] += n
        own_module[module_of(file)] += n
        for m in {module_of(f) for _, f in frames}:
            cumulative[m] += n
        for fn in {f"{f} ({file})" for f, file in frames if file.startswith("stratoflow/")}:
            cumulative_fn[fn] += n
    total = sum(by_cat.values())
    out = [
        f"profile {path}: {total:,} samples at {rate} Hz ({total * ms / 1000:.2f} s of "
        f"thread time); {tasks:,} tasks in the measured runs",
        "  "
        + ", ".join(
            f"{c} {n:,} ({n / total:.0%}, {n * ms / 1000:.2f} s)" for c, n in by_cat.most_common()
        ),
        f"engine at work: {engine_total:,} samples = {engine_total * ms / max(tasks, 1):.2f} ms "
        "of thread time per task (the shares below are of these samples)",
        "",
        "waiting (threads blocked, not at work), by where they wait:",
        *(
            f"  {n * ms / max(tasks, 1):6.3f} ms/task  {where}"
            for where, n in waits.most_common(min(top, 6))
        ),
        "",
    ]

    def block(title: str, counter: Counter[str]) -> None:
        out.append(title)
        for key, n in counter.most_common(top):
            share = n / engine_total if engine_total else 0
            out.append(f"  {share:6.1%}  {n * ms / max(tasks, 1):6.3f} ms/task  {key}")
        out.append("")

    block("own time, top frames (the innermost Python frame)", own)
    out.append("own time of the top frames by line")
    for key, _ in own.most_common(5):
        per_line = ", ".join(f"line {ln}: {n}" for ln, n in lines[key].most_common(4))
        out.append(f"  {key}: {per_line}")
    out.append("")
    block("own time by module", own_module)
    block("cumulative by module (each sample counted once per module on its stack)", cumulative)
    block("cumulative by stratoflow function", cumulative_fn)
    return "\n".join(out)


def count_transactions(name: str, workers: int = 2) -> str:
    """Run `name` once on the embedded engine in this process (after a warm-up run) and
    count its SQLite write transactions by caller, with their mean duration, and the queue
    receives that claimed nothing. A diagnostic: it wraps `Database.write` and
    `EmbeddedSqs._claim`, so it follows the embedded engine's internals."""
    import tempfile
    import threading
    import time
    from collections import defaultdict
    from contextlib import contextmanager
    from typing import Any

    from workloads import workflow_spec

    from stratoflow.core.model import Workflow
    from stratoflow.embedded import db as db_module
    from stratoflow.embedded import queues as queues_module
    from stratoflow.local.runtime import LocalRuntime

    write, claim = db_module.Database.write, queues_module.EmbeddedSqs._claim
    lock, active = threading.Lock(), threading.Event()
    count: Counter[str] = Counter()
    seconds: dict[str, float] = defaultdict(float)
    claims: Counter[tuple[str, bool]] = Counter()

    @contextmanager
    def counted_write(self: Any) -> Any:
        nested = self.connection().in_transaction
        caller = sys._getframe(2).f_code.co_qualname
        t0 = time.perf_counter()
        with write(self) as conn:
            yield conn
        if active.is_set() and not nested:
            with lock:
                count[caller] += 1
                seconds[caller] += time.perf_counter() - t0

    def counted_claim(self: Any, queue: str, *args: Any, **kwargs: Any) -> Any:
        result = claim(self, queue, *args, **kwargs)
        if active.is_set():
            with lock:
                claims[(queue.rsplit("/", 1)[-1], bool(result[0]))] += 1
        return result

    db_module.Database.write = counted_write  # type: ignore[method-assign]
    queues_module.EmbeddedSqs._claim = counted_claim  # type: ignore[method-assign,assignment]
    dag = workloads()[name].build()
    rt = LocalRuntime(workers=workers, state_dir=tempfile.mkdtemp(prefix="stratoflow-bench-"))
    try:
        rt.start()
        wf = Workflow.model_validate(workflow_spec(f"bench-{name.lower()}", dag))
        version = rt.register(wf, "bench")
        rt.wait(rt.request_run(wf.id, version), timeout=600)  # warm-up
        active.set()
        start = time.perf_counter()
        run_id = rt.request_run(wf.id, version)
        rt._event_for(run_id).wait(600)
        wall = time.perf_counter() - start
        active.clear()
    finally:
        rt.stop()
        db_module.Database.write = write  # type: ignore[method-assign]
        queues_module.EmbeddedSqs._claim = claim  # type: ignore[method-assign]
    n = len(dag)
    total = sum(count.values())
    out = [
        f"{name} on the embedded engine, {n:,} tasks in {wall:.2f} s: {total / n:.2f} write "
        f"transactions per task, {sum(seconds.values()) / max(total, 1) * 1000:.3f} ms each "
        "on average (the process's write lock waited for included)"
    ]
    for caller, c in count.most_common():
        out.append(f"  {c / n:6.2f} per task  {seconds[caller] / c * 1000:6.3f} ms  {caller}")
    out.append("queue receives (claims) per task:")
    for (queue, got), c in sorted(claims.items()):
        out.append(f"  {c / n:6.2f}  {queue}: {'with messages' if got else 'empty'}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--workload", default="W1")
    p.add_argument("--repeats", type=int, default=10, help="measured runs in the child")
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--out", type=Path, default=Path("/tmp/stratoflow-bench-profile.txt"))
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--summarise", type=Path, metavar="RAW", help="summarise an existing file")
    p.add_argument("--tasks", type=int, help="with --summarise: tasks of the measured runs")
    p.add_argument(
        "--transactions",
        action="store_true",
        help="instead: count the SQLite write transactions per task (no py-spy)",
    )
    args = p.parse_args(argv)
    name = args.workload.upper()
    if args.transactions:
        print(count_transactions(name))
        return 0
    tasks = args.tasks or len(workloads()[name].build()) * args.repeats
    if args.summarise:
        print(summarise(args.summarise, tasks, args.rate, args.top))
        return 0
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    child = [sys.executable, str(BENCH / "run.py"), "--workload", name, "--engine", "embedded"]
    child += ["--json", "--repeats", str(args.repeats)]
    cmd = [py_spy, "record", "-r", str(args.rate), "--format", "raw", "-o", str(args.out)]
    subprocess.run([*cmd, "--", *child], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    print(summarise(args.out, tasks, args.rate, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
