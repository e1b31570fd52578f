"""The REST API over plain HTTP on 127.0.0.1: `stratoflow local up`'s API server.

A thin adapter: each request becomes the API Gateway proxy event API Gateway would send,
and the very handler the `api` Lambda runs answers it. No auth: it listens on loopback only.
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from stratoflow.local.events import LambdaContext, api_gateway_event

DEFAULT_API_PORT = 8686
MAX_BODY_BYTES = 6 * 1024 * 1024
"""Lambda's own limit on a synchronous request."""


def call_api(
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    body: str | None = None,
) -> tuple[int, dict[str, str], str]:
    """Invoke the API handler in this process, as API Gateway would. Returns (status,
    headers, body)."""
    from stratoflow.handlers import api

    parts = urlsplit(target)
    event = api_gateway_event(
        method,
        parts.path or "/",
        query=parse_qsl(parts.query, keep_blank_values=True),
        headers=headers,
        body=body,
    )
    resp: dict[str, Any] = api.handler(event, LambdaContext("stratoflow-api", 29))
    out_headers = {k: str(v) for k, v in (resp.get("headers") or {}).items()}
    for k, values in (resp.get("multiValueHeaders") or {}).items():
        out_headers[k] = ", ".join(str(v) for v in values)
    return int(resp["statusCode"]), out_headers, str(resp.get("body") or "")


class _Handler(BaseHTTPRequestHandler):
    server_version = "stratoflow-local"
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"message": "request over 6 MiB"})
            return
        raw = self.rfile.read(length) if length else b""
        try:
            body = raw.decode("utf-8") if raw else None
        except UnicodeDecodeError:
            self._reply(HTTPStatus.BAD_REQUEST, {"message": "the body is not UTF-8 text"})
            return
        headers = {k: v for k, v in self.headers.items()}
        try:
            status, out_headers, text = call_api(
                self.command, self.path, headers=headers, body=body
            )
        except Exception as exc:  # the handler's own errors are JSON already; this is ours
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"message": f"local server: {exc}"})
            return
        data = text.encode()
        self.send_response(status)
        for k, v in out_headers.items():
            if k.lower() not in ("content-length", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _reply(self, status: HTTPStatus, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def __getattr__(self, name: str) -> Any:
        # Every method reaches the handler (TRACE, PROPFIND, …), which answers 404 or 405,
        # as API Gateway does, instead of http.server's HTML 501.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        return  # the engine's own output is what the terminal shows


class ApiServer:
    """The local API on 127.0.0.1:port, served from a background thread."""

    def __init__(self, port: int = DEFAULT_API_PORT, host: str = "127.0.0.1") -> None:
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}"

    def start(self) -> ApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
