"""The local API answers its owner only, and bad HTTP never gets past it (issue 13).

Real HTTP against a real `stratoflow local up` process (its API on a free port): the
attacks a web page or another local user can make are refused and change nothing; broken
requests are answered 4xx; many at once are all answered. What needs a server setting a
test can make quick (the timeout of a half-sent request) runs on an `ApiServer` in this
process, on the embedded engine.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stratoflow.client import api_target
from stratoflow.local.http import MAX_BODY_BYTES, ApiServer
from stratoflow.local.runtime import LocalRuntime
from tests.support import cli, cli_env, http_json, local_up, remember_token

TARGET = """\
id: target
tasks:
  - id: a
    command: echo ran >> target-ran.txt
"""

CLI_FLOW = """\
id: via-cli
params: {who: world}
tasks:
  - id: greet
    command: echo "hello $STRATOFLOW_PARAM_WHO"
"""

EVIL = "id: evil\ntasks:\n  - id: a\n    command: touch pwned\n"


@dataclass
class Served:
    home: Path
    folder: Path
    api: str
    port: int
    token: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("owner")
    folder, home = base / "flows", base / "home"
    folder.mkdir()
    (folder / "target.yaml").write_text(TARGET)
    (folder / "via-cli.yaml").write_text(CLI_FLOW)
    with local_up(folder, home) as up:
        state = json.loads((home / "local.json").read_text())
        port = int(up.api.rsplit(":", 1)[1])
        yield Served(home, folder, up.api, port, str(state["token"]))


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def doc(self) -> Any:
        return json.loads(self.body)


def send(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str | None],
    body: bytes = b"",
    *,
    length: bool = True,
) -> Reply:
    """One request with exactly these headers (a None value leaves that header out); with
    `length`, the body's Content-Length unless one is given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if length and "Content-Length" not in headers and (body or method == "POST"):
            headers = {**headers, "Content-Length": str(len(body))}
        for name, value in headers.items():
            if value is not None:
                conn.putheader(name, value)
        conn.endheaders()
        if body:
            conn.send(body)
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def owner(srv: Served, **extra: str | None) -> dict[str, str | None]:
    """The headers the owner's CLI sends."""
    return {
        "Host": f"127.0.0.1:{srv.port}",
        "Authorization": f"Bearer {srv.token}",
        "Content-Type": "application/json",
        **{k.replace("_", "-"): v for k, v in extra.items()},
    }


def registered(srv: Served) -> set[str]:
    status, doc = http_json(srv.api, "GET", "/workflows")
    assert status == 200, doc
    return {w["workflow_id"] for w in doc["workflows"]}


def runs_of(srv: Served, workflow: str) -> list[dict[str, Any]]:
    status, doc = http_json(srv.api, "GET", f"/workflows/{workflow}/runs")
    assert status == 200, doc
    return list(doc["runs"])


# ------------------------------------------------------------------ only its owner


@pytest.mark.parametrize("token", [None, "owner's"], ids=["no-token", "with-the-token"])
def test_a_web_page_cannot_upload_or_trigger_across_origins(
    served: Served, token: str | None
) -> None:
    """What any page the owner opens can send without a CORS preflight: a text/plain POST.
    With the token too (a page on another port of localhost gets the cookie: cookies know
    no ports), the Origin alone refuses it."""
    page = {
        "Host": f"127.0.0.1:{served.port}",
        "Origin": "http://evil.example",
        "Content-Type": "text/plain",
        "Authorization": f"Bearer {served.token}" if token else None,
    }
    upload = send(served.port, "POST", "/workflows?name=evil.yaml", page, EVIL.encode())
    assert upload.status == 403, upload.body
    assert "Origin 'http://evil.example'" in upload.doc["message"]
    same_site = {**page, "Origin": "http://localhost:3000"}
    trigger = send(served.port, "POST", "/workflows/target/runs", same_site, b'{"params": {}}')
    assert trigger.status == 403, trigger.body

    assert "evil" not in registered(served)
    assert not (served.folder / "evil.yaml").exists()
    assert runs_of(served, "target") == []
    assert not (served.folder / "target-ran.txt").exists()


def test_a_page_of_the_server_itself_may_post(served: Served) -> None:
    headers = owner(served, Origin=f"http://localhost:{served.port}")
    reply = send(served.port, "POST", "/workflows/no-such-flow/pause", headers)
    assert reply.status == 404, reply.body  # through the checks, to the handler


