"""The worker's metrics as it runs real jobs (real jobs service, storage and engine): outcomes, time and
ratio per level, kept originals, busy time; and the built compressor's /metrics carries them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs
from prometheus_client import CollectorRegistry

from libs.compression import LEVEL_NAMES, level_number
from services.compressor import transfer
from services.compressor.engine.report import KEPT_ORIGINAL_REASONS
from services.compressor.tests.builders import minimal_pdf
from services.compressor.tests.test_worker import DATA, System, system  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

SOURCE = DATA / "pypdf__jpeg.pdf"


def submit(system: System, pdf: Path, level: str) -> str:  # noqa: F811 - the fixture's name
    job_id = str(uuid.uuid4())
    stored = transfer.upload(system.storage, f"inputs/{job_id}.pdf", pdf, timeout=30)
    system.jobs.CreateJob(
        jobs.CreateJobRequest(
            tenant="t",
            job_id=job_id,
            filename=pdf.name,
            options=jobs.CompressionOptions(level=level_number(level)),  # type: ignore[arg-type]
            input_key=f"inputs/{job_id}.pdf",
            input_size_bytes=stored.size_bytes,
            input_sha256=stored.sha256,
        ),
        timeout=10,
    )
    return job_id


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def __call__(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def test_a_compressed_job_counts_its_level_time_ratio_and_busy_time(system: System) -> None:  # noqa: F811
    registry = CollectorRegistry()
    metric = Metrics(registry)
    worker = system.worker(registry=registry)
    job_id = submit(system, SOURCE, "high")
    system.lease_and_process(worker)
    job = system.job(job_id)
    assert job.state == jobs.JOB_STATE_SUCCEEDED, job.error
    assert metric("compressor_jobs_total", level="high", outcome="SUCCEEDED") == 1
    assert metric("compressor_jobs_total", level="medium", outcome="SUCCEEDED") == 0
    # The engine-limit outcomes exist at 0 before the first one, for rate() and increase().
    assert metric("compressor_jobs_total", level="medium", outcome="TIMEOUT") == 0
    assert metric("pdfsmaller_compressor_kept_original_total", level="low", reason="NOT_SMALLER") == 0
    assert metric("compressor_job_seconds_count", level="high") == 1
    assert metric("compressor_job_seconds_sum", level="high") > 0
    assert metric("pdfsmaller_compressor_compression_ratio_count", level="high") == 1
    ratio = job.output_size_bytes / SOURCE.stat().st_size
    assert metric("pdfsmaller_compressor_compression_ratio_sum", level="high") == pytest.approx(ratio)
    assert ratio < 1
    assert metric("pdfsmaller_compressor_kept_original_total", level="high", reason="NOT_SMALLER") == 0
    busy_seconds = metric("pdfsmaller_compressor_busy_seconds_total")
    assert busy_seconds >= metric("compressor_job_seconds_sum", level="high") * 0.99
    assert metric("compressor_busy_workers") == 0


def test_a_file_nothing_can_shrink_counts_as_kept_original(system: System, tmp_path: Path) -> None:  # noqa: F811
    registry = CollectorRegistry()
    metric = Metrics(registry)
    submit(system, minimal_pdf(tmp_path / "minimal.pdf"), "lossless")
    system.lease_and_process(system.worker(registry=registry))
    assert metric("compressor_jobs_total", level="lossless", outcome="SUCCEEDED") == 1
    assert metric("pdfsmaller_compressor_kept_original_total", level="lossless", reason="NOT_SMALLER") == 1
    assert metric("pdfsmaller_compressor_compression_ratio_bucket", level="lossless", le="0.99") == 0
    assert metric("pdfsmaller_compressor_compression_ratio_bucket", level="lossless", le="1.0") == 1


def test_failures_count_their_reason_per_level_and_no_ratio(system: System) -> None:  # noqa: F811
    registry = CollectorRegistry()
    metric = Metrics(registry)
    submit(system, DATA / "samplefiles__libreoffice-writer-password.pdf", "low")
    system.lease_and_process(system.worker(registry=registry))
    assert metric("compressor_jobs_total", level="low", outcome="ENCRYPTED_PDF") == 1
    assert metric("compressor_jobs_total", level="low", outcome="SUCCEEDED") == 0
    assert metric("pdfsmaller_compressor_compression_ratio_count", level="low") == 0
    assert metric("compressor_job_seconds_count", level="low") == 1


def test_codes_a_misbehaving_engine_reports_stay_bounded(system: System) -> None:  # noqa: F811
    # The engine runs untrusted PDFs in a child: what it reports must not grow the label sets.
    def engine(source: Path, result: Path, *_args: object, **_kwargs: object) -> dict[str, Any]:
        result.write_bytes(source.read_bytes())
        return {"kept_original": True, "kept_original_reason": "<script> made up, and long " * 10}

    registry = CollectorRegistry()
    metric = Metrics(registry)
    submit(system, SOURCE, "maximum")
    system.lease_and_process(system.worker(engine=engine, registry=registry))
    assert metric("pdfsmaller_compressor_kept_original_total", level="maximum", reason="OTHER") == 1
    assert label_values(registry, "reason") == {"OTHER", *KEPT_ORIGINAL_REASONS}  # the known, at 0
    assert label_values(registry, "level") <= set(LEVEL_NAMES)


def label_values(registry: CollectorRegistry, label: str) -> set[str]:
    samples = (sample for family in registry.collect() for sample in family.samples)
    return {sample.labels[label] for sample in samples if label in sample.labels}
