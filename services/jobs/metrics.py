"""Prometheus metrics of the jobs service (registered on the server's registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class JobsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.created = Counter("jobs_created_total", "Jobs created (idempotent repeats excluded).", registry=registry)
        self.finished = Counter(
            "jobs_finished_total",
            "Jobs that left QUEUED/RUNNING for good, by final state.",
            ["state"],
            registry=registry,
        )
        self.expired = Counter(
            "jobs_expired_total",
            "Jobs past their retention whose files were scheduled for deletion.",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "jobs_queue_depth",
            "Jobs waiting (QUEUED) or being worked on (RUNNING), refreshed by the sweeper.",
            ["state"],
            registry=registry,
        )
        self.waiting_retry = Gauge(
            "jobs_waiting_retry",
            "Queued jobs waiting for their retry backoff to pass (included in jobs_queue_depth{state=QUEUED}).",
            registry=registry,
        )
        self.outage_requeues = Counter(
            "jobs_outage_requeues_total",
            "Jobs requeued because of the system's own outage (no attempt used), by cause.",
            ["cause"],
            registry=registry,
        )
        self.lease_expirations = Counter(
            "jobs_lease_expirations_total",
            "Leases that ran out without renewal, by outcome (requeued or failed).",
            ["outcome"],
            registry=registry,
        )
        # Every label value from the start, so dashboards see zeros rather than gaps.
        for state in ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"):
            self.finished.labels(state)
        for state in ("QUEUED", "RUNNING"):
            self.queue_depth.labels(state)
        for outcome in ("requeued", "failed", "outage"):
            self.lease_expirations.labels(outcome)
        for cause in ("dependency", "lease"):
            self.outage_requeues.labels(cause)
        self.event_publish_failures = Counter(
            "jobs_event_publish_failures_total",
            "Job events not published because Redis was unavailable (watchers fall back to re-reading).",
            registry=registry,
        )
        self.object_delete_failures = Counter(
            "jobs_object_delete_failures_total",
            "Failed deletions of stored objects through the storage service (retried by the sweeper).",
            registry=registry,
        )