@pytest.mark.parametrize(
    "host",
    ["rebind.evil.example", "rebind.evil.example:{port}", "127.0.0.1:1", "localhost", None],
)
def test_a_request_for_another_host_name_is_refused(served: Served, host: str | None) -> None:
    """DNS rebinding: a page whose name now points at 127.0.0.1 is same-origin with this
    server in the browser, but its Host header still names it."""
    headers = owner(served, Host=host.format(port=served.port) if host else None)
    reply = send(served.port, "GET", "/workflows", headers)
    assert reply.status == 403, reply.body
    assert "is not this server" in reply.doc["message"]


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "LOCALHOST", "[::1]"])
def test_the_loopback_names_with_the_port_are_this_server(served: Served, name: str) -> None:
    reply = send(served.port, "GET", "/workflows", owner(served, Host=f"{name}:{served.port}"))
    assert reply.status == 200, reply.body


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic b3duZXI6cGFzcw=="},
        {"X-Stratoflow-Token": "wrong"},
        {"Cookie": "stratoflow_token=wrong"},
    ],
    ids=["none", "wrong-bearer", "basic", "wrong-header", "wrong-cookie"],
)
def test_a_request_without_the_right_token_is_refused(
    served: Served, credentials: dict[str, str]
) -> None:
    headers = {**owner(served, Authorization=None), **credentials}
    reply = send(served.port, "GET", "/workflows", headers)
    assert reply.status == 401, reply.body
    assert "local.json" in reply.doc["message"]
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    trigger = send(served.port, "POST", "/workflows/target/runs", headers, b"{}")
    assert trigger.status == 401
    assert runs_of(served, "target") == []


def test_the_token_is_taken_in_its_own_header_too(served: Served) -> None:
    headers = owner(served, Authorization=None, X_Stratoflow_Token=served.token)
    assert send(served.port, "GET", "/workflows", headers).status == 200


def test_a_browser_opening_the_printed_url_gets_a_cookie_that_lets_it_in(served: Served) -> None:
    browser = {"Host": f"localhost:{served.port}"}
    opened = send(served.port, "GET", f"/?token={served.token}", browser)
    assert opened.status == 200, opened.body  # the web console
    assert opened.headers["Content-Type"].startswith("text/html")
    cookie = opened.headers["Set-Cookie"]
    assert cookie.startswith(f"stratoflow_token={served.token};")
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {p.strip() for p in cookie.split(";")}
    assert opened.headers["Referrer-Policy"] == "no-referrer"

    # Other cookies of localhost (any port's) come along; ours is found among them.
    jar = f'other="a b"; stratoflow_token={served.token}; x=1'
    later = send(served.port, "GET", "/workflows", {**browser, "Cookie": jar})
    assert later.status == 200, later.body
    assert "Set-Cookie" not in later.headers
    wrong = send(served.port, "GET", "/?token=nope", browser)
    assert wrong.status == 401 and "Set-Cookie" not in wrong.headers
    # Any path takes ?token=; the API's route never sees it among its query parameters.
    api = send(served.port, "GET", f"/workflows/target/runs?limit=1&token={served.token}", browser)
    assert api.status == 200, api.body
    assert api.headers["Set-Cookie"] == cookie


def test_local_up_prints_its_url_with_the_token_and_keeps_the_token_for_its_user(
    tmp_path: Path,
) -> None:
    folder, home = tmp_path / "flows", tmp_path / "home"
    folder.mkdir()
    with local_up(folder, home) as up:
        state_file = home / "local.json"
        assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
        token = json.loads(state_file.read_text())["token"]
        assert len(token) >= 43  # 32 random bytes
    assert up.proc.returncode == 0, up.stderr
    assert f"{up.api}/?token={token}" in up.stderr


# ------------------------------------------------------------------ the CLI still works


