"""The REST API over HTTP on 127.0.0.1: `stratoflow local up`'s API server.

A thin adapter: waitress (a pure-Python HTTP server) parses the requests, and each one
becomes the API Gateway proxy event API Gateway would send, answered by the very handler
the `api` Lambda runs.

It answers its owner only. Listening on loopback is not enough: any web page the owner
opens can send a request to 127.0.0.1 (a form, or a `text/plain` fetch, needs no CORS
preflight), a page on a name rebound to 127.0.0.1 (DNS rebinding) is even same-origin, and
other users of the machine reach loopback too. So every request must

1. name this server in `Host` (127.0.0.1, localhost or [::1], with its port): 403 else;
2. if it may change something (not GET, HEAD or OPTIONS), come from no web page or from a
   page of this server (`Origin`): 403 else;
3. carry the engine's token, made when it starts and kept in the state file only its user
   can read (`Authorization: Bearer`, `X-Stratoflow-Token`, the `token` query parameter, or
   the `stratoflow_token` cookie that a valid `?token=` sets, for a browser): 401 else.

HTTP itself (request and header sizes, `Content-Length`, slow or half-sent requests, the
number of threads and waiting connections) is waitress's, configured in `ApiServer`.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

from stratoflow.console.assets import console_asset
from stratoflow.local import DEFAULT_API_PORT
from stratoflow.local.events import LambdaContext, api_gateway_event

if TYPE_CHECKING:
    from stratoflow.bootstrap import Wiring

MAX_BODY_BYTES = 6 * 1024 * 1024
"""Lambda's own limit on a synchronous request: a longer body is answered 413 unread."""
MAX_HEADER_BYTES = 64 * 1024
"""The request line and headers together (browsers send every cookie of `localhost`, of
whatever port, so this is generous): 431 beyond."""
THREADS = 16
"""Requests handled at once; more wait in the queue. Waiting connections cost no thread."""
CONNECTION_LIMIT = 500
"""Connections open at once; beyond that, new ones wait in the listen backlog."""
BACKLOG = 1024
CHANNEL_TIMEOUT_SECONDS = 30
"""A connection with no request in progress and nothing received for this long (an idle
keep-alive, or a request sent only in part) is closed."""

TOKEN_COOKIE = "stratoflow_token"
TOKEN_HEADER = "X-Stratoflow-Token"
TOKEN_QUERY = "token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_TOKEN_HEADERS = ("authorization", TOKEN_HEADER.lower())
# Framing is the server's to set; the handler's values would describe its own response.
_HOP_BY_HOP = ("content-length", "connection", "transfer-encoding", "keep-alive")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
_log = logging.getLogger("stratoflow.local.http")


def call_api(
    wiring: Wiring,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    body: str | None = None,
) -> tuple[int, dict[str, str], str]:
    """Invoke the API handler in this process on the engine `wiring` is, as API Gateway
    would. Returns (status, headers, body)."""
    parts = urlsplit(target)
    status, pairs, text = _invoke(
        wiring,
        method,
        parts.path or "/",
        parse_qsl(parts.query, keep_blank_values=True),
        headers or {},
        body,
    )
    out: dict[str, str] = {}
    for name, value in pairs:
        out[name] = f"{out[name]}, {value}" if name in out else value
    return status, out, text


def _invoke(
    wiring: Wiring,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    body: str | None,
) -> tuple[int, list[tuple[str, str]], str]:
    """The handler's answer to one request: (status, header pairs, body text)."""
    from stratoflow.handlers import api

    event = api_gateway_event(method, path, query=query, headers=headers, body=body)
    resp: dict[str, Any] = api.handle(event, LambdaContext("stratoflow-api", 29), wiring)
    pairs = [(str(k), str(v)) for k, v in (resp.get("headers") or {}).items()]
    multi = resp.get("multiValueHeaders") or {}
    single = {k.lower() for k, _ in pairs}
    for name, values in multi.items():
        if str(name).lower() not in single:
            pairs.extend((str(name), str(v)) for v in values)
    text = str(resp.get("body") or "")
    if resp.get("isBase64Encoded"):
        text = base64.b64decode(text).decode("utf-8", "replace")
    return int(resp["statusCode"]), pairs, text


