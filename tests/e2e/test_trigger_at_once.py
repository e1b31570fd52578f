"""Long operations answer at once, and the CLI never says "nothing done" when it cannot know.

A 20,000-task workflow's trigger and cancel are answered in under a second by `local up`'s
HTTP API, and a small workflow's run triggered the same way starts and completes. The CLI
talks to a real server that takes its request and never answers (or drops the connection):
it sends the request again with the same Idempotency-Key, then exits 3 saying the outcome
is unknown; a connection refused before anything was sent stays exit 2.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import cli_env, http_json, local_up, wait_until

WIDE = 20_000


def _timed(api: str, method: str, path: str, body: object = None) -> tuple[int, dict, float]:
    started = time.monotonic()
    status, doc = http_json(api, method, path, body=body)
    return status, doc, time.monotonic() - started


def test_a_20000_task_trigger_and_its_cancel_are_answered_at_once_by_local_up(
    tmp_path: Path,
) -> None:
    folder, home = tmp_path / "flows", tmp_path / "home"
    folder.mkdir()
    tasks = [{"id": f"t{n}", "command": "sleep 30"} for n in range(WIDE)]
    (folder / "wide.json").write_text(json.dumps({"id": "wide", "tasks": tasks}))
    (folder / "small.yaml").write_text(
        "id: small\ntasks:\n  - id: a\n    command: echo a\n"
        "  - id: b\n    command: echo b\n    depends: [a]\n"
    )
    with local_up(folder, home, "--workers", "2") as engine:
        for wf in ("wide", "small"):
            # active, not only stored: registration stores a version, then activates it
            wait_until(
                lambda w=wf: http_json(engine.api, "GET", f"/workflows/{w}")[1].get(
                    "active_version"
                ),
                60,
                wf,
            )

        # 20,000 roots: their start makes the engine busy, the answers must not wait for it
        status, run, took = _timed(engine.api, "POST", "/workflows/wide/runs", {})
        assert status == 202, run
        assert took < 1.0, f"trigger answered in {took:.2f} s"
        assert (run["status"], run["tasks"]) == ("queued", {})
        run_id = run["run_id"]
        wait_until(
            lambda: http_json(engine.api, "GET", f"/runs/{run_id}")[1]["status"] == "running",
            60,
            "the wide run to start",
        )
        status, again, took = _timed(engine.api, "POST", "/workflows/wide/runs", {})
        assert (status, took < 1.0) == (202, True), (again, took)

        status, cancelled, took = _timed(engine.api, "POST", f"/runs/{run_id}/cancel")
        assert (status, cancelled["status"], cancelled["changed"]) == (200, "cancelled", True)
        assert took < 1.0, f"cancel answered in {took:.2f} s"
        status, _, took = _timed(engine.api, "POST", f"/runs/{again['run_id']}/cancel")
        assert status == 200 and took < 1.0, took

        # a small run triggered the same way starts and completes
        status, small, _ = _timed(engine.api, "POST", "/workflows/small/runs", {})
        assert status == 202

        def finished() -> dict | None:
            doc = http_json(engine.api, "GET", f"/runs/{small['run_id']}")[1]
            return doc if doc["status"] in ("succeeded", "failed", "cancelled") else None

        done = wait_until(finished, 60, "the small run to finish")
        assert done["status"] == "succeeded"
        assert [done["tasks"][t]["output_tail"] for t in ("a", "b")] == ["a\n", "b\n"]


# --------------------------------------------------------------------------- the CLI


class Unanswering:
    """A real HTTP server on loopback that reads each request whole, records its headers,
    and then never answers (`close=False`: holds the connection) or closes the connection
    without a word (`close=True`)."""

    def __init__(self, *, close: bool) -> None:
        self.close = close
        self.requests: list[dict[str, str]] = []
        self._held: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed: the test is over
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
            }
            while len(body) < int(headers.get("content-length", "0")):
                body += conn.recv(65536)
            self.requests.append({"request": lines[0], **headers})
            if self.close:
                conn.close()
            else:
                self._held.append(conn)

    def stop(self) -> None:
        self._listener.close()
        for conn in self._held:
            conn.close()


@pytest.fixture(params=[False, True], ids=["never-answers", "drops-the-connection"])
def unanswering(request: pytest.FixtureRequest) -> Iterator[Unanswering]:
    server = Unanswering(close=request.param)
    yield server
    server.stop()


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cli_env(home), "STRATOFLOW_HTTP_TIMEOUT": "0.5"}
    env.pop("STRATOFLOW_API", None)
    return subprocess.run(
        [sys.executable, "-m", "stratoflow.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_trigger_without_an_answer_is_resent_with_its_key_then_says_outcome_unknown(
    unanswering: Unanswering, tmp_path: Path
) -> None:
    result = _cli(tmp_path, "trigger", "etl", "--param", "day=mon", "--api", unanswering.url)
    assert result.returncode == 3, result.stderr
    assert "outcome unknown: the request may have been accepted; check `stratoflow runs etl`" in (
        " ".join(result.stderr.split())
    )
    assert "Traceback" not in result.stderr
    posts = [r for r in unanswering.requests if r["request"].startswith("POST /workflows/etl/runs")]
    assert len(posts) == 4  # the request and three resends
    keys = {r.get("idempotency-key") for r in posts}
    assert len(keys) == 1 and None not in keys  # one generated key, the same every time


def test_the_users_idempotency_key_is_the_one_resent(
    unanswering: Unanswering, tmp_path: Path
) -> None:
    result = _cli(
        tmp_path, "trigger", "etl", "--idempotency-key", "nightly-1", "--api", unanswering.url
    )
    assert result.returncode == 3, result.stderr
    assert {r.get("idempotency-key") for r in unanswering.requests} == {"nightly-1"}


def test_a_cancel_without_an_answer_is_resent_then_says_outcome_unknown(
    unanswering: Unanswering, tmp_path: Path
) -> None:
    result = _cli(tmp_path, "cancel", "etl@key-1", "--api", unanswering.url)
    assert result.returncode == 3, result.stderr
    assert "check `stratoflow status etl@key-1`" in " ".join(result.stderr.split())
    assert len(unanswering.requests) == 4


def test_a_retry_without_an_answer_is_not_resent_and_says_outcome_unknown(
    unanswering: Unanswering, tmp_path: Path
) -> None:
    result = _cli(tmp_path, "retry", "etl@key-1", "--api", unanswering.url)
    assert result.returncode == 3, result.stderr
    assert "outcome unknown" in result.stderr
    assert len(unanswering.requests) == 1


def test_a_connection_refused_before_sending_is_still_nothing_done(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed: nobody listens there
    result = _cli(tmp_path, "trigger", "etl", "--api", f"http://127.0.0.1:{port}")
    assert result.returncode == 2, result.stderr
    assert "cannot reach the stratoflow API" in result.stderr
    assert "outcome unknown" not in result.stderr
