"""Storage's /metrics: the local backend's volume (read at each scrape), the process, the traffic; none
of the volume figures for S3, whose disk is not ours."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import grpc
import pytest
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as pb_grpc

from libs.tests.scrape import scrape
from services.storage.app import build, local_settings
from services.storage.backends.s3 import S3Backend, S3Config
from services.storage.settings import StorageSettings
from services.storage.tests.helpers import put_requests
from tests.plugins.services import StartService

pytestmark = pytest.mark.integration

VOLUME = (("volume", "objects"),)


def test_a_running_local_storage_exposes_its_volume_and_process(tmp_path: Path, service_starter: StartService) -> None:
    folder = tmp_path / "objects"
    running = service_starter(build, local_settings(str(folder)), metrics=True)
    with grpc.insecure_channel(running.address) as channel:
        pb_grpc.StorageServiceStub(channel).PutObject(put_requests("a/b.pdf", [b"%PDF-" + b"x" * 4096]), timeout=10)
    samples = scrape(running.metrics_port)
    stats = os.statvfs(folder)
    assert samples["pdfsmaller_volume_size_bytes"] == {VOLUME: stats.f_blocks * stats.f_frsize}
    # Other writers share the filesystem: a margin of 64 MiB.
    assert abs(samples["pdfsmaller_volume_available_bytes"][VOLUME] - stats.f_bavail * stats.f_frsize) < 64 << 20
    assert samples["pdfsmaller_volume_used_bytes"][VOLUME] > 0
    assert samples["storage_bytes_written_total"][()] == 4101
    assert samples["process_resident_memory_bytes"][()] > 0
    assert samples["process_cpu_seconds_total"][()] > 0


def test_an_s3_storage_reports_no_volume(tmp_path: Path, s3_endpoint: str) -> None:
    config = S3Config(
        endpoint=s3_endpoint,
        bucket=f"test-{uuid.uuid4().hex[:12]}",
        access_key="test",
        secret_key="test",
        region="us-east-1",
        secure=False,
    )
    backend = S3Backend(config, spool_dir=str(tmp_path))
    backend.ensure_bucket()
    settings = StorageSettings(listen="127.0.0.1:0", metrics_port=0, backend="s3", directory="", s3=config)
    registry = build(settings, backend).spec.registry
    assert [family.name for family in registry.collect() if family.name.startswith("pdfsmaller_volume")] == []
