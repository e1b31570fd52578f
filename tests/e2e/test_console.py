"""The web console in a real browser: Debian's chromium driven by Playwright, against a real
`stratoflow local up`.

Nothing here sleeps: Playwright's `expect` waits for the page to show what is asserted
(until its timeout), and the commands wait for files the test creates. Screenshots of the
workflows and run pages are written to a temporary folder (printed), or to
$STRATOFLOW_SCREENSHOTS (`make screenshots` writes docs/images/ so).
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from stratoflow.client import ApiClient, Target
from stratoflow.console.proxy import ConsoleProxy
from tests.support import cli_env, http_json, local_up, wait_until

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS_ENV = "STRATOFLOW_SCREENSHOTS"
WAIT_MS = 30_000

pytestmark = pytest.mark.slow
expect.set_options(timeout=WAIT_MS)  # a shared 2-core machine: the default 5 s is tight


def _install_chromium() -> None:
    """Debian's chromium, installed once per machine (the test set-up's own step; never
    `playwright install`, which downloads a browser from the internet)."""
    if CHROMIUM.exists():
        return
    with open("/tmp/stratoflow-chromium.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers: one apt-get at a time
        if CHROMIUM.exists():
            return
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            pytest.fail(
                f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        done = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
            done = subprocess.run(
                ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
        if done.returncode != 0 or not CHROMIUM.exists():
            pytest.fail(f"could not install chromium: {done.stderr[-2000:]}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    _install_chromium()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path_factory.mktemp("console-shots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"console screenshots in {folder}")
    return folder


@dataclass
class Console:
    api: str
    token: str
    folder: Path

    @property
    def url(self) -> str:
        return f"{self.api}/?token={self.token}"

    def call(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        return http_json(
            self.api, method, path, body=body, headers={"Authorization": f"Bearer {self.token}"}
        )

    def add(self, spec: dict[str, object], within: float = 30) -> str:
        """Drop a workflow file into the served folder; its id once registered."""
        wid = str(spec["id"])
        # Whole or not at all: the server's scan must not read a half-written big file.
        part = self.folder / f"{wid}.yaml.part"
        part.write_text(yaml.safe_dump(spec, sort_keys=False))
        part.replace(self.folder / f"{wid}.yaml")

        def active() -> bool:
            status, doc = self.call("GET", f"/workflows/{wid}")
            return status == 200 and doc["active_version"] is not None  # type: ignore[index]

        wait_until(active, within, f"{wid} registered")
        return wid


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    # One worker: a second ready task stays queued while the first runs, so that the graph
    # can be seen showing both states.
    base = tmp_path_factory.mktemp("console")
    folder, home = base / "flows", base / "home"
    folder.mkdir()
    with local_up(folder, home, "--workers", "1") as up:
        token = json.loads((home / "local.json").read_text())["token"]
        yield Console(up.api, token, folder)


@pytest.fixture
def page(browser: Browser, console: Console) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    tab.set_default_timeout(WAIT_MS)
    tab.goto(console.url)
    expect(tab.locator("h1")).to_have_text("Workflows")
    yield tab
    context.close()
    assert errors == [], errors  # no script error on any page the test saw


def node(page: Page, task: str) -> object:
    return page.locator(f'#run-graph g.node[data-id="{task}"]')


def accept_dialogs(page: Page) -> None:
    page.on("dialog", lambda dialog: dialog.accept())


# ------------------------------------------------------------------ scenarios


def test_the_workflows_page_lists_workflows_and_rejected_files(
    page: Page, console: Console, shots: Path
) -> None:
    console.add(
        {
            "id": "nightly-etl",
            "schedule": "0 2 * * *",
            "timezone": "Europe/Paris",
            "tasks": [{"id": "extract", "command": "true"}],
        }
    )
    (console.folder / "broken.yaml").write_text("id: broken\ntasks: [\n")
    wait_until(
        lambda: console.call("GET", "/workflows")[1]["load_errors"],  # type: ignore[index]
        30,
        "the rejected file",
    )
    page.reload()
    row = page.locator('#workflows tr[data-workflow="nightly-etl"]')
    expect(row).to_contain_text("0 2 * * * (Europe/Paris)")
    expect(page.locator("#load-errors")).to_contain_text("broken.yaml")
    # the token left the address bar once its cookie was set
    assert "token=" not in page.url

    # pausing from the page pauses the schedule
    row.get_by_role("button").click()
    expect(row.get_by_role("button")).to_have_attribute("aria-pressed", "true")
    assert console.call("GET", "/workflows/nightly-etl")[1]["paused"] is True  # type: ignore[index]
    page.screenshot(path=str(shots / "console-workflows.png"), full_page=True)


def test_two_versions_of_a_workflow_are_compared(page: Page, console: Console) -> None:
    spec: dict[str, object] = {"id": "evolving", "tasks": [{"id": "one", "command": "true"}]}
    console.add(spec)
    spec["tasks"] = [{"id": "one", "command": "true"}, {"id": "two", "command": "echo new"}]
    (console.folder / "evolving.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    wait_until(
        lambda: console.call("GET", "/workflows/evolving")[1]["active_version"] == 2,  # type: ignore[index]
        30,
        "version 2",
    )
    page.goto(f"{console.api}/#/workflows/evolving")
    expect(page.locator("#versions tbody tr")).to_have_count(2)
    expect(node_in(page, "two")).to_have_count(1)  # the active version's graph
    page.get_by_role("button", name="Compare").click()
    diff = page.locator("#version-diff")
    expect(diff.locator(".added")).to_contain_text(['"id": "two"'])
    expect(diff.locator(".removed")).to_have_count(0)
    page.locator('#versions tr[data-version="1"] button').click()  # version 1's graph
    expect(node_in(page, "two")).to_have_count(0)


def node_in(page: Page, task: str) -> object:
    return page.locator(f'.graph-box g.node[data-id="{task}"]')


def test_a_run_triggered_from_the_form_is_seen_going_from_queued_to_running_to_succeeded(
    page: Page, console: Console
) -> None:
    gate = console.folder / "gate-hello"
    wait = f'while [ ! -f "{gate}" ]; do sleep 0.05; done'
    console.add(
        {
            "id": "hello",
            "params": {"who": "world"},
            "tasks": [
                {"id": "left", "command": wait},
                {"id": "right", "command": wait},
                {
                    "id": "greet",
                    "command": 'echo "hello $STRATOFLOW_PARAM_WHO"',
                    "depends": ["left", "right"],
                },
            ],
        }
    )
    page.reload()  # the page opened before the workflow was there
    page.get_by_role("link", name="hello", exact=True).click()
    expect(page.locator("h1")).to_have_text("hello")
    field = page.get_by_label("who")
    expect(field).to_have_value("world")
    field.fill("console")
    page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page
    page.get_by_role("button", name="Trigger").click()

    expect(page).to_have_url(re.compile(r"#/runs/"))
    graph = page.locator("#run-graph")
    # one worker: one gated task runs, the other waits in the queue
    expect(graph.locator('g.node[data-state="running"]')).to_have_count(1)
    expect(graph.locator('g.node[data-state="queued"]')).to_have_count(1)
    expect(node(page, "greet")).to_have_attribute("data-state", "pending")
    expect(node(page, "greet")).to_contain_text("pending")  # the word, not only a colour

    gate.touch()
    for task in ("left", "right", "greet"):
        expect(node(page, task)).to_have_attribute("data-state", "succeeded")
    expect(page.locator("#run-status")).to_have_attribute("data-state", "succeeded")
    assert page.evaluate("window.__sameDocument") is True

    # the task's log, and the params it ran with
    node(page, "greet").click()
    expect(page.locator("#log")).to_contain_text("hello console")
    run_url = page.url
    assert "/tasks/greet" in run_url

    # the back button walks the pages back
    page.go_back()
    expect(page.locator("#task-panel")).to_be_hidden()
    page.go_back()
    expect(page.locator("h1")).to_have_text("hello")
    expect(page.locator("#runs")).to_contain_text("succeeded")

    # and a bookmarked URL opens the same page
    page.goto(run_url)
    expect(page.locator("#log")).to_contain_text("hello console")


def test_a_failed_tasks_log_and_a_retry_after_fixing_the_cause(
    page: Page, console: Console, shots: Path
) -> None:
    fixed = console.folder / "fixed-marker"
    tasks: list[dict[str, object]] = [{"id": "prepare", "command": "echo preparing"}]
    tasks += [{"id": f"shard{i:02}", "command": "true", "depends": ["prepare"]} for i in range(12)]
    tasks += [
        {
            "id": "load",
            "command": f'test -f "{fixed}" || {{ echo "load: {fixed.name} is missing"; exit 4; }}',
            "depends": [f"shard{i:02}" for i in range(12)],
        },
        {"id": "report", "command": "echo report", "depends": ["load"]},
    ]
    console.add({"id": "fragile", "tasks": tasks})
    status, run = console.call("POST", "/workflows/fragile/runs", {})
    assert status in (201, 202), run
    run_id = run["run_id"]  # type: ignore[index]
    page.goto(f"{console.api}/#/runs/{run_id}")

    expect(page.locator("#run-status")).to_have_attribute("data-state", "failed")
    expect(node(page, "load")).to_have_attribute("data-state", "failed")
    expect(node(page, "report")).to_have_attribute("data-state", "upstream_failed")
    # twelve identical siblings are one box, with their count
    group = node(page, "group:shard00")
    expect(group).to_have_attribute("data-state", "succeeded")
    expect(group).to_contain_text("✓12")
    # opening the group lists its tasks; expanding it draws them one by one
    group.click()
    expect(page.locator("#task-panel li")).to_have_count(12)
    page.get_by_role("button", name="Expand in the graph").click()
    expect(node(page, "shard07")).to_have_attribute("data-state", "succeeded")
    expect(group).to_have_count(0)

    # keyboard: focus the failed task and open it with Enter
    node(page, "load").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#task-facts")).to_contain_text("4")  # the exit code
    expect(page.locator("#log")).to_contain_text("fixed-marker is missing")

    fixed.touch()
    accept_dialogs(page)
    page.get_by_role("button", name="Retry (rerun from failure)").click()
    expect(page.locator("#action-answer")).to_contain_text("Retried")
    expect(page.locator("#run-status")).to_have_attribute("data-state", "succeeded")
    expect(node(page, "load")).to_have_attribute("data-state", "succeeded")
    expect(node(page, "report")).to_have_attribute("data-state", "succeeded")
    # the panel follows: the second attempt, and the first one's log is still there
    expect(page.locator('#attempts button[data-attempt="2"]')).to_be_visible()
    page.locator('#attempts button[data-attempt="1"]').click()
    expect(page.locator("#log")).to_contain_text("fixed-marker is missing")
    page.screenshot(path=str(shots / "console-run.png"), full_page=False)


def test_cancelling_a_long_run_cancels_its_tasks(page: Page, console: Console) -> None:
    console.add(
        {
            "id": "long",
            "tasks": [
                {"id": "sleepy", "command": "sleep 300"},
                {"id": "after", "command": "true", "depends": ["sleepy"]},
            ],
        }
    )
    status, run = console.call("POST", "/workflows/long/runs", {})
    assert status in (201, 202), run
    page.goto(f"{console.api}/#/runs/{run['run_id']}")  # type: ignore[index]
    expect(node(page, "sleepy")).to_have_attribute("data-state", "running")

    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#action-answer")).to_contain_text("Cancelled")
    expect(page.locator("#run-status")).to_have_attribute("data-state", "cancelled")
    expect(node(page, "sleepy")).to_have_attribute("data-state", "cancelled")
    expect(node(page, "after")).to_have_attribute("data-state", "cancelled")
    assert dialogs and "Cancel run" in dialogs[0]
    expect(page.get_by_role("button", name="Cancel run")).to_be_disabled()


def test_a_thousand_task_run_renders(page: Page, console: Console) -> None:
    # 40 chains of 25 behind one root: 1,001 boxes, none alike enough to group
    tasks: list[dict[str, object]] = [{"id": "root", "command": "true"}]
    for i in range(1000):
        parent = "root" if i < 40 else f"t{i - 40:04}"
        tasks.append({"id": f"t{i:04}", "command": "true", "depends": [parent]})
    console.add({"id": "thousand", "tasks": tasks}, within=60)
    status, run = console.call("POST", "/workflows/thousand/runs", {})
    assert status in (201, 202), run
    page.goto(f"{console.api}/#/runs/{run['run_id']}")  # type: ignore[index]
    expect(page.locator("#run-graph")).to_have_attribute("data-ready", "true")
    expect(page.locator("#run-graph g.node")).to_have_count(1001)
    expect(page.locator("#run-status")).to_have_attribute(
        "data-state", "succeeded", timeout=120_000
    )
    expect(page.locator('#run-graph g.node[data-state="succeeded"]')).to_have_count(1001)
    # the task table pages instead of drawing a thousand rows
    expect(page.locator("#tasks tbody tr")).to_have_count(200)


def test_an_unknown_run_or_workflow_says_so(page: Page, console: Console) -> None:
    page.goto(f"{console.api}/#/runs/no-such-run")
    expect(page.locator("h1")).to_have_text("Run no-such-run not found")
    expect(page.locator("main .error")).to_contain_text("no-such-run")
    page.goto(f"{console.api}/#/workflows/no-such-workflow")
    expect(page.locator("h1")).to_have_text("Workflow no-such-workflow not found")


def test_the_console_says_when_the_engine_is_gone(browser: Browser, tmp_path: Path) -> None:
    folder, home = tmp_path / "flows", tmp_path / "home"
    folder.mkdir()
    (folder / "slow.yaml").write_text(
        yaml.safe_dump({"id": "slow", "tasks": [{"id": "nap", "command": "sleep 300"}]})
    )
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    with contextlib.ExitStack() as stack:
        up = stack.enter_context(local_up(folder, home))
        token = json.loads((home / "local.json").read_text())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        wait_until(  # active, not only stored
            lambda: http_json(up.api, "GET", "/workflows/slow", headers=auth)[1].get(
                "active_version"
            ),
            30,
            "slow",
        )
        status, run = http_json(up.api, "POST", "/workflows/slow/runs", body={}, headers=auth)
        assert status in (201, 202), run
        tab.goto(f"{up.api}/?token={token}#/runs/{run['run_id']}")
        expect(tab.locator("#run-graph g.node")).to_have_attribute("data-state", "running")
        stack.close()  # Ctrl-C: the engine stops
        expect(tab.locator("#banner")).to_contain_text("Cannot reach the stratoflow engine")
    context.close()


def test_a_ten_thousand_task_run_stays_usable(page: Page, console: Console) -> None:
    # 100 chains of 100 under a root that waits: nothing groups, so only the boxes near
    # the view are in the page, and a task picked in the table is brought into view.
    gate = console.folder / "gate-big"
    tasks: list[dict[str, object]] = [
        {"id": "root", "command": f'while [ ! -f "{gate}" ]; do sleep 0.05; done'}
    ]
    for i in range(10_000):
        parent = "root" if i < 100 else f"t{i - 100:05}"
        tasks.append({"id": f"t{i:05}", "command": "true", "depends": [parent]})
    console.add({"id": "big", "tasks": tasks[:10_000]}, within=120)  # the root and 9,999 more
    status, run = console.call("POST", "/workflows/big/runs", {})
    assert status in (201, 202), run
    page.goto(f"{console.api}/#/runs/{run['run_id']}")  # type: ignore[index]
    expect(page.locator("#run-graph")).to_have_attribute("data-ready", "true")
    expect(page.locator("#run-graph svg")).to_have_attribute("data-boxes", "10000")
    expect(node(page, "root")).to_have_attribute("data-state", "running")
    assert 0 < page.locator("#run-graph g.node").count() < 2_000
    expect(node(page, "t09899")).to_have_count(0)  # far below the view

    page.get_by_label("Filter").fill("t09899")
    page.get_by_role("link", name="t09899", exact=True).click()
    expect(node(page, "t09899")).to_have_class(re.compile(r"\bselected\b"))
    expect(node(page, "t09899")).to_have_attribute("data-state", "pending")
    expect(page.locator("#task-panel h2")).to_have_text("t09899")
    console.call("POST", f"/runs/{run['run_id']}/cancel")  # type: ignore[index]
    expect(page.locator("#run-status")).to_have_attribute("data-state", "cancelled")
    gate.touch()


# ------------------------------------------------------------------ `stratoflow console`

KEY_ID, SECRET, REGION = "AKIDCONSOLETEST", "console-secret", "eu-west-1"
_SIGNATURE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/\d{8}/(?P<region>[^/]+)/execute-api/"
    r"aws4_request, SignedHeaders=(?P<signed>[^,]+), Signature=(?P<signature>[0-9a-f]{64})$"
)


def signature_is_valid(
    method: str, target: str, headers: Message, body: bytes, secret: str = SECRET
) -> bool:
    """Whether the request carries API Gateway's IAM auth for KEY_ID: the SigV4 signature
    made again here, from the headers it says it signed, and compared."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    found = _SIGNATURE.match(headers.get("Authorization", ""))
    if not found or found["key"] != KEY_ID:
        return False
    signed = {name: headers[name] for name in found["signed"].split(";")}
    request = AWSRequest(
        method=method, url=f"http://{headers['Host']}{target}", data=body, headers=signed
    )
    request.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(Credentials(KEY_ID, secret), "execute-api", found["region"])
    expected = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    return hmac.compare_digest(expected, found["signature"])


