"""The console's files, by request path: `/` is the page, `/console/<name>` its assets.

Served from the installed package (package data), so nothing is fetched from elsewhere
and no build step runs. A server asks `console_asset(path)` first for a GET; None means
the path is not the console's (an API route).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

PREFIX = "/console/"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
"""Inline styles only: the timeline's bars are placed by their style attribute."""
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,80}$")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


@dataclass(frozen=True)
class Asset:
    status: int
    content_type: str
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        """The response headers: no caching, so an upgraded package's pages are seen at
        once; nothing but this origin's own files and API (a log's text can never become
        script), no framing by other sites."""
        return {
            "Content-Type": self.content_type,
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Frame-Options": "DENY",
        }


def console_asset(path: str) -> Asset | None:
    """The console's answer to GET `path` (without its query), or None if the path is not
    the console's. An unknown `/console/...` file is a 404 here, not the API's."""
    if path in ("/", "/console", PREFIX, "/index.html"):
        return _file("index.html")
    if not path.startswith(PREFIX):
        return None
    name = path[len(PREFIX) :]
    found = _file(name) if _NAME.match(name) and ".." not in name else None
    if found is None:
        return Asset(404, "text/plain; charset=utf-8", f"no console file {name!r}\n".encode())
    return found


@functools.cache
def _file(name: str) -> Asset | None:
    kind = _TYPES.get(name[name.rfind(".") :]) if "." in name else None
    if kind is None:
        return None
    source = resources.files("stratoflow.console").joinpath("static", name)
    if not source.is_file():
        return None
    return Asset(200, kind, source.read_bytes())
