"""A small client of the public REST API (stdlib only), used by the `pdfsmaller` CLI.

Uploads stream from the file, downloads stream to a temporary file that is
checked against the size and sha256 the server announced before the body,
then renamed into place: a broken transfer never leaves a truncated PDF.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TERMINAL_STATES = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"})
CHUNK_BYTES = 1024 * 1024


class ApiError(Exception):
    """The service answered with an error; `reason` is its stable ErrorInfo reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{reason or status}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ApiClient:
    base_url: str = "http://127.0.0.1:8080"
    api_key: str = ""
    timeout: float = 300.0

    def _connection(self) -> http.client.HTTPConnection:
        url = urllib.parse.urlsplit(self.base_url)
        if url.scheme == "https":
            return http.client.HTTPSConnection(url.hostname or "", url.port, timeout=self.timeout)
        return http.client.HTTPConnection(url.hostname or "", url.port, timeout=self.timeout)

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"x-api-key": self.api_key} if self.api_key else {}
        headers.update(extra or {})
        return headers

    @staticmethod
    def _raise_for(response: http.client.HTTPResponse) -> None:
        if response.status < 400:
            return
        body = response.read()
        try:
            error = json.loads(body)
            details = error.get("details", [])
            reason = next((d.get("reason", "") for d in details if "ErrorInfo" in d.get("@type", "")), "")
            raise ApiError(response.status, reason, error.get("message", ""))
        except ValueError:
            raise ApiError(response.status, "", body.decode(errors="replace")[:200]) from None

    def _json(self, method: str, path: str) -> dict[str, Any]:
        connection = self._connection()
        try:
            connection.request(method, path, headers=self._headers())
            response = connection.getresponse()
            self._raise_for(response)
            result: dict[str, Any] = json.loads(response.read() or b"{}")
            return result
        finally:
            connection.close()

    def upload(self, path: Path, **options: str | int | bool) -> dict[str, Any]:
        """Upload a PDF and create a job; options are the API's query parameters."""
        params = {"filename": path.name}
        params.update(
            {
                name: str(value).lower() if isinstance(value, bool) else str(value)
                for name, value in options.items()
                if value not in (None, "", 0, False)
            }
        )
        query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        connection = self._connection()
        try:
            with path.open("rb") as body:
                headers = self._headers(
                    {"content-type": "application/pdf", "content-length": str(os.fstat(body.fileno()).st_size)}
                )
                connection.request("POST", f"/v1/jobs?{query}", body=body, headers=headers)
                response = connection.getresponse()
            self._raise_for(response)
            result: dict[str, Any] = json.loads(response.read())
            return result
        finally:
            connection.close()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}:cancel")

    def wait(
        self,
        job_id: str,
        timeout: float = 3600.0,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job is finished (gently: every 0.25 s growing to 2 s)."""
        deadline = time.monotonic() + timeout
        delay = 0.25
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job.get("state") in TERMINAL_STATES:
                return job
            if time.monotonic() + delay > deadline:
                raise TimeoutError(f"job {job_id} still {job.get('state')} after {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def download(self, job_id: str, destination: Path) -> Path:
        """Stream the result to `destination`, verified against the announced size and sha256."""
        connection = self._connection()
        try:
            connection.request("GET", f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}/result", headers=self._headers())
            response = connection.getresponse()
            self._raise_for(response)
            expected_size = int(response.getheader("x-content-length") or -1)
            expected_sha256 = response.getheader("x-content-sha256") or ""
            destination.parent.mkdir(parents=True, exist_ok=True)
            digest, size = hashlib.sha256(), 0
            with tempfile.NamedTemporaryFile(dir=destination.parent, prefix=".part-", delete=False) as part:
                try:
                    while chunk := response.read(CHUNK_BYTES):
                        part.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                    if size != expected_size or digest.hexdigest() != expected_sha256:
                        raise ApiError(0, "TRANSFER_INCOMPLETE", f"got {size} of {expected_size} bytes or a bad sha256")
                    part.flush()
                    os.fsync(part.fileno())
                except BaseException:
                    Path(part.name).unlink(missing_ok=True)
                    raise
            os.replace(part.name, destination)
            return destination
        finally:
            connection.close()