class StackApi(BaseHTTPRequestHandler):
    """A deployed stack's REST API, as far as these tests need it: IAM auth checked (403
    for a bad signature, as API Gateway answers), a workflow listing and pause."""

    seen: ClassVar[list[tuple[str, str]]] = []
    paused: ClassVar[bool] = False

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not signature_is_valid(self.command, self.path, self.headers, body):
            return self._json(
                403, {"message": "The request signature we calculated does not match"}
            )
        StackApi.seen.append((self.command, self.path))
        if (self.command, self.path) == ("GET", "/workflows"):
            summary = {
                "workflow_id": "remote-etl",
                "active_version": 3,
                "latest_version": 3,
                "paused": StackApi.paused,
                "schedule": "0 2 * * *",
                "timezone": "UTC",
                "next_run": None,
                "active_runs": 0,
                "last_run": None,
                "last_status": None,
            }
            return self._json(200, {"workflows": [summary], "load_errors": []})
        if (self.command, self.path) == ("POST", "/workflows/remote-etl/pause"):
            StackApi.paused = True
            return self._json(200, {"workflow_id": "remote-etl", "paused": True})
        return self._json(404, {"message": f"no route {self.command} {self.path}"})

    do_GET = do_POST = _answer

    def _json(self, status: int, doc: object) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def stack_console(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ConsoleProxy, str]]:
    """`stratoflow console`'s server for a stack whose API is the stand-in above."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    StackApi.seen.clear()
    StackApi.paused = False
    api = ThreadingHTTPServer(("127.0.0.1", 0), StackApi)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    api_url = f"http://127.0.0.1:{api.server_address[1]}"
    proxy = ConsoleProxy(Target(ApiClient(api_url, sign_region=REGION)), port=0).start()
    try:
        yield proxy, api_url
    finally:
        proxy.stop()
        api.shutdown()
        api.server_close()


def test_the_stand_in_refuses_a_request_signed_with_other_credentials(
    stack_console: tuple[ConsoleProxy, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, api_url = stack_console
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    forged = ApiClient(api_url, sign_region=REGION).request("GET", "/workflows")
    assert forged.status == 403
    assert ApiClient(api_url).request("GET", "/workflows").status == 403  # unsigned
    assert StackApi.seen == []


def test_stratoflow_console_forwards_the_pages_api_calls_signed_and_answers_its_owner_only(
    stack_console: tuple[ConsoleProxy, str],
) -> None:
    proxy, _ = stack_console
    owner = {"Authorization": f"Bearer {proxy.token}"}
    status, doc = http_json(proxy.url, "GET", "/workflows", headers=owner)
    assert status == 200, doc
    assert doc["workflows"][0]["workflow_id"] == "remote-etl"
    assert StackApi.seen == [("GET", "/workflows")]  # its signature was valid

    assert http_json(proxy.url, "GET", "/workflows")[0] == 401  # no token
    rebound = {**owner, "Host": f"evil.example:{proxy.port}"}
    assert http_json(proxy.url, "GET", "/workflows", headers=rebound)[0] == 403
    foreign = {**owner, "Origin": "https://evil.example"}
    assert http_json(proxy.url, "POST", "/workflows/remote-etl/pause", headers=foreign)[0] == 403
    assert StackApi.paused is False


def test_the_console_of_a_stack_shows_its_workflows_and_pauses_one(
    browser: Browser, stack_console: tuple[ConsoleProxy, str]
) -> None:
    proxy, _ = stack_console
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(f"{proxy.url}/?token={proxy.token}")
    row = tab.locator('#workflows tr[data-workflow="remote-etl"]')
    expect(row).to_contain_text("0 2 * * * (UTC)")
    row.get_by_role("button").click()
    expect(row.get_by_role("button")).to_have_attribute("aria-pressed", "true")
    assert ("POST", "/workflows/remote-etl/pause") in StackApi.seen
    context.close()


def test_the_console_files_come_from_the_package_and_nothing_else_does() -> None:
    from stratoflow.console.assets import console_asset

    page = console_asset("/")
    assert page is not None and page.status == 200
    assert page.content_type.startswith("text/html") and b"/console/app.js" in page.body
    script = console_asset("/console/app.js")
    assert script is not None and script.content_type.startswith("text/javascript")
    assert "default-src 'self'" in script.headers["Content-Security-Policy"]
    for path in ("/console/../assets.py", "/console/assets.py", "/console/nope.js"):
        refused = console_asset(path)
        assert refused is not None and refused.status == 404, path
    assert console_asset("/workflows") is None  # the API's


def test_the_graph_route_answers_bad_requests_with_4xx(console: Console) -> None:
    console.add({"id": "routes", "tasks": [{"id": "only", "command": "true"}]})
    status, doc = console.call("GET", "/workflows/routes/versions/1/graph")
    assert status == 200 and [n["id"] for n in doc["nodes"]] == ["only"]  # type: ignore[index]
    status, doc = console.call("GET", "/workflows/routes/versions/9/graph")
    assert status == 404 and "no version 9" in doc["message"]  # type: ignore[index]
    status, doc = console.call("GET", "/workflows/routes/versions/0/graph")
    assert status == 400 and "version" in doc["message"]  # type: ignore[index]
    status, doc = console.call("GET", "/workflows/no-such/versions/1")
    assert status == 404 and "no-such" in doc["message"]  # type: ignore[index]
    # an unknown group to expand changes nothing
    status, doc = console.call("GET", "/workflows/routes/versions/1/graph?expand=group:x,,y")
    assert status == 200 and len(doc["nodes"]) == 1  # type: ignore[index]


def test_the_console_command_serves_another_engines_api_until_ctrl_c(console: Console) -> None:
    console.add({"id": "proxied", "tasks": [{"id": "only", "command": "true"}]})
    proc = subprocess.Popen(
        [sys.executable, "-m", "stratoflow.cli", "console", "--api", console.api, "--port", "0"],
        env={**cli_env(console.folder / "elsewhere"), "STRATOFLOW_TOKEN": console.token},
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in proc.stderr or ()], daemon=True
    ).start()
    try:
        opened = None
        while opened is None:
            opened = re.search(
                r"open (http://127\.0\.0\.1:\d+)/\?token=(\S+)", lines.get(timeout=60)
            )
        url, token = opened.groups()
        status, doc = http_json(
            url, "GET", "/workflows", headers={"Authorization": f"Bearer {token}"}
        )
        assert status == 200, doc
        assert "proxied" in [w["workflow_id"] for w in doc["workflows"]]
        assert http_json(url, "GET", "/workflows")[0] == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_a_running_tasks_log_is_followed_live_and_a_long_one_shows_its_end(
    page: Page, console: Console
) -> None:
    gate = console.folder / "gate-chatty"
    console.add(
        {
            "id": "chatty",
            "tasks": [
                {
                    "id": "talk",
                    "command": f'echo first; while [ ! -f "{gate}" ]; do sleep 0.05; done; '
                    "echo second",
                },
                # 40,000 numbered lines: about 290,000 characters, more than a page
                {"id": "long", "command": "seq -f 'line %g' 1 40000", "depends": ["talk"]},
            ],
        }
    )
    status, run = console.call("POST", "/workflows/chatty/runs", {})
    assert status in (201, 202), run
    run_id = run["run_id"]  # type: ignore[index]
    page.goto(f"{console.api}/#/runs/{run_id}/tasks/talk")
    log = page.locator("#log")
    expect(log).to_contain_text("first")
    expect(page.locator("#log-note")).to_contain_text("follows live")
    gate.touch()
    expect(log).to_contain_text("second")
    expect(log).to_have_attribute("data-complete", "true")

    node(page, "long").click()
    expect(log).to_have_attribute("data-complete", "true")
    expect(log).to_contain_text("line 40000")
    shown = log.text_content() or ""
    assert not shown.startswith("line 1\n") and "\nline 1\n" not in shown  # only the end
    expect(page.locator("#log-note")).to_contain_text("are not shown")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the whole log").click()
    whole = Path(download.value.path()).read_text()
    assert whole.startswith("line 1\n") and whole.rstrip().endswith("line 40000")

    # the page route itself
    path = f"/runs/{run_id}/tasks/long/logs/page"
    status, doc = console.call("GET", f"{path}?offset=-11")
    assert status == 200 and doc["text"] == "line 40000\n"  # type: ignore[index]
    assert doc["next_offset"] == doc["size"] == doc["offset"] + 11  # type: ignore[index]
    status, doc = console.call("GET", f"{path}?offset=7&limit=7")
    assert doc["text"] == "line 2\n" and doc["next_offset"] == 14  # type: ignore[index]
    status, doc = console.call("GET", f"{path}?offset=99999999")
    assert status == 200 and doc["text"] == ""  # type: ignore[index]
    assert console.call("GET", f"{path}?limit=0")[0] == 400
    assert console.call("GET", f"/runs/{run_id}/tasks/nope/logs/page")[0] == 404


def test_a_failed_runs_compensations_are_listed(page: Page, console: Console) -> None:
    console.add(
        {
            "id": "saga",
            "tasks": [
                {"id": "book", "command": "echo booked", "compensate": "echo unbooked"},
                {"id": "pay", "command": "echo declined; exit 1", "depends": ["book"]},
            ],
        }
    )
    status, run = console.call("POST", "/workflows/saga/runs", {})
    assert status in (201, 202), run
    page.goto(f"{console.api}/#/runs/{run['run_id']}")  # type: ignore[index]
    expect(page.locator("#run-status")).to_have_attribute("data-state", "failed")
    compensations = page.locator("#compensations")
    expect(compensations.locator("h2")).to_have_text("Compensations")
    expect(compensations.locator("tbody tr")).to_contain_text(["book"])
    expect(compensations).to_contain_text("unbooked")
