#!/usr/bin/env python3
"""The web console's first render of big run pages, in Debian's chromium (Playwright).

    .venv/bin/python bench/console.py            # a table
    .venv/bin/python bench/console.py --json     # one JSON line (what bench/run.py reads)

A `stratoflow local up` in a temporary home serves three workflows, each behind a root task
that sleeps, so that every run is live (polled every second) while it is measured:

* **500 tasks**: 20 chains of 25 under the root, 501 boxes;
* **10,000 tasks, chains**: 100 chains of 100, 10,001 boxes (nothing to group: the worst
  case for the browser);
* **10,000 tasks, stages**: 100 stages of 100 parallel tasks between joins, drawn as 100
  groups with their counts (+ the joins).

For each: the run page is opened in a fresh browser tab, **cold** (the server lays the
version out for the first time) and **warm** (the layout is cached), and the time from
navigation to the graph painted is read from the page's `stratoflow:graph-ready` mark;
then the time from a click on a box to its task panel open. Also the run document's size
and answer time, which the page fetches once a second while the run is live. A benchmark,
not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]


def _chains(prefix: str, chains: int, length: int) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = [{"id": "root", "command": "sleep 600"}]
    for i in range(chains * length):
        parent = "root" if i < chains else f"{prefix}{i - chains:05}"
        tasks.append({"id": f"{prefix}{i:05}", "command": "true", "depends": [parent]})
    return tasks


def _stages(stages: int, width: int) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = [{"id": "root", "command": "sleep 600"}]
    before = "root"
    for s in range(stages):
        members = [f"s{s:03}-{i:03}" for i in range(width)]
        tasks += [{"id": m, "command": "true", "depends": [before]} for m in members]
        before = f"join{s:03}"
        tasks.append({"id": before, "command": "true", "depends": members})
    return tasks


SHAPES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "500": ("500 tasks (20 chains of 25)", _chains("t", 20, 25)),
    "10000-chains": ("10,000 tasks, 100 chains of 100", _chains("t", 100, 100)),
    "10000-stages": ("10,000 tasks, 100 stages of 100", _stages(100, 99)),
}


class Engine:
    """A `stratoflow local up` on a free port, in its own home."""

    def __init__(self, base: Path) -> None:
        self.folder, self.home = base / "flows", base / "home"
        self.folder.mkdir()
        env = {
            **os.environ,
            "STRATOFLOW_HOME": str(self.home),
            "PYTHONPATH": str(ROOT / "shared"),
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stratoflow.cli",
                "local",
                "up",
                "--dir",
                str(self.folder),
                "--port",
                "0",
                "--grace",
                "1",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        state = self._until(self._state, 60, "local up's state file")
        self.api, self.token = str(state["api_url"]), str(state["token"])

    def _state(self) -> dict[str, Any] | None:
        try:
            found = json.loads((self.home / "local.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return found if found.get("api_url") and found.get("token") else None

    @staticmethod
    def _until(probe: Any, limit: float, what: str) -> Any:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            value = probe()
            if value:
                return value
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}")

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes, float]:
        req = urllib.request.Request(
            self.api + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, resp.read(), time.perf_counter() - started
        except urllib.error.HTTPError as err:
            return err.code, err.read(), time.perf_counter() - started

    def start_run(self, wid: str, tasks: list[dict[str, Any]]) -> str:
        (self.folder / f"{wid}.yaml").write_text(yaml.safe_dump({"id": wid, "tasks": tasks}))
        self._until(lambda: self.call("GET", f"/workflows/{wid}")[0] == 200, 120, wid)
        status, body, _ = self.call("POST", f"/workflows/{wid}/runs", {})
        if status not in (200, 201, 202):
            raise RuntimeError(f"trigger {wid}: {status} {body[:300]!r}")
        run_id = str(json.loads(body)["run_id"])

        def root_running() -> bool:
            doc = json.loads(self.call("GET", f"/runs/{run_id}")[1])
            return doc["tasks"]["root"]["status"] == "running"

        self._until(root_running, 120, f"{wid}'s root task running")
        return run_id

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _open(browser: Any, engine: Engine, run_id: str) -> tuple[float, Any]:
    """A fresh tab on the run page: (ms from navigation to the graph painted, the tab)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(120_000)
    tab.goto(f"{engine.api}/?token={engine.token}#/runs/{run_id}")
    tab.wait_for_selector('#run-graph[data-ready="true"]', state="attached")
    ms = tab.evaluate(
        "performance.getEntriesByName('stratoflow:graph-ready').slice(-1)[0].startTime"
    )
    return float(ms), tab


def measure(shapes: list[str]) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {"chromium": CHROMIUM, "pages": {}}
    with tempfile.TemporaryDirectory(prefix="stratoflow-console-bench-") as tmp:
        engine = Engine(Path(tmp))
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
                out["chromium_version"] = browser.version
                for key in shapes:
                    label, tasks = SHAPES[key]
                    run_id = engine.start_run(f"console-{key}", tasks)
                    cold, tab = _open(browser, engine, run_id)
                    boxes = int(tab.locator("#run-graph svg").get_attribute("data-boxes") or 0)
                    drawn = tab.locator("#run-graph g.node").count()
                    tab.context.close()
                    warm, tab = _open(browser, engine, run_id)
                    target = tab.locator("#run-graph g.node").first  # the root: on screen
                    started = time.perf_counter()
                    target.click()
                    tab.wait_for_selector("#task-panel:not([hidden])", state="visible")
                    click_ms = (time.perf_counter() - started) * 1000
                    tab.context.close()
                    _, body, took = engine.call("GET", f"/runs/{run_id}")
                    engine.call("POST", f"/runs/{run_id}/cancel")
                    out["pages"][key] = {
                        "label": label,
                        "tasks": len(tasks),
                        "boxes": boxes,
                        "boxes_drawn": drawn,
                        "first_render_cold_ms": round(cold),
                        "first_render_warm_ms": round(warm),
                        "click_to_task_panel_ms": round(click_ms),
                        "run_document_bytes": len(body),
                        "run_document_ms": round(took * 1000),
                    }
                browser.close()
        finally:
            engine.stop()
    return out


def print_table(result: dict[str, Any]) -> None:
    print(f"\nWeb console, run page first render ({result.get('chromium_version', '?')})")
    print(
        f"{'run':<34}{'boxes':>7}{'cold ms':>9}{'warm ms':>9}{'click ms':>9}"
        f"{'doc KiB':>9}{'doc ms':>8}"
    )
    for page in result["pages"].values():
        print(
            f"{page['label']:<34}{page['boxes']:>7}{page['first_render_cold_ms']:>9}"
            f"{page['first_render_warm_ms']:>9}{page['click_to_task_panel_ms']:>9}"
            f"{page['run_document_bytes'] / 1024:>9.0f}{page['run_document_ms']:>8}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON line on stdout")
    p.add_argument("--only", help=f"comma-separated pages, of {', '.join(SHAPES)}")
    args = p.parse_args(argv)
    shapes = args.only.split(",") if args.only else list(SHAPES)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: apt-get install chromium", file=sys.stderr)
        return 2
    result = measure(shapes)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