class OwnerOnly:
    """The WSGI application: the owner checks, then the API handler."""

    def __init__(self, token: str, port: int, wiring: Wiring) -> None:
        self._token = token.encode()
        self.port = port
        self.wiring = wiring

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            return self._serve(environ, start_response)
        except Exception as exc:  # the handler's own errors are JSON already; this is ours
            _log.exception("local API: unexpected error")
            return reply_json(
                start_response,
                HTTPStatus.INTERNAL_SERVER_ERROR,
                f"local server: {type(exc).__name__}: {exc}",
            )

    def _serve(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD") or "GET").upper()
        headers = _headers(environ)
        refused = self._refusal(method, headers)
        if refused:
            return reply_json(start_response, *refused)
        parts = urlsplit(str(environ.get("REQUEST_URI") or "/"))
        query = parse_qsl(parts.query, keep_blank_values=True)
        by_query = [v for k, v in query if k == TOKEN_QUERY]
        if not self._authorized(headers, by_query):
            return reply_json(
                start_response,
                HTTPStatus.UNAUTHORIZED,
                ("wrong token" if _offered(headers, by_query) else "no token")
                + ": this API answers its owner only. Send the engine's token as "
                "'Authorization: Bearer TOKEN' (TOKEN is `token` in $STRATOFLOW_HOME/local.json, "
                "readable by the user who started `stratoflow local up`; the stratoflow CLI "
                "sends it itself), or open the URL `local up` printed, with ?token=, in a browser",
                [("WWW-Authenticate", 'Bearer realm="stratoflow"')],
            )
        asset = console_asset(parts.path) if method in ("GET", "HEAD") else None
        if asset is not None:  # the web console's pages (stratoflow.console)
            extra = [*asset.headers.items(), *self._cookie(by_query)]
            return send(start_response, asset.status, extra, asset.body)
        # Whole: waitress has checked Content-Length and read at most MAX_BODY_BYTES.
        raw = environ["wsgi.input"].read()
        try:
            body = raw.decode("utf-8") if raw else None
        except UnicodeDecodeError:
            return reply_json(start_response, HTTPStatus.BAD_REQUEST, "the body is not UTF-8 text")
        # The token stays here: the handler (and whatever it logs) never sees it.
        forward = {k: v for k, v in headers.items() if k.lower() not in (*_TOKEN_HEADERS, "cookie")}
        status, pairs, text = _invoke(
            self.wiring,
            method,
            parts.path or "/",
            [(k, v) for k, v in query if k != TOKEN_QUERY],
            forward,
            body,
        )
        out = [(k, v) for k, v in pairs if k.lower() not in _HOP_BY_HOP]
        out.extend(self._cookie(by_query))
        return send(start_response, status, out, text.encode())

    def _cookie(self, by_query: list[str]) -> list[tuple[str, str]]:
        """A browser opened a URL with the token (the one `local up` printed): let it in
        from now on without one."""
        if not any(self._valid(t) for t in by_query):
            return []
        value = f"{TOKEN_COOKIE}={self._token.decode()}; HttpOnly; SameSite=Strict; Path=/"
        return [("Set-Cookie", value)]

    def _refusal(self, method: str, headers: dict[str, str]) -> tuple[HTTPStatus, str] | None:
        host = headers.get("Host", "")
        if host.lower() not in self._hosts():
            return (
                HTTPStatus.FORBIDDEN,
                f"Host {host!r} is not this server: the local API answers requests for "
                f"{', '.join(self._hosts())} only (another name pointing at this machine "
                "may be a web page's DNS rebinding attack)",
            )
        origin = headers.get("Origin")
        if method not in _SAFE_METHODS and origin is not None and origin not in self._origins():
            return (
                HTTPStatus.FORBIDDEN,
                f"Origin {origin!r} may not change anything here: only requests from no web "
                f"page, or from a page of this server ({', '.join(self._origins())}), may",
            )
        return None

    def _hosts(self) -> list[str]:
        hosts = [f"{name}:{self.port}" for name in LOOPBACK_NAMES]
        return [*hosts, *LOOPBACK_NAMES] if self.port == 80 else hosts

    def _origins(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port}", f"http://localhost:{self.port}"]

    def _authorized(self, headers: dict[str, str], by_query: list[str]) -> bool:
        return any(self._valid(t) for t in _offered(headers, by_query))

    def _valid(self, offered: str) -> bool:
        return hmac.compare_digest(offered.encode("utf-8", "replace"), self._token)


def _offered(headers: dict[str, str], by_query: list[str]) -> list[str]:
    """Every token the request carries, wherever."""
    found = list(by_query)
    scheme, _, credentials = headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        found.append(credentials.strip())
    if headers.get(TOKEN_HEADER):
        found.append(headers[TOKEN_HEADER].strip())
    # By hand, not http.cookies: one odd cookie of another localhost app must not hide ours.
    for pair in headers.get("Cookie", "").split(";"):
        name, eq, value = pair.strip().partition("=")
        if eq and name.strip() == TOKEN_COOKIE:
            found.append(value.strip().strip('"'))
    return found


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    """The request's headers, named as HTTP names them (API Gateway's event keeps names;
    the handler reads them case-insensitively)."""
    headers = {
        key[5:].replace("_", "-").title(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
        if environ.get(key):
            headers[name] = str(environ[key])
    return headers


def reply_json(
    start_response: StartResponse,
    status: HTTPStatus | int,
    message: str,
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    data = json.dumps({"message": message}).encode()
    return send(
        start_response, int(status), [("Content-Type", "application/json"), *(extra or [])], data
    )


def send(
    start_response: StartResponse, status: int, headers: list[tuple[str, str]], data: bytes
) -> list[bytes]:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    start_response(
        f"{status} {phrase}",
        [
            *headers,
            ("Content-Length", str(len(data))),
            # A URL with ?token= must not leak to another site through a link or a fetch.
            ("Referrer-Policy", "no-referrer"),
            ("X-Content-Type-Options", "nosniff"),
        ],
    )
    return [data]


class _JsonErrorTask(ErrorTask):
    """waitress's own refusals (bad Content-Length, over-long body or headers, malformed
    requests) in the API's shape, `{"message": ...}`, instead of its text/plain page."""

    def execute(self) -> None:
        error = self.request.error
        if int(error.code) == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
            message = f"the request body is over {MAX_BODY_BYTES} bytes (6 MiB, Lambda's limit)"
        elif int(error.code) == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
            message = f"the request line and headers are over {MAX_HEADER_BYTES} bytes"
        else:
            message = f"{str(error.reason).lower()}: {error.body}"
        data = json.dumps({"message": message}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(data)
        self.write(data)


class _Channel(HTTPChannel):
    error_task_class = _JsonErrorTask


class ApiServer:
    """The local API on 127.0.0.1:port (0: any free port), served from a background thread
    by waitress. `token` is what callers must present (a new random one if not given)."""

    def __init__(
        self,
        wiring: Wiring,
        port: int = DEFAULT_API_PORT,
        host: str = "127.0.0.1",
        *,
        token: str | None = None,
        threads: int = THREADS,
        channel_timeout: int = CHANNEL_TIMEOUT_SECONDS,
    ) -> None:
        self.token = token or secrets.token_urlsafe(32)
        # A burst of requests waiting for a thread is normal here, not worth a warning line
        # on the engine's terminal per request.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._app = OwnerOnly(self.token, port, wiring)
        self._map: dict[int, Any] = {}
        self._server = create_server(
            self._app,
            map=self._map,
            host=host,
            port=port,
            threads=threads,
            backlog=BACKLOG,
            connection_limit=CONNECTION_LIMIT,
            channel_timeout=channel_timeout,
            # How often idle connections are looked for: often enough that the timeout
            # is kept to within half of it.
            cleanup_interval=max(1, channel_timeout // 2),
            max_request_body_size=MAX_BODY_BYTES + 1,  # waitress refuses from this size on
            max_request_header_size=MAX_HEADER_BYTES,
            # poll(), not select(): no limit of 1024 file descriptors.
            asyncore_use_poll=True,
            ident="stratoflow-local",
        )
        self._server.channel_class = _Channel
        self._app.port = int(self._server.effective_port)
        self._host = str(self._server.effective_host)
        self._thread = threading.Thread(target=self._server.run, name="stratoflow-api", daemon=True)
        self._stopped = False

    @property
    def port(self) -> int:
        return self._app.port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def start(self) -> ApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection, and end the threads: the port
        is free when this returns (waitress sets SO_REUSEADDR)."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            # In the server's own thread: its socket map is not safe to touch from here.
            self._server.trigger.pull_trigger(self._close_all)
            self._thread.join(timeout=10)
        if self._map:
            self._close_all()
        self._server.task_dispatcher.shutdown(timeout=5)

    def _close_all(self) -> None:
        for dispatcher in list(self._map.values()):
            with contextlib.suppress(OSError):  # already gone: closing is all we want
                dispatcher.close()
        self._map.clear()
