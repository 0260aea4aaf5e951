"""Outages with jobs in flight: storage or PostgreSQL down for N seconds, then every job must succeed.

    .venv/bin/python -m bench.faults                 # 30 s and 60 s, storage and PostgreSQL
    .venv/bin/python -m bench.faults --seconds 5     # one length only

Starts a stack of its own (real PostgreSQL, Valkey, the five services; no clamd), submits jobs
straight to storage and jobs (as the gateway does) so some are running and some queued, takes the
dependency away, brings it back and prints, per outage: jobs submitted, succeeded, failed, lost (not
finished by the deadline, or gone), the most attempts and outage retries any job used, and the time
from the end of the outage until every job finished (`none`: the same work with no outage, timed from
the moment one job runs: the baseline). tests/faults/test_outages.py runs the 5 s case.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pikepdf
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from pdfsmaller.storage.v1 import storage_service_pb2 as storage
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as storage_grpc
from PIL import Image

from devtools.stack.stack import Ports, Stack

TENANT = "public"
TERMINAL = {jobs.JOB_STATE_SUCCEEDED, jobs.JOB_STATE_FAILED, jobs.JOB_STATE_CANCELLED, jobs.JOB_STATE_EXPIRED}
# Short leases and a fast sweeper make leases lapse inside even a short outage: the hard case.
FAULT_ENV = {
    "LEASE_SECONDS": "6",
    "SWEEP_INTERVAL_SECONDS": "1",
    "LEASE_WAIT_SECONDS": "2",
    "WORKER_CONCURRENCY": "2",
}


@dataclass(frozen=True)
class OutageFigures:
    dependency: str
    outage_seconds: float
    submitted: int
    running_at_outage: int
    succeeded: int
    failed: int
    lost: int
    max_attempts: int
    max_outage_retries: int
    recover_seconds: float

    def line(self) -> str:
        return (
            f"{self.dependency} outage {self.outage_seconds:.0f} s: submitted {self.submitted}"
            f" (running at outage {self.running_at_outage}), succeeded {self.succeeded}, failed {self.failed},"
            f" lost {self.lost}, max attempts used {self.max_attempts},"
            f" max outage retries {self.max_outage_retries}, time to recover {self.recover_seconds:.1f} s"
        )


def fault_stack(data_dir: Path) -> Stack:
    return Stack(data_dir=data_dir, ports=Ports.any(), with_clamd=False, durable=False, extra_env=FAULT_ENV)


def slow_pdf(pages: int, seed: int) -> bytes:
    """Pages of noisy photos: a few seconds of engine work, so jobs are running when the outage starts."""
    rng = np.random.default_rng(seed)
    pdf = pikepdf.new()
    for _ in range(pages):
        pixels = rng.normal(128, 40, (900, 700, 3)).clip(0, 255).astype("uint8")
        jpeg = io.BytesIO()
        Image.fromarray(pixels).save(jpeg, "JPEG", quality=95)
        page = pdf.add_blank_page(page_size=(500, 700))
        image = pikepdf.Stream(
            pdf,
            jpeg.getvalue(),
            Type=pikepdf.Name.XObject,
            Subtype=pikepdf.Name.Image,
            Width=700,
            Height=900,
            ColorSpace=pikepdf.Name.DeviceRGB,
            BitsPerComponent=8,
            Filter=pikepdf.Name.DCTDecode,
        )
        page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image))
        page.Contents = pdf.make_stream(b"q 500 0 0 700 0 0 cm /Im0 Do Q")
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


class Client:
    """Submits and reads jobs over gRPC, straight to storage and jobs (what the gateway does)."""

    def __init__(self, stack: Stack) -> None:
        self._jobs_channel = grpc.insecure_channel(stack.service("jobs").address)
        self._storage_channel = grpc.insecure_channel(stack.service("storage").address)
        self.jobs = jobs_grpc.JobsServiceStub(self._jobs_channel)
        self.storage = storage_grpc.StorageServiceStub(self._storage_channel)

    def close(self) -> None:
        self._jobs_channel.close()
        self._storage_channel.close()

    def submit(self, pdf: bytes) -> str:
        job_id = str(uuid.uuid4())
        key = f"inputs/{job_id}.pdf"
        parts = [storage.PutObjectRequest(header=storage.PutObjectHeader(key=key, content_type="application/pdf"))]
        parts.append(storage.PutObjectRequest(chunk=pdf))
        finish = storage.PutObjectFinish(size_bytes=len(pdf), sha256=hashlib.sha256(pdf).hexdigest())
        parts.append(storage.PutObjectRequest(finish=finish))  # storage commits only on a matching finish
        self.storage.PutObject(iter(parts), timeout=30)
        self.jobs.CreateJob(
            jobs.CreateJobRequest(
                tenant=TENANT,
                job_id=job_id,
                filename="fault.pdf",
                options=jobs.CompressionOptions(level=jobs.COMPRESSION_LEVEL_MEDIUM),
                input_key=key,
                input_size_bytes=len(pdf),
                input_sha256=hashlib.sha256(pdf).hexdigest(),
            ),
            timeout=30,
        )
        return job_id

    def states(self, job_ids: list[str]) -> dict[str, jobs.Job | None]:
        """Each job now; None for one that is gone. Raises while the jobs service cannot answer."""
        found: dict[str, jobs.Job | None] = {}
        for job_id in job_ids:
            try:
                found[job_id] = self.jobs.GetJob(jobs.GetJobRequest(id=job_id, tenant=TENANT), timeout=10)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                found[job_id] = None
        return found


def _outage(stack: Stack, dependency: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """(take it away, bring it back) for `storage` (SIGKILL, restart) or `postgres` (stop, start); `none`
    takes nothing away: its time to recover is the baseline, the time the same work takes with no outage."""
    if dependency == "none":
        return (lambda: None), (lambda: None)
    if dependency == "storage":
        return (lambda: stack.kill_service("storage")), (lambda: stack.start_service("storage"))
    assert stack.postgres is not None
    postgres = stack.postgres
    return postgres.stop, (lambda: postgres.start() and None)


def _wait_running(client: Client, job_ids: list[str], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = sum(1 for job in client.states(job_ids).values() if job and job.state == jobs.JOB_STATE_RUNNING)
        if running:
            return running
        time.sleep(0.1)
    return 0


def _wait_finished(client: Client, job_ids: list[str], timeout: float) -> dict[str, jobs.Job | None]:
    deadline = time.monotonic() + timeout
    last: dict[str, jobs.Job | None] = {}
    while time.monotonic() < deadline:
        try:
            last = client.states(job_ids)
        except grpc.RpcError:  # still recovering
            time.sleep(0.2)
            continue
        if all(job is None or job.state in TERMINAL for job in last.values()):
            return last
        time.sleep(0.2)
    return last


def run_outage(stack: Stack, dependency: str, seconds: float, job_count: int = 8, pages: int = 3) -> OutageFigures:
    """`job_count` jobs of 1 to `pages` pages each; the outage begins once one of them is running."""
    client = Client(stack)
    try:
        pdfs = [slow_pdf(pages=1 + n % pages, seed=n) for n in range(job_count)]
        job_ids = [client.submit(pdf) for pdf in pdfs]
        running = _wait_running(client, job_ids, timeout=30)
        take_away, bring_back = _outage(stack, dependency)
        take_away()
        time.sleep(seconds if dependency != "none" else 0)
        bring_back()
        back = time.monotonic()
        final = _wait_finished(client, job_ids, timeout=120 + seconds)
        recovered = time.monotonic() - back
    finally:
        client.close()
    present = [job for job in final.values() if job is not None]
    succeeded = sum(1 for job in present if job.state == jobs.JOB_STATE_SUCCEEDED)
    failed = sum(1 for job in present if job.state == jobs.JOB_STATE_FAILED)
    return OutageFigures(
        dependency=dependency,
        outage_seconds=seconds,
        submitted=len(job_ids),
        running_at_outage=running,
        succeeded=succeeded,
        failed=failed,
        lost=len(job_ids) - succeeded - failed,
        max_attempts=max((job.attempts for job in present), default=0),
        max_outage_retries=max((job.outage_retries for job in present), default=0),
        recover_seconds=recovered,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[30.0, 60.0])
    parser.add_argument(
        "--dependency", choices=["none", "storage", "postgres"], nargs="+", default=["none", "storage", "postgres"]
    )
    parser.add_argument("--jobs", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pdfsmaller-faults-") as tmp:
        stack = fault_stack(Path(tmp))
        try:
            stack.start(timeout=120)
            if "none" in args.dependency:
                print(run_outage(stack, "none", 0, args.jobs).line(), flush=True)
            for seconds in args.seconds:
                for dependency in (d for d in args.dependency if d != "none"):
                    print(run_outage(stack, dependency, seconds, args.jobs).line(), flush=True)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
