"""Listings people can use (ids whole at any width, local times, `--wide`, `-o`), and the
run-level controls: `mark`, `rerun` and a run's `timeout`, on a real `stratoflow local up`."""

from __future__ import annotations

import getpass
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import alive, cli_env, local_up, wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`stratoflow local up` on a folder of its own (a home of its own: ids may be short)."""
    base = tmp_path_factory.mktemp("controls")
    folder, home = base / "flows", base / "home"
    folder.mkdir()
    with local_up(folder, home) as up:
        yield {"home": home, "folder": folder, "api": up.api, "base": base}


def cli(
    srv: dict[str, Any], *args: str, columns: int = 120, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """`stratoflow ARGS` as a user's terminal of `columns` would run it."""
    return subprocess.run(
        [sys.executable, "-m", "stratoflow.cli", *args],
        env={**cli_env(srv["home"]), "COLUMNS": str(columns), "LC_ALL": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=srv["base"],
    )


def write(srv: dict[str, Any], name: str, text: str) -> Path:
    path = Path(srv["base"]) / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- listings


@pytest.fixture(scope="module")
def listed(server: dict[str, Any]) -> dict[str, str]:
    """A scheduled run (`nightly@20260309T063000Z`, by a backfill) and a run started by
    `stratoflow run` (an id like `1796135603123-abcdef123456`) of a long-named workflow."""
    nightly = write(
        server,
        "nightly.yaml",
        "id: nightly\nschedule: '30 6 * * *'\ntasks:\n  - id: a\n    command: 'true'\n",
    )
    assert cli(server, "upload", str(nightly)).returncode == 0
    back = cli(
        server, "backfill", "nightly", "--start", "2026-03-09T06:30:00Z", "--end",
        "2026-03-09T06:30:00Z", "--json",
    )  # fmt: skip
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout) == ["nightly@20260309T063000Z"]
    long_id = "quarterly-revenue-reconciliation-for-all-regions"
    flow = write(server, "long.yaml", f"id: {long_id}\ntasks:\n  - id: a\n    command: 'true'\n")
    ran = cli(server, "run", str(flow), "--json")
    assert ran.returncode == 0, ran.stderr
    return {
        "scheduled": "nightly@20260309T063000Z",
        "manual": json.loads(ran.stdout)["run_id"],
        "workflow": long_id,
    }


@pytest.mark.parametrize("columns", [80, 120])
def test_a_run_listing_shows_every_id_whole(
    server: dict[str, Any], listed: dict[str, str], columns: int
) -> None:
    assert re.fullmatch(r"\d{13}-[0-9a-f]{12}", listed["manual"])
    for args in (("runs",), ("runs", "--wide"), ("runs", "nightly")):
        out = cli(server, *args, columns=columns)
        assert out.returncode == 0, out.stderr
        assert listed["scheduled"] in out.stdout, out.stdout
        if args != ("runs", "nightly"):
            assert listed["manual"] in out.stdout, out.stdout
        assert max(len(line) for line in out.stdout.splitlines()) <= columns
        assert "…" not in out.stdout


@pytest.mark.parametrize("columns", [80, 120])
def test_a_workflow_listing_shows_every_id_whole(
    server: dict[str, Any], listed: dict[str, str], columns: int
) -> None:
    out = cli(server, "workflows", "--wide", columns=columns)
    assert out.returncode == 0, out.stderr
    assert listed["workflow"] in out.stdout and "nightly" in out.stdout
    assert max(len(line) for line in out.stdout.splitlines()) <= columns
    if columns == 120:  # room for the last run too (the schedule wraps)
        assert listed["manual"] in out.stdout and "schedule" in out.stdout


