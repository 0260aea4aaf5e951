"""The compressor worker loop: lease a job, compress it, store the result, complete.

A job's bytes never pass through memory whole: input and output stream
between storage and a private temporary folder. The engine runs in a child
process with CPU and memory limits (services.compressor.engine), one per job;
app.py gives `Engine` a pool of warm spares, so that child was started and
loaded its libraries before the job was leased.

The system's own outages are not the job's fault: the worker leases only while
jobs and storage are ready (DependencyGate), reports a storage outage met
mid-job as `outage` (requeued without using an attempt), and keeps trying to
report an outcome while the jobs service is away, as long as its lease holds.
"""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2
from opentelemetry import trace
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from pdfsmaller.storage.v1 import storage_service_pb2 as storage
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as storage_grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from libs import compression
from libs.errors import ServiceError, reason_of
from libs.metrics import BoundedLabel, BusySeconds
from libs.telemetry import traceparent_context
from services.compressor import transfer
from services.compressor.engine import CompressOptions, EngineError, Limits
from services.compressor.engine.errors import ENGINE_CRASHED, OUT_OF_MEMORY, TIMEOUT
from services.compressor.engine.errors import REASONS as ENGINE_REASONS
from services.compressor.engine.report import KEPT_ORIGINAL_REASONS
from services.compressor.heartbeat import Heartbeat
from services.compressor.readiness import DependencyGate
from services.compressor.workdir import job_folder

log = logging.getLogger(__name__)
tracer = trace.get_tracer("pdfsmaller.compressor")

# The isolated engine: writes the output, returns its report as a JSON object (stored with the job as is).
Engine = Callable[..., dict[str, Any]]

# Engine failures worth another attempt on another worker; the rest are facts about the file.
RETRYABLE_ENGINE_REASONS = {ENGINE_CRASHED}
# The engine's resource limits and crashes, which operators watch (EngineLimitsHit).
ENGINE_LIMIT_REASONS = (TIMEOUT, OUT_OF_MEMORY, ENGINE_CRASHED)
# Storage answers that mean "storage is away", not "this job is wrong".
OUTAGE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
MAX_BACKOFF_SECONDS = 10.0
# Between tries to report an outcome: short, since the job is done and the jobs service is back soon.
MAX_REPORT_BACKOFF_SECONDS = 5.0


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    lease_seconds: int
    lease_wait_seconds: int
    limits: Limits
    work_dir: Path
    call_timeout_seconds: float
    # How long to keep reporting an outcome while the jobs service is unreachable (the heartbeat keeps
    # the lease meanwhile, or learns it was lost).
    finish_retry_seconds: float = 600.0
    # Sent with each lease call for OperatorService.ListWorkers: where this worker runs, since when (the
    # config is made once, as the process starts).
    host: str = field(default_factory=socket.gethostname)
    start_time: datetime = field(default_factory=lambda: datetime.now(UTC))


