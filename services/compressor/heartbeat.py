"""Keeps a job's lease alive and reports progress while the engine works."""

from __future__ import annotations

import logging
import threading

import grpc
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc

from libs.errors import reason_of

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews the lease every third of its length; `lost` is set once another
    worker may own the job (lease expired or job cancelled), so our result is void."""

    def __init__(self, stub: jobs_grpc.JobsServiceStub, job_id: str, lease_token: str, lease_seconds: int) -> None:
        self._stub = stub
        self._job_id = job_id
        self._token = lease_token
        self._lease_seconds = lease_seconds
        self._progress = 0
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id[:8]}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def progress(self, percent: int) -> None:
        self._progress = max(0, min(100, percent))

    def _run(self) -> None:
        interval = self._lease_seconds / 3
        failing = False
        while not self._stop.wait(interval):
            try:
                self._stub.RenewLease(
                    jobs.RenewLeaseRequest(
                        id=self._job_id,
                        lease_token=self._token,
                        lease_seconds=self._lease_seconds,
                        progress_percent=self._progress,
                    ),
                    timeout=interval,
                )
            except grpc.RpcError as error:
                if isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    log.warning("lease lost for job %s (%s)", self._job_id, reason_of(error))
                    self.lost.set()
                    return
                # Transient: the lease outlives a few missed renewals, and one that lapsed while the jobs
                # service could not reach its database is held for us. Said once, not at every try.
                if not failing:
                    log.warning("lease renewal failed for job %s (%s); will retry", self._job_id, reason_of(error))
                failing = True
                continue
            if failing:
                log.info("lease of job %s renewed again", self._job_id)
            failing = False
