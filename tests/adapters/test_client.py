"""How the CLI finds and calls an engine's API: a stack's outputs, SigV4 signing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from moto import mock_aws

from stratoflow.client import ApiClient, TargetError, api_target, resolve, stack_target


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fixed credentials and region in the environment, no endpoint, session or profile."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def aws(aws_credentials: None) -> Iterator[None]:
    with mock_aws():
        yield


def _stack(name: str, outputs: dict[str, str]) -> None:
    import boto3

    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    boto3.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))


def test_a_stack_is_reached_through_its_outputs(aws: None) -> None:
    url = "https://abc123defg.execute-api.eu-west-1.amazonaws.com/v1/"
    _stack("stratoflow", {"ApiUrl": url, "WorkflowsBucketName": "stratoflow-workflows-1"})
    target = stack_target("stratoflow")
    assert target.client.base_url == url.rstrip("/")
    assert target.client.sign_region == "eu-west-1"  # API Gateway URLs are signed
    assert target.bucket == "stratoflow-workflows-1"


def test_a_missing_stack_or_output_is_a_clear_error(aws: None) -> None:
    with pytest.raises(TargetError, match="nope"):
        stack_target("nope")
    _stack("other", {"SomethingElse": "x"})
    with pytest.raises(TargetError, match="no ApiUrl output"):
        stack_target("other")
    with pytest.raises(TargetError, match="at most one"):
        resolve("http://127.0.0.1:1", "stratoflow", None)
    with pytest.raises(TargetError, match="expected an http"):
        api_target("ftp://example.com")


def test_a_local_api_is_not_signed() -> None:
    assert api_target("http://127.0.0.1:8686").client.sign_region is None


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Recorder.seen.append({"headers": dict(self.headers.items()), "body": body})
        data = b'{"ok": true}'
        self.send_response(201)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        return


def test_requests_to_api_gateway_are_signed_with_sigv4_for_execute_api(
    aws_credentials: None,
) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = ApiClient(f"http://127.0.0.1:{httpd.server_address[1]}", sign_region="eu-west-1")
        resp = client.request("POST", "/workflows/etl/runs", body={"params": {"a": "1"}})
    finally:
        httpd.shutdown()
    assert (resp.status, resp.doc) == (201, {"ok": True})
    [request] = _Recorder.seen
    auth = request["headers"]["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in auth
    assert "host" in auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert "X-Amz-Date" in request["headers"]
    assert json.loads(request["body"]) == {"params": {"a": "1"}}