def test_times_are_local_and_short_in_the_table_and_utc_in_the_documents(
    server: dict[str, Any], listed: dict[str, str]
) -> None:
    table = cli(server, "runs", "--wide", columns=200)
    assert "T06:30:00" not in table.stdout and not re.search(r"\d{4}-\d\d-\d\dT", table.stdout)
    # the backfilled slot's logical date is a past day: month-day and time of this zone
    assert re.search(r"\b03-09 \d\d:30:00\b", table.stdout), table.stdout
    for header in ("v", "trigger", "logical date", "took", "redrives"):
        assert re.search(rf"┃ {header}\s+┃|┃\s+{header} ┃", table.stdout), header
    assert "backfill" in table.stdout
    narrow = cli(server, "runs")
    assert "trigger" not in narrow.stdout and "logical date" not in narrow.stdout

    as_json = json.loads(cli(server, "runs", "--json").stdout)
    assert json.loads(cli(server, "runs", "-o", "json").stdout) == as_json
    assert yaml.safe_load(cli(server, "runs", "-o", "yaml").stdout) == as_json
    [scheduled] = [r for r in as_json if r["run_id"] == listed["scheduled"]]
    assert scheduled["logical_date"] == "2026-03-09T06:30:00.000000Z"
    wf_json = json.loads(cli(server, "workflows", "--json").stdout)
    assert yaml.safe_load(cli(server, "workflows", "-o", "yaml").stdout) == wf_json
    bad = cli(server, "runs", "-o", "xml")
    assert bad.returncode == 2 and "xml" in bad.stderr


# --------------------------------------------------------------------------- mark, rerun


def run_doc(srv: dict[str, Any], *args: str) -> tuple[int, dict[str, Any]]:
    done = cli(srv, *args, "--json")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def states(doc: dict[str, Any]) -> dict[str, str]:
    return {t: s["status"] for t, s in doc["tasks"].items()}


def test_a_failed_task_marked_succeeded_lets_its_dependents_run_and_the_run_succeed(
    server: dict[str, Any],
) -> None:
    ran = Path(server["base"]) / "mark-success.ran"
    flow = write(
        server,
        "marked.yaml",
        "id: marked\ntasks:\n  - id: load\n    command: exit 3\n"
        f"  - id: report\n    depends: [load]\n    command: echo report >> {ran}\n"
        "  - id: other\n    command: 'true'\n",
    )
    assert cli(server, "upload", str(flow)).returncode == 0
    code, failed = run_doc(server, "trigger", "marked", "--wait")
    assert code == 1 and states(failed)["report"] == "upstream_failed"
    run_id = failed["run_id"]

    code, doc = run_doc(
        server, "mark", run_id, "load", "--success", "--reason", "loaded by hand", "--wait"
    )
    assert code == 0, doc
    assert states(doc) == {"load": "succeeded", "report": "succeeded", "other": "succeeded"}
    assert ran.read_text() == "report\n"  # the dependent ran; `other` was kept
    assert doc["tasks"]["other"] == failed["tasks"]["other"]
    [mark] = doc["marks"]
    assert mark["task_id"] == "load" and mark["status"] == "succeeded"
    assert mark["by"] == getpass.getuser() and mark["reason"] == "loaded by hand"
    assert mark["at"].endswith("Z")
    assert json.loads(cli(server, "status", run_id, "--json").stdout)["marks"] == [mark]
    table = cli(server, "status", run_id)
    assert f"load marked succeeded by {getpass.getuser()}" in table.stdout
    assert "loaded by hand" in table.stdout

    again = cli(server, "mark", run_id, "load", "--success")
    assert again.returncode == 2 and "already succeeded" in again.stderr
    neither = cli(server, "mark", run_id, "load")
    assert neither.returncode == 2 and "--success or --failed" in neither.stderr
    unknown = cli(server, "mark", run_id, "nope", "--failed")
    assert unknown.returncode == 2 and "'nope'" in unknown.stderr