# Ratio buckets (output / input): 1.0 is a kept original.
RATIO_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class _Metrics:
    """Labels: `level` is one of libs.compression's level names; `outcome` SUCCEEDED, LEASE_LOST or a
    failure reason code and `reason` a kept-original code, both bounded (the engine child reports them)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcome = BoundedLabel(["SUCCEEDED", "LEASE_LOST", *ENGINE_REASONS])
        self.kept_reason = BoundedLabel(KEPT_ORIGINAL_REASONS)
        self.jobs = Counter(
            "compressor_jobs_total",
            "Jobs finished by this worker, by level and outcome.",
            ["level", "outcome"],
            registry=registry,
        )
        self.kept_original = Counter(
            "pdfsmaller_compressor_kept_original_total",
            "Succeeded jobs whose output is the input itself (nothing smaller passed), by level and reason.",
            ["level", "reason"],
            registry=registry,
        )
        self.seconds = Histogram(
            "compressor_job_seconds",
            "Time from lease to completion, by level.",
            ["level"],
            registry=registry,
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
        )
        self.ratio = Histogram(
            "pdfsmaller_compressor_compression_ratio",
            "Output size / input size of succeeded jobs, by level.",
            ["level"],
            registry=registry,
            buckets=RATIO_BUCKETS,
        )
        self.input_bytes = Counter("compressor_input_bytes_total", "Bytes of input compressed.", registry=registry)
        self.output_bytes = Counter("compressor_output_bytes_total", "Bytes of output stored.", registry=registry)
        self.busy = Gauge("compressor_busy_workers", "Worker threads compressing now.", registry=registry)
        self.busy_seconds = BusySeconds(
            "pdfsmaller_compressor_busy_seconds_total",
            "Seconds worker threads spent on jobs, the jobs in hand included: rate() is the busy workers.",
        )
        registry.register(self.busy_seconds)
        # Series present from the start at 0, so rate() and increase() see their first count (the
        # EngineLimitsHit alert, the kept-originals panel).
        for level in compression.LEVEL_NAMES:
            for outcome in ("SUCCEEDED", *ENGINE_LIMIT_REASONS):
                self.jobs.labels(level, outcome)
            for reason in KEPT_ORIGINAL_REASONS:
                self.kept_original.labels(level, reason)
            self.seconds.labels(level)
            self.ratio.labels(level)

    def succeeded(self, level: str, completion: jobs.CompleteJobRequest, input_size_bytes: int) -> None:
        self.jobs.labels(level, "SUCCEEDED").inc()
        if input_size_bytes > 0:
            self.ratio.labels(level).observe(completion.output_size_bytes / input_size_bytes)
        report = completion.report.fields
        if "kept_original" in report and report["kept_original"].bool_value:
            reason = report["kept_original_reason"].string_value if "kept_original_reason" in report else ""
            self.kept_original.labels(level, self.kept_reason(reason)).inc()

    def failed(self, level: str, reason: str) -> None:
        self.jobs.labels(level, self.outcome(reason)).inc()


class _JobFailed(Exception):
    def __init__(self, reason: str, message: str, retryable: bool, outage: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retryable = retryable
        self.outage = outage


def _storage_failure(error: grpc.RpcError, what: str) -> _JobFailed:
    code = error.code() if isinstance(error, grpc.Call) else None
    if code in OUTAGE_CODES:
        return _JobFailed("STORAGE_UNAVAILABLE", f"{what}: storage is unavailable; retrying", True, outage=True)
    return _JobFailed("STORAGE_ERROR", f"{what} ({reason_of(error)}); retrying", True)


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        jobs_stub: jobs_grpc.JobsServiceStub,
        storage_stub: storage_grpc.StorageServiceStub,
        engine: Engine,
        registry: CollectorRegistry,
        *,
        gate: DependencyGate | None = None,
    ) -> None:
        """`gate` (None: lease regardless) keeps the worker from leasing while a dependency is down."""
        self._config = config
        self._jobs = jobs_stub
        self._storage = storage_stub
        self._engine = engine
        self._metrics = _Metrics(registry)
        self._gate = gate
        # Why the last lease calls got nothing ("paused", "draining"), so it is logged once, not per poll.
        self._held_back = ""

    def run(self, stop: threading.Event) -> None:
        """Lease and process jobs until `stop` is set; a job in hand is finished first."""
        backoff = 0.5
        failing = False
        while not stop.is_set():
            if self._gate is not None and not self._gate.wait_until_ready(stop):
                return
            try:
                lease = self._lease(stop)
            except grpc.FutureCancelledError:
                return
            except grpc.RpcError as error:
                # Said once per run of failures, not at every try.
                if not failing:
                    log.warning("cannot lease jobs (%s); retrying with backoff", reason_of(error))
                failing = True
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            if failing:
                log.info("leasing jobs again")
            failing = False
            backoff = 0.5
            if lease.HasField("job"):
                self.process(lease.job, lease.lease_token)

    def _lease(self, stop: threading.Event) -> jobs.LeaseJobResponse:
        """Wait for a job in a long poll that a shutdown cancels at once."""
        start_time = timestamp_pb2.Timestamp()
        start_time.FromDatetime(self._config.start_time)
        pending = self._jobs.LeaseJob.future(
            jobs.LeaseJobRequest(
                worker_id=self._config.worker_id,
                lease_seconds=self._config.lease_seconds,
                wait_seconds=self._config.lease_wait_seconds,
                host=self._config.host,
                worker_start_time=start_time,
            ),
            timeout=self._config.lease_wait_seconds + self._config.call_timeout_seconds,
        )
        while not pending.done():
            if stop.wait(0.1):
                pending.cancel()
                break
        answer = pending.result()
        held_back = "paused" if answer.paused else "draining" if answer.draining else ""
        if held_back != self._held_back:
            if held_back == "paused":
                log.warning("the queue is paused (OperatorService.PauseQueue): leasing no jobs until it resumes")
            elif held_back == "draining":
                log.warning("this worker is drained (OperatorService.DrainWorker): leasing no more jobs")
            else:
                log.info("leasing jobs again (the queue resumed or the drain was undone)")
            self._held_back = held_back
        return answer

    def process(self, job: jobs.Job, lease_token: str) -> None:
        started = time.monotonic()
        level = compression.level_name(job.options.level)
        self._metrics.busy.inc()
        busy = self._metrics.busy_seconds.begin()
        try:
            with (
                traceparent_context(job.traceparent),
                tracer.start_as_current_span("compress job", attributes={"pdfsmaller.job_id": job.id}) as span,
                job_folder(self._config.work_dir, job.id) as tmp,
                Heartbeat(self._jobs, job.id, lease_token, self._config.lease_seconds) as heartbeat,
            ):
                fields = {"job_id": job.id, "attempt": job.attempts, "input_size_bytes": job.input_size_bytes}
                log.info("job %s leased", job.id, extra={"fields": fields})
                try:
                    completion = self._compress(job, tmp, heartbeat)
                except _JobFailed as failure:
                    span.set_attribute("pdfsmaller.failure_reason", failure.reason)
                    log.info(
                        "job %s: %s (%s)",
                        job.id,
                        failure.reason,
                        "will be retried" if failure.retryable else "final",
                        extra={"fields": {**fields, "reason": failure.reason, "retryable": failure.retryable}},
                    )
                    if heartbeat.lost.is_set():
                        return
                    self._finish(job, lease_token, heartbeat.lost, failure=failure)
                    return
                log.info(
                    "job %s compressed: %d -> %d bytes in %.1f s",
                    job.id,
                    job.input_size_bytes,
                    completion.output_size_bytes,
                    time.monotonic() - started,
                    extra={"fields": {**fields, "output_size_bytes": completion.output_size_bytes}},
                )
                if heartbeat.lost.is_set() or not self._finish(job, lease_token, heartbeat.lost, completion=completion):
                    log.warning("job %s was taken away while compressing; result dropped", job.id)
                    self._metrics.jobs.labels(level, "LEASE_LOST").inc()
                    self._delete_quietly(completion.output_key)
        finally:
            self._metrics.busy.dec()
            self._metrics.busy_seconds.end(busy)
            self._metrics.seconds.labels(level).observe(time.monotonic() - started)

    def _compress(self, job: jobs.Job, tmp: Path, heartbeat: Heartbeat) -> jobs.CompleteJobRequest:
        source = tmp / "input.pdf"
        result = tmp / "output.pdf"
        timeout = self._config.call_timeout_seconds * 10
        try:
            transfer.download(self._storage, job.input_key, source, job.input_sha256, timeout)
        except ServiceError as error:
            raise _JobFailed(error.reason, error.message, retryable=False) from None
        except grpc.RpcError as error:
            raise _storage_failure(error, "the input could not be read") from error
        heartbeat.progress(5)
        options = CompressOptions(**compression.engine_kwargs(compression.values_of(job.options)))
        try:
            report = self._engine(source, result, options, limits=self._config.limits, progress=heartbeat.progress)
        except EngineError as error:
            raise _JobFailed(error.reason, error.message, error.reason in RETRYABLE_ENGINE_REASONS) from None
        if result.stat().st_size > source.stat().st_size:
            # Defence in depth: the engine promises never to grow a file; keep the original if it did.
            log.error("engine output larger than input for job %s; keeping the original", job.id)
            shutil.copyfile(source, result)
        heartbeat.progress(95)
        # One key per attempt: a worker that lost its lease deletes its own output, never a successor's.
        output_key = f"outputs/{job.id}-{job.attempts}.pdf"
        try:
            stored = transfer.upload(self._storage, output_key, result, timeout)
        except grpc.RpcError as error:
            raise _storage_failure(error, "the result could not be stored") from error
        self._metrics.input_bytes.inc(job.input_size_bytes)
        self._metrics.output_bytes.inc(stored.size_bytes)
        report_struct = struct_pb2.Struct()
        report_struct.update(report)
        return jobs.CompleteJobRequest(
            id=job.id,
            output_key=output_key,
            output_size_bytes=stored.size_bytes,
            output_sha256=stored.sha256,
            report=report_struct,
        )

    def _finish(
        self,
        job: jobs.Job,
        lease_token: str,
        lost: threading.Event,
        completion: jobs.CompleteJobRequest | None = None,
        failure: _JobFailed | None = None,
    ) -> bool:
        """Report the outcome, retrying with backoff while the jobs service is away.

        False when the job is no longer ours. Retries end when the heartbeat learns the lease is lost or
        after finish_retry_seconds; then the lease expires and the sweeper decides.
        """
        deadline = time.monotonic() + self._config.finish_retry_seconds
        wait = 0.5
        failures = 0
        while True:
            try:
                self._report(job, lease_token, completion, failure)
            except grpc.RpcError as error:
                if isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    log.warning("job %s no longer ours (%s)", job.id, reason_of(error))
                    return False
                failures += 1
                if failures == 1:
                    log.warning("reporting job %s failed (%s); retrying with backoff", job.id, reason_of(error))
                if lost.wait(min(wait, max(deadline - time.monotonic(), 0.0))) or time.monotonic() >= deadline:
                    log.warning("gave up reporting job %s after %d tries; its lease decides", job.id, failures)
                    return not lost.is_set()
                wait = min(wait * 2, MAX_REPORT_BACKOFF_SECONDS)
                continue
            if failures:
                log.info("reported job %s after %d failed tries", job.id, failures)
            return True

    def _report(
        self,
        job: jobs.Job,
        lease_token: str,
        completion: jobs.CompleteJobRequest | None,
        failure: _JobFailed | None,
    ) -> None:
        if completion is not None:
            completion.lease_token = lease_token
            self._jobs.CompleteJob(completion, timeout=self._config.call_timeout_seconds)
            self._metrics.succeeded(compression.level_name(job.options.level), completion, job.input_size_bytes)
        elif failure is not None:
            self._jobs.FailJob(
                jobs.FailJobRequest(
                    id=job.id,
                    lease_token=lease_token,
                    error=jobs.JobError(reason=failure.reason, message=failure.message),
                    retryable=failure.retryable,
                    outage=failure.outage,
                ),
                timeout=self._config.call_timeout_seconds,
            )
            self._metrics.failed(compression.level_name(job.options.level), failure.reason)

    def _delete_quietly(self, key: str) -> None:
        try:
            self._storage.DeleteObject(storage.DeleteObjectRequest(key=key), timeout=self._config.call_timeout_seconds)
        except grpc.RpcError:
            log.warning("could not delete orphaned output %s", key, exc_info=True)
