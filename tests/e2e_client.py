"""A tiny REST client for end-to-end tests (stdlib only, like a user's curl)."""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from libs.api_client import TERMINAL_STATES


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return json.loads(self.body)

    def reason(self) -> str:
        """The ErrorInfo reason of an error body."""
        details = self.json().get("details", [])
        return next((d["reason"] for d in details if d.get("@type", "").endswith("google.rpc.ErrorInfo")), "")


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

    def wait(self, job_id: str, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in TERMINAL_STATES:
                return job
            assert time.monotonic() < deadline, f"job stuck in {job['state']}"
            time.sleep(0.2)
