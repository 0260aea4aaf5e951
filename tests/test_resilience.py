"""Nothing is lost: across a restart of the whole system, or a worker killed mid-job."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pikepdf
import pytest
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from PIL import Image

from devtools.stack.stack import Ports, Stack
from tests.e2e_client import RestClient
from tests.plugins.stack import GENEROUS_RATE_LIMITS

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data"


def test_jobs_and_results_survive_a_restart(tmp_path: Path) -> None:
    source = (DATA / "pypdf__libreoffice-form.pdf").read_bytes()
    first = Stack(data_dir=tmp_path, ports=Ports.any(), with_clamd=False, extra_env=GENEROUS_RATE_LIMITS)
    try:
        first.start(timeout=90)
        client = RestClient(first.url)
        job_id = client.upload(source, filename="form.pdf").json()["id"]
        before = client.wait(job_id)
        assert before["state"] == "JOB_STATE_SUCCEEDED"
        result_before = client.request("GET", f"/v1/jobs/{job_id}/result").body
    finally:
        first.stop()

    second = Stack(data_dir=tmp_path, ports=Ports.any(), with_clamd=False, extra_env=GENEROUS_RATE_LIMITS)
    try:
        second.start(timeout=90)
        client = RestClient(second.url)
        after = client.job(job_id)
        assert after["state"] == "JOB_STATE_SUCCEEDED"
        assert after["output_sha256"] == before["output_sha256"]
        assert client.request("GET", f"/v1/jobs/{job_id}/result").body == result_before
    finally:
        second.stop()


def _slow_pdf(pages: int) -> bytes:
    """Pages of large noisy photos: several seconds of engine work, so a worker can be killed mid-job."""
    rng = np.random.default_rng(7)
    pdf = pikepdf.new()
    y, x = np.mgrid[0:1400, 0:1000]
    for number in range(pages):
        pixels = np.stack([(x * 0.2 + number * 9) % 255, (y * 0.15) % 255, ((x + y) * 0.1) % 255], -1)
        pixels = (pixels + rng.normal(0, 25, pixels.shape)).clip(0, 255).astype("uint8")
        jpeg = io.BytesIO()
        Image.fromarray(pixels).save(jpeg, "JPEG", quality=95)
        page = pdf.add_blank_page(page_size=(500, 700))
        image = pikepdf.Stream(
            pdf,
            jpeg.getvalue(),
            Type=pikepdf.Name.XObject,
            Subtype=pikepdf.Name.Image,
            Width=1000,
            Height=1400,
            ColorSpace=pikepdf.Name.DeviceRGB,
            BitsPerComponent=8,
            Filter=pikepdf.Name.DCTDecode,
        )
        page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image))
        page.Contents = pdf.make_stream(b"q 500 0 0 700 0 0 cm /Im0 Do Q")
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def _children(parent_pid: int) -> list[int]:
    """Live child processes of a process (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent_pid and fields[0] != "Z":
            children.append(int(stat.parent.name))
    return children


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own, with short leases, whose services these tests kill."""
    stack = Stack(
        data_dir=tmp_path_factory.mktemp("fragile"),
        ports=Ports.any(),
        with_clamd=False,
        durable=False,
        extra_env={
            "LEASE_SECONDS": "6",
            "SWEEP_INTERVAL_SECONDS": "1",
            "LEASE_WAIT_SECONDS": "2",
            **GENEROUS_RATE_LIMITS,
        },
    )
    try:
        stack.start(timeout=90)
        yield stack
    finally:
        stack.stop()


def test_job_of_a_killed_worker_is_retried(fragile: Stack) -> None:
    client = RestClient(fragile.url)
    job_id = client.upload(_slow_pdf(12), filename="slow.pdf").json()["id"]
    deadline = time.monotonic() + 30
    while client.job(job_id)["state"] != "JOB_STATE_RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker_pid = fragile.service("compressor").process.pid  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while not (engines := _children(worker_pid)):
        assert time.monotonic() < deadline, "the engine child never started"
        time.sleep(0.02)
    fragile.kill_service("compressor")  # SIGKILL mid-job: no goodbye, the lease just stops being renewed
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{pid}").exists() for pid in engines):
        assert time.monotonic() < deadline, "the engine outlived its worker"
        time.sleep(0.02)
    fragile.start_service("compressor")
    done = client.wait(job_id, timeout=120)
    assert done["state"] == "JOB_STATE_SUCCEEDED", done
    with grpc.insecure_channel(fragile.service("jobs").address) as channel:
        job = jobs_grpc.JobsServiceStub(channel).GetJob(jobs.GetJobRequest(id=job_id, tenant="public"), timeout=10)
    assert job.attempts == 2


@pytest.mark.parametrize("dependency", ["storage", "jobs", "scanner"])
def test_dependency_outage_is_unavailable_then_heals(fragile: Stack, dependency: str) -> None:
    client = RestClient(fragile.url)
    source = (DATA / "pypdf__libreoffice-form.pdf").read_bytes()
    fragile.kill_service(dependency)
    try:
        refused = client.upload(source, filename="form.pdf")
        assert (refused.status, refused.reason()) == (503, "DEPENDENCY_UNAVAILABLE")
        assert refused.json()["details"][0]["metadata"]["dependency"] == dependency
        health = {d["name"]: d["status"] for d in client.request("GET", "/v1/health").json()["dependencies"]}
        assert health[dependency] == "SERVING_STATUS_NOT_SERVING"
    finally:
        fragile.start_service(dependency)
    # No restart of anything else: channels reconnect by themselves within their short backoff.
    deadline = time.monotonic() + 30
    while (accepted := client.upload(source, filename="form.pdf")).status != 200:
        assert time.monotonic() < deadline, accepted.body
        time.sleep(0.2)
    assert client.wait(accepted.json()["id"])["state"] == "JOB_STATE_SUCCEEDED"
