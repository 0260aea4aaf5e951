"""Background upkeep: lease expiry, retention, queue depth.

Every replica runs one; they cooperate through row locks (`SKIP LOCKED`), so
running several is safe and needs no leader. Each pass:

1. RUNNING jobs whose lease ran out go back to QUEUED after a backoff (idle
   workers wake when it is due), or FAILED with LEASE_EXPIRED_TOO_OFTEN once
   max_attempts leases were used. Right after a database outage this replica
   saw, lapsed leases are held for a grace period (their workers could not
   renew; they will once they reach us), and those that lapsed in the outage
   are then requeued without using an attempt.
2. Jobs past expire_time become EXPIRED.
3. EXPIRED jobs' objects are deleted through the storage service; a job is
   marked done only when that worked, so a storage outage is retried next pass.
4. The queue gauges are refreshed (depth by state, age of the oldest due job).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from libs.errors import ServiceError
from services.jobs.events import JobEvents
from services.jobs.metrics import JobsMetrics
from services.jobs.objects import ObjectDeleter
from services.jobs.outages import Outage
from services.jobs.repository import ACTIVE_STATES, FAILED, QUEUED, JobRepository
from services.jobs.workers import WorkerRegistry

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(
        self,
        repository: JobRepository,
        events: JobEvents,
        deleter: ObjectDeleter,
        metrics: JobsMetrics,
        interval_seconds: float,
        keep_expired_days: int = 30,
        outage_lease_grace_seconds: float = 60.0,
        workers: WorkerRegistry | None = None,
    ) -> None:
        """`workers`: its lost workers are forgotten after a day, its gauge refreshed, each pass."""
        self._repo = repository
        self._workers = workers
        self._events = events
        self._deleter = deleter
        self._metrics = metrics
        self._interval = interval_seconds
        self._keep_expired_days = keep_expired_days
        self._grace = timedelta(seconds=outage_lease_grace_seconds)
        self._holding_since_outage: Outage | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobs-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        # First pass at once: leases may have expired while no replica was running.
        wait = 0.0
        while not self._stopping.wait(wait):
            wait = self._interval
            try:
                self.sweep_once()
            except ServiceError as error:
                log.warning("sweep skipped: %s (%s)", error.reason, error.message)
            except Exception:  # the sweeper must outlive any one bad pass
                log.exception("sweep failed")

    def sweep_once(self) -> None:
        self.requeue_expired_leases()
        self.expire_due()
        self.delete_expired_objects()
        purged = self._repo.purge_expired(self._keep_expired_days)
        if purged:
            log.info("purged %d expired job record(s)", purged)
        self.refresh_queue_metrics()
        if self._workers is not None:
            self._workers.upkeep()

    def refresh_queue_metrics(self) -> None:
        """Queue depth (by level), age and throughput, here rather than at each scrape: a scrape never
        queries the database."""
        self._metrics.observe_queue(self._repo.queue_stats())

    def _refund_window(self) -> Outage | None:
        """The last database outage widened by the grace: leases that lapsed in it were not the job's fault."""
        outage = self._repo.outages.last()
        return None if outage is None else Outage(outage.started, outage.ended + self._grace)

    def _holding_leases(self, window: Outage | None) -> bool:
        """Within the grace after an outage: workers may still renew or finish, so nothing is requeued.

        Also while the last query failed: this pass's would be the first to succeed, ending the outage
        only after it had charged every lease that lapsed in it.
        """
        if self._repo.outages.down:
            return True
        if window is None or self._repo.outages.now() >= window.ended:
            return False
        if self._holding_since_outage != window:
            self._holding_since_outage = window
            log.info("database was unavailable: holding lapsed leases for %.0f s", self._grace.total_seconds())
        return True

    def requeue_expired_leases(self) -> int:
        window = self._refund_window()
        if self._holding_leases(window):
            return 0
        lapsed = self._repo.requeue_expired_leases(outage=window)
        for job, reason in lapsed:
            outcome = {"exhausted": "failed", "outage": "outage"}.get(reason, "requeued")
            self._metrics.lease_expirations.labels(outcome).inc()
            if reason == "outage":
                self._metrics.outage_requeues.labels("lease").inc()
            if job.state == FAILED:
                self._metrics.finished.labels(FAILED).inc()
            log.info("lease of job %s expired; job %s", job.id, outcome, extra={"fields": {"job_id": str(job.id)}})
            self._events.job_changed(str(job.id), job.state, queued=job.state == QUEUED)
        return len(lapsed)

    def expire_due(self) -> int:
        expired = self._repo.expire_due()
        for job, previous in expired:
            self._metrics.expired.inc()
            if previous in ACTIVE_STATES:
                self._metrics.finished.labels(job.state).inc()
            self._events.job_changed(str(job.id), job.state)
        if expired:
            log.info("expired %d job(s) past their retention", len(expired))
        return len(expired)

    def delete_expired_objects(self) -> int:
        deleted = 0
        for job in self._repo.objects_to_delete():
            try:
                self._deleter.delete(job.object_keys)
            except ServiceError as error:
                self._metrics.object_delete_failures.inc()
                log.warning("cannot delete objects of expired job %s: %s; retrying next pass", job.id, error.reason)
                # Storage is probably down: the rest would fail the same way.
                break
            self._repo.mark_objects_deleted(job.id)
            deleted += 1
        return deleted
