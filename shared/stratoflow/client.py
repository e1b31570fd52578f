"""How the CLI reaches an engine's REST API: over HTTP (a stack's API Gateway, signed with
SigV4, or `stratoflow local up`'s server) or in this process (an AWS endpoint such as
LocalStack, where the CLI runs the API handler itself against that endpoint).

Whichever way, the requests and the JSON documents are the same.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from stratoflow.config import OUTPUT_API_URL, OUTPUT_BUCKET

if TYPE_CHECKING:
    from stratoflow.bootstrap import Wiring

_EXECUTE_API = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
TIMEOUT_SECONDS = 35.0
ENV_HTTP_TIMEOUT = "STRATOFLOW_HTTP_TIMEOUT"
"""Seconds the CLI waits for an API's answer (default TIMEOUT_SECONDS: beyond API
Gateway's 29 s, so a deployed API's own timeout answers first)."""
RETRY_BACKOFF_SECONDS = 0.5
NO_ANSWER_STATUSES = (502, 504)
"""A gateway's answers that say nothing of what the function did: it failed or timed out
after the request reached it (API Gateway's 502 and 504)."""
ENV_TOKEN = "STRATOFLOW_TOKEN"
"""The token of a `local up`'s API reached with --api/STRATOFLOW_API from elsewhere."""


class TargetError(Exception):
    """The engine cannot be found or reached: a usage error (exit 2)."""


class OutcomeUnknown(Exception):
    """The request was sent and no answer came (a timeout, a dropped connection, a
    gateway's 502/504): it may have been carried out. Not a usage error: nothing can be
    said either way (the CLI exits 3)."""


def http_timeout() -> float:
    """The seconds to wait for an answer: env STRATOFLOW_HTTP_TIMEOUT, or TIMEOUT_SECONDS."""
    text = os.environ.get(ENV_HTTP_TIMEOUT, "").strip()
    if not text:
        return TIMEOUT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise TargetError(f"{ENV_HTTP_TIMEOUT}={text!r}: expected a number of seconds above 0")
    return value


@dataclass(frozen=True)
class ApiResponse:
    status: int
    doc: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        if isinstance(self.doc, dict) and "message" in self.doc:
            return str(self.doc["message"])
        return f"HTTP {self.status}"


class ApiClient:
    """The REST API at `base_url`, or in this process when `base_url` is None (the API's
    handler answers with `wiring`). Requests are signed with SigV4 for `sign_region` (a
    stack's API Gateway), or carry `token` as `Authorization: Bearer` (a `local up`'s
    API)."""

    def __init__(
        self,
        base_url: str | None,
        *,
        sign_region: str | None = None,
        token: str | None = None,
        wiring: Wiring | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.sign_region = sign_region
        self.token = token
        self.wiring = wiring
        self._credentials: Any = None  # resolved once: `logs --follow` signs every second

    @property
    def where(self) -> str:
        return self.base_url or "the engine (in process)"

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        text: str | None = None,
        headers: Mapping[str, str] | None = None,
        retries: int = 0,
    ) -> ApiResponse:
        """Send one request. With `retries`, a request whose outcome is unknown (see
        `OutcomeUnknown`) is sent again as it was, headers included, up to that many times,
        backing off: only for requests that are safe to repeat (an Idempotency-Key, a
        cancel). Raises TargetError if it could not be sent, OutcomeUnknown if it was and
        no answer came."""
        target = path
        q = {k: v for k, v in (query or {}).items() if v is not None}
        if q:
            target += "?" + urlencode(q)
        payload = text if text is not None else (json.dumps(body) if body is not None else None)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if self.base_url is None:
            from stratoflow.local.http import call_api

            if self.wiring is None:
                raise TargetError("no engine to answer in this process")
            status, _, out = call_api(self.wiring, method, target, headers=hdrs, body=payload)
            return ApiResponse(status, _parse(out))
        timeout = http_timeout()
        for attempt in range(retries + 1):
            try:
                resp = self._http(method, self.base_url + target, hdrs, payload, timeout)
            except OutcomeUnknown:
                if attempt == retries:
                    raise
            else:
                if resp.status not in NO_ANSWER_STATUSES:
                    return resp
                if attempt == retries:
                    raise OutcomeUnknown(
                        f"the stratoflow API at {self.base_url} answered {resp.status} "
                        f"({resp.message})"
                    )
            time.sleep(min(RETRY_BACKOFF_SECONDS * 2**attempt, timeout))
        raise AssertionError("unreachable")

    def _http(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        payload: str | None,
        timeout: float = TIMEOUT_SECONDS,
    ) -> ApiResponse:
        data = payload.encode() if payload is not None else None
        if self.token:
            headers = {**headers, "Authorization": f"Bearer {self.token}"}
        if self.sign_region:
            if self._credentials is None:
                self._credentials = _credentials()
            headers = _sigv4(method, url, headers, data, self.sign_region, self._credentials)
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return ApiResponse(resp.status, _parse(resp.read().decode("utf-8", "replace")))
        except urllib.error.HTTPError as err:
            return ApiResponse(err.code, _parse(err.read().decode("utf-8", "replace")))
        except urllib.error.URLError as exc:
            # urllib raises URLError while connecting and sending: the request never
            # (completely) reached the API, so nothing was done.
            raise TargetError(f"cannot reach the stratoflow API at {self.base_url}: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            # Raised while waiting for or reading the answer: the request was sent.
            raise OutcomeUnknown(
                f"no answer from the stratoflow API at {self.base_url} within {timeout:g} s "
                f"({type(exc).__name__}: {exc})"
            ) from exc


def _parse(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return {"message": text.strip()[:500]}


def _credentials() -> Any:
    """The caller's usual AWS credentials (profile, environment, SSO, role)."""
    import boto3

    credentials = boto3.session.Session().get_credentials()
    if credentials is None:
        raise TargetError(
            "no AWS credentials to sign the API request with: configure a profile, or set "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    return credentials


def _sigv4(
    method: str,
    url: str,
    headers: dict[str, str],
    data: bytes | None,
    region: str,
    credentials: Any,
) -> dict[str, str]:
    """Sign for API Gateway's IAM auth (refreshable credentials renew themselves)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method=method, url=url, data=data, headers=headers)
    SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
    return dict(request.headers.items())


@dataclass(frozen=True)
class Target:
    """Where the CLI's commands go."""

    client: ApiClient
    bucket: str | None = None  # the stack's workflows bucket, when known


def api_target(url: str) -> Target:
    """An API by URL: signed if it is an API Gateway endpoint; otherwise (local) with the
    token in env STRATOFLOW_TOKEN, or that of the running `local up` if it is this URL."""
    host = urlsplit(url).hostname or ""
    match = _EXECUTE_API.match(host)
    if not urlsplit(url).scheme.startswith("http") or not host:
        raise TargetError(f"--api {url!r}: expected an http(s) URL")
    if match:
        return Target(ApiClient(url, sign_region=match.group(1)))
    return Target(ApiClient(url, token=os.environ.get(ENV_TOKEN) or _local_token(url)))


def _local_token(url: str) -> str | None:
    """The token of this home's running `local up`, if `url` is its API (a token is never
    sent anywhere else)."""
    from stratoflow.local.target import read_state

    state = read_state() or {}
    ours = _origin(str(state.get("api_url") or ""))
    same = ours is not None and ours == _origin(url)
    return str(state["token"]) if same and state.get("token") else None


def _origin(url: str) -> tuple[str, str, int | None] | None:
    parts = urlsplit(url)
    try:
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:  # a port that is not a number: no origin of ours
        return None


def stack_target(stack: str) -> Target:
    """A deployed stack, by name: its API URL and bucket from its CloudFormation outputs."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        cfn = boto3.client("cloudformation")
        stacks = cfn.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as err:
        raise TargetError(f"--stack {stack!r}: {err.response['Error'].get('Message')}") from err
    except BotoCoreError as err:
        raise TargetError(f"--stack {stack!r}: {err}") from err
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    url = outputs.get(OUTPUT_API_URL)
    if not url:
        raise TargetError(
            f"stack {stack!r} has no {OUTPUT_API_URL} output: is it a stratoflow stack, "
            "deployed with this version?"
        )
    target = api_target(url)
    return Target(target.client, bucket=outputs.get(OUTPUT_BUCKET))


def endpoint_target(endpoint_url: str | None) -> Target:
    """The engine behind an AWS endpoint (LocalStack, the embedded emulator), or the running
    `stratoflow local up` (its HTTP API) when no endpoint is given."""
    from stratoflow.local.target import NoEngine, read_state, wire

    if endpoint_url is None:
        state = read_state()
        if state and state.get("api_url"):
            token = str(state["token"]) if state.get("token") else None
            return Target(ApiClient(str(state["api_url"]), token=token))
    try:
        wiring = wire(endpoint_url)
    except NoEngine as err:
        raise TargetError(str(err)) from err
    return Target(ApiClient(None, wiring=wiring))


def resolve(api: str | None, stack: str | None, endpoint_url: str | None) -> Target:
    if sum(x is not None for x in (api, stack, endpoint_url)) > 1:
        raise TargetError("give at most one of --api, --stack and --endpoint-url")
    if api is None and stack is None and endpoint_url is None:
        api = os.environ.get("STRATOFLOW_API") or None
        stack = os.environ.get("STRATOFLOW_STACK") or None
    if api:
        return api_target(api)
    if stack:
        return stack_target(stack)
    return endpoint_target(endpoint_url)
