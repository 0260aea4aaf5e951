"""A tiny REST client for end-to-end tests (stdlib only, like a user's curl)."""

from __future__ import annotations

import hashlib
import http.client
import json
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from client.api import TERMINAL_STATES


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return json.loads(self.body)

    def error_info(self) -> dict[str, Any]:
        """The ErrorInfo detail of an error body ({} when it has none)."""
        details = self.json().get("details", [])
        return next((d for d in details if d.get("@type", "").endswith("google.rpc.ErrorInfo")), {})

    def reason(self) -> str:
        """The ErrorInfo reason of an error body."""
        return str(self.error_info().get("reason", ""))

    def assert_error(self, status: int, code: int, reason: str, domain: str) -> dict[str, Any]:
        """Assert this is the JSON google.rpc.Status error the API promises; returns its ErrorInfo."""
        assert self.status == status, (self.status, self.body)
        body = self.json()
        assert body["code"] == code, body
        assert isinstance(body["message"], str), body
        assert body["message"], body
        info = self.error_info()
        assert info.get("@type") == "type.googleapis.com/google.rpc.ErrorInfo", body
        assert (info.get("reason"), info.get("domain")) == (reason, domain), body
        return info


def http_call(
    address: str,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120,
) -> Reply:
    """One raw HTTP/1.1 request to `host:port` (chunked when the body is an iterable)."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        chunked = body is not None and not isinstance(body, bytes)
        connection.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = connection.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


@dataclass
class RestClient:
    base_url: str
    api_key: str = ""

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        all_headers = {"x-api-key": self.api_key} if self.api_key else {}
        all_headers.update(headers or {})
        return http_call(self.base_url.removeprefix("http://"), method, path, body, all_headers)

    def upload(self, data: bytes | Iterable[bytes], **params: str | int) -> Reply:
        query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)  # %20, not form-style +
        return self.request("POST", f"/v1/jobs?{query}", data, {"content-type": "application/pdf"})

    def job(self, job_id: str) -> dict[str, Any]:
        reply = self.request("GET", f"/v1/jobs/{job_id}")
        assert reply.status == 200, (reply.status, reply.body)
        return reply.json()

    def create(self, data: bytes | Iterable[bytes], **params: str | int) -> dict[str, Any]:
        """Upload, asserting the job was created; returns it."""
        reply = self.upload(data, **params)
        assert reply.status == 200, (reply.status, reply.body)
        job: dict[str, Any] = reply.json()
        return job

    def result(self, job_id: str) -> bytes:
        """Download a succeeded job's result, checked against its length and sha256 headers."""
        reply = self.request("GET", f"/v1/jobs/{job_id}/result")
        assert reply.status == 200, (reply.status, reply.body)
        assert reply.headers["content-type"] == "application/pdf"
        assert int(reply.headers["x-content-length"]) == len(reply.body)
        assert reply.headers["x-content-sha256"] == hashlib.sha256(reply.body).hexdigest()
        return reply.body

    def wait(self, job_id: str, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in TERMINAL_STATES:
                return job
            assert time.monotonic() < deadline, f"job stuck in {job['state']}"
            time.sleep(0.2)
