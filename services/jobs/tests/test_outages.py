"""Dependency outages: Redis down degrades events only; PostgreSQL down answers UNAVAILABLE and heals."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg
import pytest
from pdfsmaller.jobs.v1 import jobs_service_pb2 as pb
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as pb_grpc

from devtools.servers.postgres import PostgresServer
from devtools.servers.redis import RedisServer
from libs.errors import reason_of
from services.jobs.db import migrate
from services.jobs.outages import DatabaseOutages
from services.jobs.tests.conftest import ParkedCalls
from services.jobs.tests.test_service import EVENT_DEADLINE, LONG_WAIT, start_service

pytestmark = pytest.mark.integration


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def create(stub: pb_grpc.JobsServiceStub) -> pb.Job:
    return stub.CreateJob(pb.CreateJobRequest(tenant="t", input_key=f"jobs/{uuid.uuid4()}/input.pdf"), timeout=5)


def test_redis_outage_degrades_events_but_not_writes(
    fresh_database_url: str, tmp_path: Path, parked: ParkedCalls
) -> None:
    redis_server = RedisServer(tmp_path / "valkey", port=0)
    redis_url = redis_server.start()
    port = redis_server.port
    # Storage is never called here; an unused address keeps the test independent of it.
    app, channel = start_service(fresh_database_url, redis_url, "127.0.0.1:1")
    stub = pb_grpc.JobsServiceStub(channel)
    try:
        assert app.events.healthy
        redis_server.stop()
        eventually(lambda: not app.events.healthy)
        # The write succeeds within its call deadline although its events cannot be published.
        job = create(stub)
        assert job.state == pb.JOB_STATE_QUEUED
        assert (app.registry.get_sample_value("jobs_event_publish_failures_total") or 0) >= 1

        # Watchers fall back to re-reading the database.
        seen: list[int] = []
        stream = stub.WatchJob(pb.WatchJobRequest(id=job.id, tenant="t"), timeout=15)
        seen.append(next(stream).state)
        collector = threading.Thread(target=lambda: seen.extend(update.state for update in stream))
        collector.start()
        leased = stub.LeaseJob(pb.LeaseJobRequest(worker_id="w", lease_seconds=30), timeout=5)
        assert leased.job.id == job.id
        stub.CompleteJob(pb.CompleteJobRequest(id=job.id, lease_token=leased.lease_token, output_key="o"), timeout=5)
        collector.join(timeout=EVENT_DEADLINE)
        assert not collector.is_alive()
        assert seen[0] == pb.JOB_STATE_QUEUED
        assert seen[-1] == pb.JOB_STATE_SUCCEEDED

        # Redis comes back on the same address: the subscription resumes and wakes idle workers again.
        redis_server = RedisServer(tmp_path / "valkey", port=port)
        redis_server.start()
        eventually(lambda: app.events.healthy)
        result: dict[str, str] = {}

        def wait_for_job() -> None:
            request = pb.LeaseJobRequest(worker_id="w", wait_seconds=LONG_WAIT)
            result["job"] = stub.LeaseJob(request, timeout=LONG_WAIT + 5).job.id

        waiter = threading.Thread(target=wait_for_job)
        waiter.start()
        parked.wait_for()
        second = create(stub)
        waiter.join(timeout=EVENT_DEADLINE)
        # With events healthy again its re-check (start_service: 120 s) and its wait end past the deadline.
        assert not waiter.is_alive(), "the idle LeaseJob was not woken by a queue event after Redis came back"
        assert result["job"] == second.id
    finally:
        channel.close()
        app.stop(grace=0)
        redis_server.stop()


def test_database_outage_answers_unavailable_and_heals(redis_url: str, tmp_path: Path) -> None:
    postgres = PostgresServer(tmp_path / "postgres", port=0, durable=False)
    database_url = postgres.start()
    port = postgres.port
    migrate(database_url)
    app, channel = start_service(database_url, redis_url, "127.0.0.1:1")
    stub = pb_grpc.JobsServiceStub(channel)
    try:
        job = create(stub)
        assert app.ready()
        postgres.stop()
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetJob(pb.GetJobRequest(id=job.id, tenant="t"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert reason_of(caught.value) == "DATABASE_UNAVAILABLE"
        assert not app.ready()

        postgres = PostgresServer(tmp_path / "postgres", port=port, durable=False)
        postgres.start()

        def answers() -> bool:
            try:
                return stub.GetJob(pb.GetJobRequest(id=job.id, tenant="t"), timeout=10).id == job.id
            except grpc.RpcError as error:
                if reason_of(error) != "DATABASE_UNAVAILABLE":
                    raise
                return False

        eventually(answers)
        assert app.ready()
    finally:
        channel.close()
        app.stop(grace=0)
        postgres.stop()


def test_a_lease_lapsed_in_a_database_outage_is_held_then_requeued_without_an_attempt(
    redis_url: str, tmp_path: Path
) -> None:
    skew = [timedelta(0)]
    outages = DatabaseOutages(clock=lambda: datetime.now(UTC) + skew[0])
    postgres = PostgresServer(tmp_path / "postgres", port=0, durable=False)
    database_url = postgres.start()
    port = postgres.port
    migrate(database_url)
    app, channel = start_service(database_url, redis_url, "127.0.0.1:1", outages=outages)
    stub = pb_grpc.JobsServiceStub(channel)

    def expire_leases() -> None:
        """The lease runs out now (after the outage began, as a lease whose renewals failed would)."""
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE jobs SET lease_expires_at = now() WHERE state = 'RUNNING'")

    def state() -> tuple[int, int, int]:
        job = stub.GetJob(pb.GetJobRequest(id=created.id, tenant="t"), timeout=5)
        return job.state, job.attempts, job.outage_retries

    try:
        created = create(stub)
        token = stub.LeaseJob(pb.LeaseJobRequest(worker_id="w", lease_seconds=30), timeout=5).lease_token
        postgres.stop()
        with pytest.raises(grpc.RpcError):
            stub.GetJob(pb.GetJobRequest(id=created.id, tenant="t"), timeout=10)
        postgres = PostgresServer(tmp_path / "postgres", port=port, durable=False)
        postgres.start()
        eventually(lambda: app.ready())
        assert outages.last() is not None
        # The worker could not renew meanwhile: its lapsed lease is held through the grace period...
        expire_leases()
        app.sweeper.sweep_once()
        assert state() == (pb.JOB_STATE_RUNNING, 1, 0)
        stub.RenewLease(pb.RenewLeaseRequest(id=created.id, lease_token=token, lease_seconds=30), timeout=5)
        # ...and if the worker never comes back, requeued after it without using the attempt.
        expire_leases()
        skew[0] = timedelta(seconds=61)
        app.sweeper.sweep_once()
        assert state() == (pb.JOB_STATE_QUEUED, 0, 1)
        assert app.registry.get_sample_value("jobs_lease_expirations_total", {"outcome": "outage"}) == 1
    finally:
        channel.close()
        app.stop(grace=0)
        postgres.stop()
