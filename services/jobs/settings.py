"""Settings of the jobs service, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from libs.settings import EnvReader, common_ports


@dataclass(frozen=True)
class JobsSettings:
    listen: str
    metrics_port: int
    database_url: str
    redis_url: str
    storage_addr: str
    # Jobs and their files are deleted this long after creation.
    retention_hours: int
    # Leases (attempts) a job gets before it fails for good.
    max_attempts: int
    # How often the sweeper requeues expired leases and expires old jobs.
    sweep_interval_seconds: float
    database_pool_size: int
    # Calls served at once: each waiting LeaseJob long poll and each WatchJob holds a thread.
    max_workers: int
    # EXPIRED job records are kept this long (GetJob answers EXPIRED), then deleted.
    keep_expired_days: int = 30
    # Waiting LeaseJob/WatchJob calls re-read PostgreSQL this often even without an event (events can be
    # lost). Not read from the environment; tests make it long so only an event can wake a waiter in time.
    wait_recheck_seconds: float = 5.0
    # Written with the bound ports once serving (JOBS_ADDRESS_FILE), for launchers using port 0.
    address_file: Path | None = None
    # Requeued jobs wait random(0, min(cap, base * 2^n)) before the n-th retry (full jitter).
    retry_backoff_base_seconds: float = 2.0
    retry_backoff_cap_seconds: float = 300.0
    # Requeues caused by the system's own outages (these use no attempt) before a job fails anyway.
    max_outage_retries: int = 100
    # After a database outage, leases that lapsed meanwhile are held this long (workers renew or finish
    # once they can reach us), then requeued without using an attempt.
    outage_lease_grace_seconds: float = 60.0
    log_level: str = "INFO"
    # OPERATOR_TOKENS (`name:token,...`, from a Secret): bearer tokens of the operator APIs
    # (OperatorService, ApiKeyService); the name is who the audit log says called. Empty refuses every
    # operator call; required in production.
    operator_tokens: Mapping[str, str] = field(default_factory=dict)
    # A worker with no lease call or renewal for this long shows LOST in OperatorService.ListWorkers:
    # three of the compressor's longest gaps (LEASE_WAIT_SECONDS 20 between polls, a renewal every
    # LEASE_SECONDS / 3 = 20 s), with room for the call itself.
    worker_lost_after_seconds: float = 120.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JobsSettings:
        env = EnvReader(environ)
        listen, metrics_port, address_file = common_ports(env, "jobs")
        settings = cls(
            listen=listen,
            metrics_port=metrics_port,
            address_file=address_file,
            database_url=env.str("DATABASE_URL"),
            redis_url=env.str("REDIS_URL"),
            storage_addr=env.address("STORAGE_ADDR"),
            retention_hours=env.int("RETENTION_HOURS", 168, minimum=1),
            max_attempts=env.int("MAX_ATTEMPTS", 3, minimum=1),
            sweep_interval_seconds=float(env.int("SWEEP_INTERVAL_SECONDS", 30, minimum=1)),
            database_pool_size=env.int("DATABASE_POOL_SIZE", 10, minimum=2),
            max_workers=env.int("JOBS_MAX_WORKERS", 256, minimum=4),
            keep_expired_days=env.int("KEEP_EXPIRED_DAYS", 30, minimum=0),
            retry_backoff_base_seconds=env.float("RETRY_BACKOFF_BASE_SECONDS", 2.0),
            retry_backoff_cap_seconds=env.float("RETRY_BACKOFF_CAP_SECONDS", 300.0),
            max_outage_retries=env.int("MAX_OUTAGE_RETRIES", 100, minimum=0),
            outage_lease_grace_seconds=env.float("OUTAGE_LEASE_GRACE_SECONDS", 60.0),
            log_level=env.log_level(),
            operator_tokens=env.named_secrets("OPERATOR_TOKENS", min_length=24),
            worker_lost_after_seconds=env.float("WORKER_LOST_AFTER_SECONDS", 120.0),
        )
        env.require_in_production(
            bool(settings.operator_tokens), "OPERATOR_TOKENS is empty, so no operator could steer the queue"
        )
        for name, value in (
            ("RETRY_BACKOFF_BASE_SECONDS", settings.retry_backoff_base_seconds),
            ("RETRY_BACKOFF_CAP_SECONDS", settings.retry_backoff_cap_seconds),
            ("OUTAGE_LEASE_GRACE_SECONDS", settings.outage_lease_grace_seconds),
            ("WORKER_LOST_AFTER_SECONDS", settings.worker_lost_after_seconds),
        ):
            if value < 0:
                env.problem(f"{name}={value} must not be negative")
        env.done()
        return settings
