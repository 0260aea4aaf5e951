"""`pdfsmaller-ops smoke`: the end-to-end check a blue/green switch runs against the idle colour.

    pdfsmaller-ops smoke --url https://green.pdfsmaller.example --api-key KEY

Over the public REST API (docs/api.md), one step each, stopping at the first failure: the deep health
check (DEGRADED passes, and says which dependency), upload of the small PDF that ships with the package,
its job watched to SUCCEEDED, the result downloaded and checked (sha256 as announced and as the job
records it, page count), a file that is not a PDF refused with NOT_A_PDF, the job deleted (then 404).
A job left behind by a failed step is deleted on the way out. Standard library HTTP only: the image
carries no client.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import importlib.resources
import io
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pikepdf

from ops import defaults
from ops.report import Failed, OpsError, Reporter

API_KEY_ENV = "PDFSMALLER_API_KEY"
# Every answer is read into memory, so each is capped: the result of the shipped PDF is smaller than it.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
HEALTH_TIMEOUT_SECONDS = 10.0  # the gateway answers within 2 s per dependency
REQUEST_TIMEOUT_SECONDS = 30.0
POLL_SECONDS_FIRST, POLL_SECONDS_MAX = 0.25, 1.0
# A 429 whose Retry-After is this short is waited out and the call repeated, a few times at most;
# a longer one (a daily quota used up) is answered to the step, which fails saying so.
RATE_LIMIT_WAIT_SECONDS_MAX, RATE_LIMIT_WAITS = 5.0, 3
SAMPLE_NAME = "smoke.pdf"
UPLOAD_QUERY = {"filename": "pdfsmaller-ops-smoke.pdf", "level": "medium"}
NOT_A_PDF = b"This is the smoke test's bad upload: plain text, no PDF header.\n" * 16
TERMINAL_STATES = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"})


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "smoke", help="check an environment end to end over its REST API", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--url", default=defaults.EDGE_URL, help=f"the edge's base URL (default {defaults.EDGE_URL})")
    parser.add_argument("--api-key", default="", help=f"the API key (default: ${API_KEY_ENV}; none in development)")
    parser.add_argument(
        "--timeout", type=_positive_seconds, default=120.0, help="seconds the job may take (default 120)"
    )
    parser.set_defaults(run=run)


def _positive_seconds(text: str) -> float:
    seconds = float(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return seconds


@dataclass(frozen=True)
class Reply:
    method: str
    url: str
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    def json(self) -> dict[str, Any]:
        try:
            document = json.loads(self.body)
        except ValueError:
            raise OpsError(f"{self.method} {self.url} answered {self.status} with no JSON: {self._excerpt()}") from None
        if not isinstance(document, dict):
            raise OpsError(f"{self.method} {self.url} answered {self.status} with JSON that is not an object")
        return document

    def reason(self) -> str:
        """The ErrorInfo reason of a google.rpc.Status error body, or "" (no JSON, no ErrorInfo)."""
        try:
            details = json.loads(self.body).get("details", [])
            return next((str(d.get("reason", "")) for d in details if "ErrorInfo" in str(d.get("@type", ""))), "")
        except (ValueError, AttributeError):
            return ""

    def describe(self) -> str:
        """What was seen, for a failure message: status, reason and message (or the start of the body)."""
        try:
            message = str(json.loads(self.body).get("message", ""))
        except (ValueError, AttributeError):
            message = self._excerpt()
        return f"{self.status} {self.reason() or '(no reason)'}: {message}"

    def retry_after(self) -> float:
        try:
            return max(float(self.headers.get("retry-after", "1")), POLL_SECONDS_FIRST)
        except ValueError:
            return POLL_SECONDS_MAX

    def _excerpt(self) -> str:
        return self.body[:200].decode("utf-8", errors="replace") or "(empty body)"


@dataclass(frozen=True)
class RestApi:
    """The public REST API at `base_url` (http or https), calls with the API key when there is one;
    `on_wait` hears of every wait for a rate limit."""

    base_url: str
    api_key: str = ""
    on_wait: Callable[[str], None] = lambda message: None

    @classmethod
    def at(cls, url: str, api_key: str, on_wait: Callable[[str], None] = lambda message: None) -> RestApi:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OpsError(f"--url {url!r} is not an http:// or https:// URL")
        return cls(url.rstrip("/"), api_key, on_wait)

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> Reply:
        """One request; a 429 with a short Retry-After is waited out and repeated (a refused call did nothing)."""
        for _ in range(RATE_LIMIT_WAITS):
            reply = self._send(method, path, body, headers, timeout)
            if reply.status != 429 or reply.retry_after() > RATE_LIMIT_WAIT_SECONDS_MAX:
                return reply
            self.on_wait(f"rate limited: {method} {path.split('?')[0]} again in {reply.retry_after():g} s")
            time.sleep(reply.retry_after())
        return self._send(method, path, body, headers, timeout)

    def _send(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str] | None, timeout: float
    ) -> Reply:
        url = self.base_url + path
        all_headers = {"x-api-key": self.api_key} if self.api_key else {}
        all_headers.update(headers or {})
        request = urllib.request.Request(url, data=body, headers=all_headers, method=method)  # noqa: S310 (http/s only, checked in at())
        try:
            # The scheme was checked to be http or https when the URL was parsed.
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  # nosec B310
                return self._reply(method, url, response.status, response.headers, response)
        except urllib.error.HTTPError as error:
            with error:
                return self._reply(method, url, error.code, error.headers, error)
        except urllib.error.URLError as error:
            raise OpsError(f"cannot reach {self.base_url}: {error.reason}") from error
        except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
            raise OpsError(f"{method} {url}: no complete answer within {timeout:g} s ({error})") from error

    @staticmethod
    def _reply(method: str, url: str, status: int, headers: Any, stream: Any) -> Reply:
        body = stream.read(MAX_ANSWER_BYTES + 1)
        if len(body) > MAX_ANSWER_BYTES:
            raise OpsError(f"{method} {url}: the answer is larger than {MAX_ANSWER_BYTES} bytes")
        return Reply(method, url, status, {name.lower(): value for name, value in headers.items()}, body)


@dataclass(frozen=True)
class Sample:
    """The PDF that ships with the package (ops/data/smoke.pdf)."""

    data: bytes
    pages: int

    @classmethod
    def shipped(cls) -> Sample:
        data = importlib.resources.files("ops").joinpath("data", SAMPLE_NAME).read_bytes()
        return cls(data, page_count(data))


def page_count(data: bytes) -> int:
    try:
        with pikepdf.open(io.BytesIO(data)) as pdf:
            return len(pdf.pages)
    except pikepdf.PdfError as error:
        raise OpsError(f"not a readable PDF: {error}") from error


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    with reporter.step("health"):
        api = RestApi.at(args.url, args.api_key or os.environ.get(API_KEY_ENV, ""), reporter.progress)
        check_health(api, reporter)
    with reporter.step("upload"):
        sample = Sample.shipped()
        job_id = upload(api, sample)
    reporter.result("job_id", job_id)
    try:
        with reporter.step("compress"):
            job = watch(api, job_id, args.timeout, reporter)
        with reporter.step("download"):
            check_result(api, job, sample, reporter)
        with reporter.step("bad upload"):
            check_bad_upload(api)
        with reporter.step("delete"):
            delete(api, job_id)
    except Failed:
        discard(api, job_id, reporter)
        raise
    return reporter.finish()


def check_health(api: RestApi, reporter: Reporter) -> None:
    """GET /v1/health: 200 SERVING or DEGRADED; what is not SERVING becomes the result `degraded`."""
    reply = api.call("GET", "/v1/health", timeout=HEALTH_TIMEOUT_SECONDS)
    if reply.status not in (200, 503):
        raise OpsError(f"GET {reply.url} answered {reply.describe()}")
    report = reply.json()
    status = str(report.get("status", "")).removeprefix("SERVING_STATUS_")
    dependencies = [d for d in report.get("dependencies", []) if isinstance(d, dict)]
    unwell = "; ".join(
        f"{d.get('name')} {str(d.get('status', '')).removeprefix('SERVING_STATUS_')} ({d.get('detail', '')})"
        for d in dependencies
        if d.get("status") != "SERVING_STATUS_SERVING"
    )
    if reply.status != 200 or status not in ("SERVING", "DEGRADED"):
        raise OpsError(f"{api.base_url} is {status or 'without a status'} ({reply.status}): {unwell}")
    reporter.result("health", status)
    if unwell:
        reporter.result("degraded", unwell)


def upload(api: RestApi, sample: Sample) -> str:
    query = urllib.parse.urlencode(UPLOAD_QUERY, quote_via=urllib.parse.quote)
    reply = api.call("POST", f"/v1/jobs?{query}", sample.data, {"content-type": "application/pdf"})
    if reply.status == 401:
        raise OpsError(f"the API key was refused: {reply.describe()} (pass --api-key or ${API_KEY_ENV})")
    if reply.status != 200:
        raise OpsError(f"upload refused: {reply.describe()}")
    job_id = reply.json().get("id")
    if not isinstance(job_id, str) or not job_id:
        raise OpsError(f"the upload's answer has no job id: {reply.body[:200]!r}")
    return job_id


def watch(api: RestApi, job_id: str, timeout: float, reporter: Reporter) -> dict[str, Any]:
    """Poll the job until it ends (honouring Retry-After on 429) within `timeout`; it must succeed."""
    deadline = time.monotonic() + timeout
    delay, seen = POLL_SECONDS_FIRST, ""
    while True:  # bounded by the deadline
        reply = api.call("GET", _job_path(job_id))
        if reply.status == 429:
            wait, now = reply.retry_after(), f"rate limited ({reply.headers.get('retry-after', '?')} s)"
        elif reply.status == 200:
            job = reply.json()
            if job.get("state") in TERMINAL_STATES:
                return _succeeded(job)
            wait, now = delay, f"{job.get('state')} {job.get('progress_percent', 0)}%"
            delay = min(delay * 1.5, POLL_SECONDS_MAX)
        else:
            raise OpsError(f"GET {reply.url} answered {reply.describe()}")
        if now != seen:
            reporter.progress(f"job {job_id}: {now}")
            seen = now
        if time.monotonic() + wait > deadline:
            raise OpsError(f"job {job_id} is still {seen} after {timeout:g} s")
        time.sleep(wait)


def _succeeded(job: dict[str, Any]) -> dict[str, Any]:
    if job.get("state") != "JOB_STATE_SUCCEEDED":
        error = job.get("error")
        error = error if isinstance(error, dict) else {}
        raise OpsError(f"job {job.get('id')} ended {job.get('state')}: {error.get('reason')}: {error.get('message')}")
    return job


def check_result(api: RestApi, job: dict[str, Any], sample: Sample, reporter: Reporter) -> None:
    reply = api.call("GET", _job_path(str(job["id"])) + "/result")
    if reply.status != 200:
        raise OpsError(f"GET {reply.url} answered {reply.describe()}")
    verify_result(reply, job, sample)
    reporter.result("input_bytes", len(sample.data))
    reporter.result("output_bytes", len(reply.body))
    reporter.result("ratio", round(len(reply.body) / len(sample.data), 3))


def verify_result(reply: Reply, job: dict[str, Any], sample: Sample) -> None:
    """The download is what the server announced and what the job recorded, with every page."""
    sha256 = hashlib.sha256(reply.body).hexdigest()
    announced = reply.headers.get("x-content-sha256", "")
    if sha256 != announced:
        raise OpsError(f"the download's sha256 is {sha256}, x-content-sha256 announced {announced or 'nothing'}")
    if sha256 != job.get("output_sha256"):
        raise OpsError(f"the download's sha256 is {sha256}, the job records {job.get('output_sha256')}")
    pages = page_count(reply.body)
    if pages != sample.pages:
        raise OpsError(f"the result has {pages} pages, the uploaded PDF {sample.pages}")


def check_bad_upload(api: RestApi) -> None:
    reply = api.call("POST", "/v1/jobs?filename=not-a-pdf.pdf", NOT_A_PDF, {"content-type": "application/pdf"})
    expect_not_a_pdf(reply)


def expect_not_a_pdf(reply: Reply) -> None:
    """The refusal docs/api.md promises: 400 with the ErrorInfo reason NOT_A_PDF."""
    if (reply.status, reply.reason()) != (400, "NOT_A_PDF"):
        raise OpsError(f"a file that is not a PDF got {reply.describe()}, not 400 NOT_A_PDF")


def delete(api: RestApi, job_id: str) -> None:
    reply = api.call("DELETE", _job_path(job_id))
    if reply.status != 200:
        raise OpsError(f"DELETE {reply.url} answered {reply.describe()}")
    after = api.call("GET", _job_path(job_id))
    if after.status != 404:
        raise OpsError(f"the deleted job still answers GET with {after.describe()}, not 404")


def discard(api: RestApi, job_id: str, reporter: Reporter) -> None:
    """After a failed step, delete the smoke test's job rather than leave it to retention."""
    try:
        reply = api.call("DELETE", _job_path(job_id))
    except OpsError as error:
        reporter.progress(f"could not delete job {job_id}: {error}")
        return
    if reply.status not in (200, 404):
        reporter.progress(f"could not delete job {job_id}: {reply.describe()}")


def _job_path(job_id: str) -> str:
    return "/v1/jobs/" + urllib.parse.quote(job_id, safe="")