def test_the_cli_reaches_local_up_with_its_token(served: Served) -> None:
    listed = cli(served.home, "workflows", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "via-cli" in {w["workflow_id"] for w in json.loads(listed.stdout)["workflows"]}

    run = cli(served.home, "trigger", "via-cli", "--param", "who=owner", "--wait", "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["status"] == "succeeded"
    assert doc["tasks"]["greet"]["output_tail"] == "hello owner\n"

    runs = cli(served.home, "runs", "via-cli", "--json")
    assert runs.returncode == 0, runs.stderr
    assert doc["run_id"] in [r["run_id"] for r in json.loads(runs.stdout)]

    # --api with this home's local up: the token comes from its state file
    by_url = cli(served.home, "workflows", "--api", served.api, "--json")
    assert by_url.returncode == 0, by_url.stderr


def test_the_cli_elsewhere_needs_the_token_in_its_environment(
    served: Served, tmp_path: Path
) -> None:
    def workflows(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stratoflow.cli", "workflows", "--api", served.api],
            env={**cli_env(tmp_path / "another-home"), **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    refused = workflows()
    assert refused.returncode == 2, refused.stderr
    assert "no token" in refused.stderr and "Traceback" not in refused.stderr
    allowed = workflows(STRATOFLOW_TOKEN=served.token)
    assert allowed.returncode == 0, allowed.stderr
    assert "via-cli" in allowed.stdout


def test_the_cli_sends_the_state_files_token_to_that_url_only(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATOFLOW_HOME", str(served.home))
    monkeypatch.delenv("STRATOFLOW_TOKEN", raising=False)
    assert api_target(served.api).client.token == served.token
    assert api_target(served.api.replace("127.0.0.1", "LOCALHOST")).client.token is None
    for elsewhere in (f"http://127.0.0.1:{served.port + 1}", "http://example.com", "http://x:y"):
        assert api_target(elsewhere).client.token is None


# ------------------------------------------------------------------ bad HTTP, 4xx


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "5, 6"])
def test_an_invalid_content_length_is_refused(served: Served, length: str) -> None:
    headers = owner(served, Content_Length=length)
    reply = send(served.port, "POST", "/workflows/target/runs", headers, b"{}", length=False)
    assert reply.status == 400, reply.body
    assert reply.doc["message"] == "bad request: Content-Length is invalid"
    assert runs_of(served, "target") == []


def test_a_body_longer_than_its_content_length_is_not_taken_for_the_next_request(
    served: Served,
) -> None:
    """The first 2 bytes are the body (not JSON: 400); what follows is read as the next
    request on the connection, which it is not (400)."""
    body = b'{"params": {}}\r\n\r\n'
    conn = socket.create_connection(("127.0.0.1", served.port), timeout=60)
    with conn:
        head = "".join(f"{k}: {v}\r\n" for k, v in owner(served).items() if v)
        conn.sendall(
            f"POST /workflows/target/runs HTTP/1.1\r\n{head}Content-Length: 2\r\n\r\n".encode()
            + body
        )
        conn.shutdown(socket.SHUT_WR)
        answers = _read_all(conn)
    assert re.findall(rb"HTTP/1\.[01] (\d+)", answers) == [b"400", b"400"], answers
    assert b"not valid JSON" in answers and b"Start line is invalid" in answers
    assert runs_of(served, "target") == []


def test_a_body_over_6_mib_is_refused_before_it_is_read(served: Served) -> None:
    """Content-Length says 7 MiB; 64 KiB are sent, and the answer comes without the rest."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        conn.putrequest("POST", "/workflows?name=big.yaml", skip_host=True)
        for name, value in owner(served, Content_Length=str(7 * 1024 * 1024)).items():
            conn.putheader(name, str(value))
        conn.endheaders()
        conn.send(b"#" * 65536)
        resp = conn.getresponse()
        assert resp.status == 413
        assert str(MAX_BODY_BYTES) in json.loads(resp.read())["message"]
    finally:
        conn.close()
    assert "big" not in registered(served)


def test_headers_over_the_limit_are_refused(served: Served) -> None:
    reply = send(served.port, "GET", "/workflows", owner(served, X_Padding="x" * 70_000))
    assert reply.status == 431, reply.body
    assert "headers are over" in reply.doc["message"]


def test_json_nested_too_deeply_is_refused(served: Served) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    reply = send(served.port, "POST", "/workflows/target/runs", owner(served), body)
    assert reply.status == 400, reply.body
    assert "nested deeper than 64" in reply.doc["message"]
    params = b'{"params": ' + b'{"a": ' * 70 + b"1" + b"}" * 71
    assert send(served.port, "POST", "/workflows/target/runs", owner(served), params).status == 400
    assert runs_of(served, "target") == []


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/workflows/target/runs", "text/plain", b""),
        ("/workflows/target/runs", "text/plain", b'{"params": {}}'),
        ("/workflows/target/runs", "application/x-www-form-urlencoded", b"params=1"),
        ("/workflows/target/runs", "multipart/form-data", b""),
        ("/workflows/target/runs", None, b'{"params": {}}'),
        ("/workflows?name=evil.yaml", "text/plain", EVIL.encode()),
        ("/workflows?name=evil.yaml", "application/x-www-form-urlencoded", EVIL.encode()),
        ("/workflows?name=evil.yaml", None, EVIL.encode()),
    ],
)
def test_a_media_type_the_route_does_not_take_is_refused(
    served: Served, path: str, content_type: str | None, body: bytes
) -> None:
    reply = send(served.port, "POST", path, owner(served, Content_Type=content_type), body)
    assert reply.status == 415, reply.body
    assert "send application/" in reply.doc["message"]
    assert "evil" not in registered(served)
    assert runs_of(served, "target") == []


@pytest.mark.parametrize("content_type", ["application/yaml", "text/yaml", "application/json"])
def test_an_upload_is_taken_as_yaml_or_json(
    served: Served, content_type: str, tmp_path: Path
) -> None:
    name = f"up-{content_type.replace('/', '-')}"
    text = CLI_FLOW.replace("id: via-cli", f"id: {name}")
    reply = send(
        served.port,
        "POST",
        f"/workflows?name={name}.yaml",
        owner(served, Content_Type=f"{content_type}; charset=utf-8"),
        text.encode(),
    )
    assert reply.status == 201, reply.body
    assert name in registered(served)


def test_two_hundred_requests_at_once_are_all_answered(served: Served) -> None:
    """The old server's listen backlog of 5 reset some of them."""
    count = 200
    start = threading.Barrier(count)

    def one(_: int) -> int:
        start.wait(timeout=60)
        return http_json(served.api, "GET", "/workflows/target", timeout=120)[0]

    with ThreadPoolExecutor(max_workers=count) as pool:
        statuses = list(pool.map(one, range(count)))
    assert statuses == [200] * count


# ------------------------------------------------------------------ slow clients


@pytest.fixture(scope="module")
def quick_timeout(bare: LocalRuntime) -> Iterator[ApiServer]:
    """An API server closing idle connections after 1 s, on the embedded engine."""
    server = ApiServer(bare.wiring, port=0, channel_timeout=1).start()
    remember_token(server.url, server.token)
    yield server
    server.stop()


def test_half_sent_requests_hold_no_thread_block_nobody_and_are_closed(
    quick_timeout: ApiServer,
) -> None:
    server = quick_timeout
    threads_before = threading.active_count()
    half_sent = []
    for _ in range(50):
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        conn.sendall(f"POST /x HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode())
        half_sent.append(conn)
    half_body = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    half_body.sendall(
        (
            f"POST /workflows/x/runs HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {server.token}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n{"
        ).encode()
    )
    half_sent.append(half_body)
    try:
        # Others are answered meanwhile, and nothing waits in a thread of its own.
        assert http_json(server.url, "GET", "/workflows", timeout=5)[0] == 200
        assert threading.active_count() < threads_before + 5
        opened = time.monotonic()
        for conn in half_sent:
            # Closed by the server, unanswered: recv gives b"" (it blocks until then).
            assert conn.recv(1024) == b""
        assert time.monotonic() - opened < 10
    finally:
        for conn in half_sent:
            conn.close()


def test_stop_returns_at_once_and_frees_the_port(bare: LocalRuntime) -> None:
    server = ApiServer(bare.wiring, port=0).start()
    port = server.port
    idle = socket.create_connection(("127.0.0.1", port), timeout=30)  # a client that waits
    try:
        assert send(port, "GET", "/workflows", {"Host": f"127.0.0.1:{port}"}).status == 401
        began = time.monotonic()
        server.stop()
        assert time.monotonic() - began < 2
        with contextlib.suppress(ConnectionResetError):  # closed, either way
            assert idle.recv(1024) == b""
    finally:
        idle.close()
    again = ApiServer(bare.wiring, port=port).start()
    try:
        assert again.port == port
        assert send(port, "GET", "/workflows", {"Host": f"127.0.0.1:{port}"}).status == 401
    finally:
        again.stop()


def _read_all(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data
