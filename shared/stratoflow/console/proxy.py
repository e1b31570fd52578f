"""The console's local server for a deployed stack (`stratoflow console`): the pages are
served on 127.0.0.1 from the package, and their API calls (`/workflows…`, `/runs…`) are
forwarded to the stack's REST API, signed with the user's own AWS credentials (SigV4, as
the CLI signs). The stack gains no public endpoint and no new credentials exist. Because
whoever reaches this port acts with those credentials, it answers its owner only, as
`local up`'s API does: `Host` must name it (DNS rebinding), a state-changing request must
come from no page or one of its own (`Origin`), and every request carries the token
printed at start (the `?token=` URL sets a cookie).
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from waitress.server import create_server

from stratoflow.client import OutcomeUnknown, Target, TargetError
from stratoflow.console import DEFAULT_PORT
from stratoflow.console.assets import console_asset
from stratoflow.local.http import reply_json, send

TOKEN_COOKIE = "stratoflow_console_token"
API_PREFIXES = ("/workflows", "/runs")
FORWARDED_HEADERS = ("Content-Type", "Idempotency-Key")
MAX_BODY_BYTES = 6 * 1024 * 1024
_SAFE = ("GET", "HEAD", "OPTIONS")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class ConsoleProxy:
    """The console's pages and the forwarded API on 127.0.0.1:`port` (0: a free one)."""

    def __init__(self, target: Target, port: int = DEFAULT_PORT, token: str | None = None) -> None:
        self.target = target
        self.token = token or secrets.token_urlsafe(32)
        self._server = create_server(
            self._app, host="127.0.0.1", port=port, threads=8, ident="stratoflow-console"
        )
        self.port = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._server.run, name="console", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ConsoleProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.close()
        self._server.task_dispatcher.shutdown(timeout=5)

    # --------------------------------------------------------------- WSGI

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD") or "GET").upper()
        headers = {
            k[5:].replace("_", "-").title(): str(v)
            for k, v in environ.items()
            if k.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = str(environ["CONTENT_TYPE"])
        parts = urlsplit(str(environ.get("REQUEST_URI") or "/"))
        query = parse_qsl(parts.query, keep_blank_values=True)
        hosts = (f"127.0.0.1:{self.port}", f"localhost:{self.port}")
        if headers.get("Host", "").lower() not in hosts:
            return reply_json(start_response, 403, f"Host must be one of {', '.join(hosts)}")
        origin = headers.get("Origin")
        if (
            method not in _SAFE
            and origin is not None
            and origin not in [f"http://{h}" for h in hosts]
        ):
            return reply_json(
                start_response, 403, f"Origin {origin!r} may not change anything here"
            )
        by_query = [v for k, v in query if k == "token"]
        if not any(self._valid(t) for t in _offered(headers, by_query)):
            return reply_json(
                start_response,
                401,
                "no or wrong token: open the URL `stratoflow console` printed (with ?token=)",
            )
        cookie = (
            [("Set-Cookie", f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/")]
            if any(self._valid(t) for t in by_query)
            else []
        )
        asset = console_asset(parts.path) if method in ("GET", "HEAD") else None
        if asset is not None:
            return send(start_response, asset.status, [*asset.headers.items(), *cookie], asset.body)
        if not parts.path.startswith(API_PREFIXES):
            return reply_json(start_response, 404, f"no route {method} {parts.path}")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > MAX_BODY_BYTES:
            return reply_json(start_response, 413, "the request body is over 6 MiB")
        raw = environ["wsgi.input"].read(length) if length else b""
        forward = {k: headers[k] for k in FORWARDED_HEADERS if k in headers}
        try:
            resp = self.target.client.request(
                method,
                parts.path,
                query={k: v for k, v in query if k != "token"},
                text=raw.decode("utf-8", "replace") if raw else None,
                headers=forward,
            )
        except TargetError as err:
            return reply_json(start_response, 502, str(err))
        except OutcomeUnknown as err:
            return reply_json(start_response, 504, str(err))
        data = json.dumps(resp.doc).encode() if resp.doc is not None else b""
        return send(start_response, resp.status, [("Content-Type", "application/json")], data)

    def _valid(self, offered: str) -> bool:
        return hmac.compare_digest(offered.encode("utf-8", "replace"), self.token.encode())


def _offered(headers: dict[str, str], by_query: list[str]) -> list[str]:
    found = list(by_query)
    scheme, _, credentials = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        found.append(credentials.strip())
    for pair in headers.get("Cookie", "").split(";"):
        name, eq, value = pair.strip().partition("=")
        if eq and name.strip() == TOKEN_COOKIE:
            found.append(value.strip())
    return found
