"""The embedded emulator's own process: `python -m stratoflow.local.emulator_server`.

Run apart from the engine so that moto's request handling (pure Python) and the engine's
clients use both cores instead of sharing one interpreter lock. It prints one JSON line
with its endpoint, then serves until its standard input closes (its parent ended).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import socket
import sys
from http import HTTPStatus
from typing import Any


def main() -> None:
    from moto.server import ThreadedMotoServer

    from stratoflow.local.emulator import speed_up_moto

    speed_up_moto()
    _keep_connections_open()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    sys.stdout.write(json.dumps({"endpoint_url": f"http://{host}:{bound}"}) + "\n")
    sys.stdout.flush()
    sys.stdin.read()  # returns at EOF: the parent closed the pipe or died
    server.stop()


def _keep_connections_open() -> None:
    """Serve moto with HTTP/1.1 keep-alive, each response in one write.

    werkzeug's development server closes the connection after every response (and then
    waits up to 10 ms for stray request bytes): every API call paid a TCP handshake, a new
    server thread and that wait. botocore pools connections, so with keep-alive each client
    thread keeps one open connection and a call is one request and one response.
    """
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    MotoRequestHandler.protocol_version = "HTTP/1.1"
    MotoRequestHandler.run_wsgi = _run_wsgi  # type: ignore[method-assign]
    original_setup = MotoRequestHandler.setup

    def setup(self: Any) -> None:
        original_setup(self)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    MotoRequestHandler.setup = setup  # type: ignore[method-assign]


def _run_wsgi(self: Any) -> None:
    # The request body is read whole before the app runs, so that the connection is at the
    # next request's first byte whatever the app reads (what werkzeug's own loop cannot
    # promise, hence its closing every connection).
    length = int(self.headers.get("Content-Length") or 0)
    body = self.rfile.read(length) if length else b""
    environ = self.make_environ()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["wsgi.input_terminated"] = True
    environ["CONTENT_LENGTH"] = str(len(body))
    state: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        state["status"], state["headers"] = status, headers
        return lambda data: state.setdefault("chunks", []).append(data)

    direct = _direct_handler(environ)
    if direct is not None:
        status, headers, chunks = _dispatch(direct, environ)
    else:
        app_iter = self.server.app(environ, start_response)
        try:
            chunks = state.pop("chunks", []) + [bytes(c) for c in app_iter]
        finally:
            if hasattr(app_iter, "close"):
                app_iter.close()
        status, headers = state["status"], state["headers"]
    payload = b"" if environ["REQUEST_METHOD"] == "HEAD" else b"".join(chunks)
    code, _, reason = status.partition(" ")
    lines = [f"HTTP/1.1 {code} {reason}"]
    lines += [
        f"{k}: {v}"
        for k, v in headers
        if k.lower() not in ("content-length", "connection", "transfer-encoding")
    ]
    lines.append(f"Content-Length: {len(b''.join(chunks))}")
    if self.headers.get("Connection", "").lower() == "close":
        lines.append("Connection: close")
        self.close_connection = True
    else:
        self.close_connection = False
    self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
    self.wfile.flush()


@functools.cache
def _direct_routes() -> tuple[dict[str, Any], type]:
    """moto's handlers for the JSON-protocol services the engine calls, and its request type
    as its server builds it."""
    from moto.core.request import Request
    from moto.dynamodb.responses import DynamoHandler
    from moto.sqs.responses import SQSResponse

    class ServerRequest(Request):
        from_wsgi_server = True

    return {"DynamoDB_20120810": DynamoHandler, "AmazonSQS": SQSResponse}, ServerRequest


def _direct_handler(environ: dict[str, Any]) -> Any:
    """The moto handler of a JSON-protocol DynamoDB or SQS call, or None for anything else.

    Such a call names its operation in X-Amz-Target, so it can go straight to moto's
    handler: moto's own route (a lock-guarded service lookup, a Flask app with CORS, URL
    matching, a response object) cost about a millisecond per call, a fifth of the
    emulator's time, and decides nothing for these.
    """
    if environ["REQUEST_METHOD"] != "POST" or environ.get("PATH_INFO", "/") != "/":
        return None
    routes, _ = _direct_routes()
    return routes.get(environ.get("HTTP_X_AMZ_TARGET", "").partition(".")[0])


def _dispatch(
    handler: Any, environ: dict[str, Any]
) -> tuple[str, list[tuple[str, str]], list[bytes]]:
    """What moto's Flask route would answer (`moto.core.utils.convert_to_flask_response`)."""
    from botocore.exceptions import ClientError

    request = _direct_routes()[1](environ)
    try:
        result = handler.dispatch(request, request.raw_url, dict(request.headers))
    except ClientError as exc:
        result = 400, {}, exc.response["Error"]["Message"]
    if len(result) == 3:
        code, headers, content = result
    else:
        code, headers, content = 200, {}, result
    code = int(code)
    body = content.encode("utf-8") if isinstance(content, str) else bytes(content or b"")
    pairs = [(str(k), str(v)) for k, v in headers.items() if str(k).lower() != "status"]
    if not any(k.lower() == "content-type" for k, _ in pairs):
        pairs.append(("Content-Type", "text/html; charset=utf-8"))
    reason = HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else ""
    return f"{code} {reason}", pairs, [body]


if __name__ == "__main__":
    main()