def test_a_running_task_marked_failed_is_stopped_and_its_dependents_do_not_run(
    server: dict[str, Any],
) -> None:
    pid_file = Path(server["base"]) / "hang.pid"
    flow = write(
        server,
        "stuck.yaml",
        "id: stuck\ntasks:\n"
        f"  - id: hang\n    command: sleep 300 & echo $! > {pid_file}; wait\n"
        "  - id: after\n    depends: [hang]\n    command: 'true'\n",
    )
    assert cli(server, "upload", str(flow)).returncode == 0
    run_id = cli(server, "trigger", "stuck").stdout.strip()
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 30, "hang to start")
    sleeper = int(pid_file.read_text())

    marked = cli(server, "mark", run_id, "hang", "--failed", "--reason", "stuck on a lock")
    assert marked.returncode == 0, marked.stderr
    code, doc = run_doc(server, "status", run_id, "--wait")
    assert code == 1 and doc["status"] == "failed"
    assert states(doc) == {"hang": "failed", "after": "upstream_failed"}
    assert doc["marks"][0]["reason"] == "stuck on a lock"
    wait_until(lambda: not alive(sleeper), 10, "the marked attempt's command to be killed")
    assert doc["tasks"]["after"]["attempts"] == 0


def test_rerun_one_task_and_then_it_with_what_depends_on_it(server: dict[str, Any]) -> None:
    log = Path(server["base"]) / "rerun.log"
    flow = write(
        server,
        "rerun.yaml",
        "id: rerun\ntasks:\n"
        f"  - id: a\n    command: echo a >> {log}\n"
        f"  - id: b\n    depends: [a]\n    command: echo b >> {log}\n"
        f"  - id: c\n    depends: [b]\n    command: echo c >> {log}\n",
    )
    assert cli(server, "upload", str(flow)).returncode == 0
    code, first = run_doc(server, "trigger", "rerun", "--wait")
    assert code == 0 and log.read_text().split() == ["a", "b", "c"]
    run_id = first["run_id"]

    log.write_text("")
    code, one = run_doc(server, "rerun", run_id, "b", "--wait")
    assert code == 0 and one["status"] == "succeeded" and one["redrives"] == 1
    assert log.read_text().split() == ["b"]  # c kept: it depends on b but was not asked for
    assert [one["tasks"][t]["attempts"] for t in "abc"] == [1, 2, 1]

    log.write_text("")
    code, down = run_doc(server, "rerun", run_id, "a", "--downstream", "--wait")
    assert code == 0 and down["redrives"] == 2
    assert log.read_text().split() == ["a", "b", "c"]

    unknown = cli(server, "rerun", run_id, "zz")
    assert unknown.returncode == 2 and "no task 'zz'" in unknown.stderr
    missing = cli(server, "rerun", "no-such-run", "a")
    assert missing.returncode == 2 and "no-such-run" in missing.stderr


# --------------------------------------------------------------------------- run timeout


def test_a_run_past_its_timeout_fails_within_seconds_and_its_task_is_cancelled(
    server: dict[str, Any],
) -> None:
    pid_file = Path(server["base"]) / "slow.pid"
    flow = write(
        server,
        "slow.yaml",
        "id: slow\ntimeout: 2s\ntasks:\n"
        f"  - id: nap\n    command: sleep 30 & echo $! > {pid_file}; wait\n"
        "  - id: after\n    depends: [nap]\n    command: 'true'\n",
    )
    assert cli(server, "upload", str(flow)).returncode == 0
    began = time.monotonic()
    # --wait follows the run to its end; the subprocess' timeout is the test's deadline
    code, doc = run_doc(server, "trigger", "slow", "--wait")
    took = time.monotonic() - began
    assert code == 1 and doc["status"] == "failed", doc
    assert doc["reason"] == "run timed out after 2s"
    assert took < 20, took  # not the 30 s of the command
    assert states(doc)["after"] == "cancelled"
    wait_until(lambda: not alive(int(pid_file.read_text())), 10, "the command to be killed")
    final = wait_until(
        lambda: (
            (d := run_doc(server, "status", doc["run_id"])[1])["tasks"]["nap"]["status"]
            == "cancelled"
            and d
        ),
        10,
        "the killed attempt's report",
    )
    assert final["reason"] == "run timed out after 2s"
    table = cli(server, "status", doc["run_id"])
    assert "failed: run timed out after 2s" in table.stdout

    # `stratoflow run` (its own process, no tick) ends the same way
    direct = cli(server, "run", str(flow), "--json", timeout=60)
    assert direct.returncode == 1, direct.stderr
    assert json.loads(direct.stdout)["reason"] == "run timed out after 2s"
