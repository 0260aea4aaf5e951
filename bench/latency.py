"""Benchmark: how fast the jobs service's events reach waiting calls, against real PostgreSQL and Valkey.

    python -m bench.latency [--runs 50] [--out bench/latency_results.md]

The jobs tests assert that these things happen, with no wall-clock bounds (a busy machine must not fail them);
this script measures how fast, with the targets those tests used to assert:

- an idle LeaseJob is woken by a new job's queue event (CreateJob call -> LeaseJob answers): 0.5 s
- the sweeper requeues an expired lease and wakes a waiting worker (sweep pass -> LeaseJob answers; retry
  backoff off, so the requeued job is due at once): 1.0 s
- a WatchJob stream ends when its job is deleted (DeleteJob call -> stream ends): 1.0 s
- CreateJob while Redis is down (each call tries to publish: the runs are spaced past the publish back-off): 1.5 s
- an idle LeaseJob is woken by a queue event again after Redis restarted: 0.5 s
- a storage PutObject of 64 KiB (every upload and every stored result): 25 ms (before issue 8 storage waited 50 ms
  for a late cancel before each commit; the last message now carries the size and sha256)

Servers are started as the tests start them: PostgreSQL (fsync off) and Valkey from devtools.servers on ports
they pick, a local-backend storage server, and the jobs app in this process on 127.0.0.1:0 with its production
re-check interval (5 s) and one client channel. A run starts only once its waiting call is idle in the server.
A figure PASSes when its p95 is under the target; `over` counts single runs above it (each of which would
have failed the old assertion). Exit status 1 when any figure fails.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import redis
from pdfsmaller.jobs.v1 import jobs_service_pb2 as pb
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as pb_grpc
from pdfsmaller.storage.v1 import storage_service_pb2 as storage_pb
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as storage_grpc

from devtools.servers.postgres import PostgresServer
from devtools.servers.redis import RedisServer
from libs.errors import reason_of
from services.jobs import events
from services.jobs.app import JobsService
from services.jobs.app import build as build_jobs
from services.jobs.db import migrate
from services.jobs.settings import JobsSettings
from services.storage.app import build as build_storage
from services.storage.app import local_settings as local_storage_settings

ROOT = Path(__file__).resolve().parents[1]
TENANT = "bench"
# A waiting call that is not woken by its event answers after this (its re-check comes after 5 s).
WAIT_SECONDS = 20
# Publishing is skipped for 1 s after a failure (services/jobs/events.py); runs are spaced past that.
PUBLISH_BACKOFF_SECONDS = 1.0
PUT_OBJECT_BYTES = 64 * 1024


@dataclass
class Figure:
    name: str
    target: float
    meaning: str
    samples: list[float]

    def quantile(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    @property
    def over(self) -> int:
        return sum(sample > self.target for sample in self.samples)

    @property
    def verdict(self) -> str:
        return "PASS" if self.quantile(0.95) < self.target else "FAIL"


class ParkedCalls:
    """Counts calls idle in `Waiter.wait`, so a run acts only once its LeaseJob/WatchJob waits for an event."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._parked = 0

    def _add(self, delta: int) -> None:
        with self._changed:
            self._parked += delta
            self._changed.notify_all()

    @contextmanager
    def installed(self) -> Iterator[None]:
        original = events.Waiter.wait

        def wait(waiter: events.Waiter, timeout: float) -> bool:
            self._add(1)
            try:
                return original(waiter, timeout)
            finally:
                self._add(-1)

        events.Waiter.wait = wait  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            events.Waiter.wait = original  # type: ignore[method-assign]

    def wait_for(self, timeout: float = 20.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self._parked >= 1, timeout):
                raise RuntimeError("the waiting call never became idle")


class Bench:
    def __init__(self, app: JobsService, channel: grpc.Channel, database_url: str, parked: ParkedCalls) -> None:
        self.app = app
        self.stub = pb_grpc.JobsServiceStub(channel)
        self.database_url = database_url
        self.parked = parked

    def create(self) -> pb.Job:
        request = pb.CreateJobRequest(tenant=TENANT, filename="in.pdf", input_key=f"jobs/{uuid.uuid4()}/input.pdf")
        return self.stub.CreateJob(request, timeout=10)

    def lease(self, wait: int = 0) -> pb.LeaseJobResponse:
        request = pb.LeaseJobRequest(worker_id="bench", lease_seconds=60, wait_seconds=wait)
        return self.stub.LeaseJob(request, timeout=wait + 10)

    def complete(self, response: pb.LeaseJobResponse) -> None:
        request = pb.CompleteJobRequest(id=response.job.id, lease_token=response.lease_token, output_key="o")
        self.stub.CompleteJob(request, timeout=10)

    def woken_lease(self, trigger: Callable[[], str]) -> float:
        """Seconds from `trigger` (which makes a job leasable and returns its id) until an idle LeaseJob has it."""
        answered: dict[str, object] = {}

        def wait() -> None:
            answered["response"] = self.lease(WAIT_SECONDS)
            answered["at"] = time.monotonic()

        waiter = threading.Thread(target=wait)
        waiter.start()
        self.parked.wait_for()
        started = time.monotonic()
        job_id = trigger()
        waiter.join(WAIT_SECONDS + 15)
        response = answered["response"]
        assert isinstance(response, pb.LeaseJobResponse)
        if response.job.id != job_id:
            raise RuntimeError(f"the waiting LeaseJob got {response.job.id or 'nothing'}, not {job_id}")
        self.complete(response)
        return float(answered["at"]) - started  # type: ignore[arg-type]

    def lease_woken_by_create(self) -> float:
        return self.woken_lease(lambda: self.create().id)

    def lease_woken_by_sweeper(self) -> float:
        job = self.create()
        self.lease()
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (job.id,))

        def sweep() -> str:
            self.app.sweeper.sweep_once()
            return job.id

        return self.woken_lease(sweep)

    def watch_ended_by_delete(self) -> float:
        job = self.create()
        stream = self.stub.WatchJob(pb.WatchJobRequest(id=job.id, tenant=TENANT), timeout=WAIT_SECONDS)
        next(stream)
        self.parked.wait_for()
        started = time.monotonic()
        self.stub.DeleteJob(pb.DeleteJobRequest(id=job.id, tenant=TENANT), timeout=10)
        try:
            for _ in stream:
                pass
        except grpc.RpcError as error:
            if reason_of(error) != "JOB_NOT_FOUND":
                raise
        return time.monotonic() - started

    def create_without_redis(self) -> float:
        time.sleep(PUBLISH_BACKOFF_SECONDS + 0.1)  # so this create tries to publish again
        started = time.monotonic()
        job = self.create()
        elapsed = time.monotonic() - started
        # Leave the queue empty, so the LeaseJob calls measured afterwards wait again.
        self.stub.DeleteJob(pb.DeleteJobRequest(id=job.id, tenant=TENANT), timeout=10)
        return elapsed


def put_object_timer(channel: grpc.Channel) -> Callable[[], float]:
    """Seconds for one PutObject of PUT_OBJECT_BYTES, header to answer, on a channel to storage."""
    stub = storage_grpc.StorageServiceStub(channel)
    data = os.urandom(PUT_OBJECT_BYTES)
    finish = storage_pb.PutObjectFinish(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    def put() -> float:
        requests = [
            storage_pb.PutObjectRequest(header=storage_pb.PutObjectHeader(key=f"bench/{uuid.uuid4()}")),
            storage_pb.PutObjectRequest(chunk=data),
            storage_pb.PutObjectRequest(finish=finish),
        ]
        started = time.monotonic()
        stub.PutObject(iter(requests), timeout=10)
        return time.monotonic() - started

    return put


def measure(runs: int, label: str, run: Callable[[], float]) -> list[float]:
    print(f"{label}: {runs} runs", file=sys.stderr)
    return [run() for _ in range(runs)]


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}"


def load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def server_versions(database_url: str, redis_server: RedisServer) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    postgres = row[0] if row else "?"
    client = redis.Redis.from_url(redis_server.url)
    try:
        info = client.info("server")
    finally:
        client.close()
    valkey = info.get("valkey_version") or info.get("redis_version") or "?"
    return f"PostgreSQL {postgres} (fsync off), Valkey {valkey}"


def run(runs: int, work: Path) -> tuple[list[Figure], str]:
    postgres = PostgresServer(work / "postgres", port=0, durable=False)
    redis_server = RedisServer(work / "valkey", port=0)
    storage = None
    running = None
    channel = None
    parked = ParkedCalls()
    try:
        database_url = postgres.start()
        redis_url = redis_server.start()
        versions = server_versions(database_url, redis_server)
        migrate(database_url)
        storage = build_storage(local_storage_settings(str(work / "objects"))).start()
        settings = JobsSettings(
            listen="127.0.0.1:0",
            metrics_port=0,
            database_url=database_url,
            redis_url=redis_url,
            storage_addr=storage.address,
            retention_hours=168,
            max_attempts=3,
            sweep_interval_seconds=3600,  # the bench runs the sweeps
            # A requeued job waits a random share of its retry backoff before it is due (by design, see
            # services/jobs/repository.py); without it the sweeper figure times the event, not the dice.
            retry_backoff_base_seconds=0.0,
            database_pool_size=10,
            max_workers=64,
        )
        app = build_jobs(settings, event_prefix=f"bench-{uuid.uuid4().hex}")
        app.spec.metrics_port = None
        running = app.start()
        channel = grpc.insecure_channel(running.address)
        bench = Bench(app, channel, database_url, parked)
        with parked.installed():
            bench.create()  # warm up the channel, the pool and the statement caches
            bench.complete(bench.lease())
            figures = [
                Figure(
                    "idle LeaseJob woken by a new job",
                    0.5,
                    "CreateJob call until the waiting LeaseJob returns the job",
                    measure(runs, "create -> lease", bench.lease_woken_by_create),
                ),
                Figure(
                    "sweeper requeue wakes a waiting worker",
                    1.0,
                    "sweep pass (requeue of an expired lease, retry backoff off) until the waiting LeaseJob has it",
                    measure(runs, "sweep -> lease", bench.lease_woken_by_sweeper),
                ),
                Figure(
                    "watch ends after DeleteJob",
                    1.0,
                    "DeleteJob call until the WatchJob stream has ended (CANCELLED or JOB_NOT_FOUND)",
                    measure(runs, "delete -> watch ends", bench.watch_ended_by_delete),
                ),
            ]
            with grpc.insecure_channel(storage.address) as storage_channel:
                put_object = put_object_timer(storage_channel)
                put_object()  # warm up the channel
                figures.append(
                    Figure(
                        "storage PutObject of 64 KiB",
                        0.025,
                        "one PutObject (header, one chunk, finish) until storage answers; every upload and every "
                        "stored result pays it (with the 50 ms wait for a late cancel it had before issue 8, >= 50 ms)",
                        measure(runs, "put object", put_object),
                    )
                )
            port = redis_server.port
            redis_server.stop()
            wait_until(lambda: not app.events.healthy, "the subscriber to notice Redis is down")
            figures.append(
                Figure(
                    "CreateJob with Redis down",
                    1.5,
                    "one CreateJob call whose event publish fails (Redis stopped; connections refused)",
                    measure(runs, "create, Redis down", bench.create_without_redis),
                )
            )
            redis_server = RedisServer(work / "valkey", port=port)
            redis_server.start()
            wait_until(lambda: app.events.healthy, "the subscription to come back")
            figures.append(
                Figure(
                    "idle LeaseJob woken after a Redis restart",
                    0.5,
                    "as the first figure, once the subscriber has reconnected to a restarted Redis",
                    measure(runs, "create -> lease after restart", bench.lease_woken_by_create),
                )
            )
        return figures, versions
    finally:
        if channel is not None:
            channel.close()
        if running is not None:
            running.stop(grace=0)
        if storage is not None:
            storage.stop(0)
        redis_server.stop()
        postgres.stop()


def write_markdown(path: Path, figures: list[Figure], meta: list[str]) -> None:
    lines = [
        "# Jobs event latency",
        "",
        *meta,
        "",
        "Produced by `python -m bench.latency`. The jobs tests check that these things happen (each waiting call's",
        "re-check is set to 120 s there, so only an event can wake it in time); this measures how fast. A figure",
        "PASSes when its p95 is under the target the tests used to assert; *over* counts single runs above it.",
        "",
        "| measurement | runs | median (ms) | p95 (ms) | max (ms) | target (ms) | over | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for figure in figures:
        lines.append(
            f"| {figure.name} | {len(figure.samples)} | {figure.quantile(0.5) * 1000:.1f} "
            f"| {figure.quantile(0.95) * 1000:.1f} | {max(figure.samples) * 1000:.1f} | {figure.target * 1000:.0f} "
            f"| {figure.over} | {figure.verdict} |"
        )
    lines += ["", "What each run times:", ""]
    lines += [f"- {figure.name}: {figure.meaning}." for figure in figures]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50, help="runs per measurement (default 50)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "latency_results.md")
    ap.add_argument("--note", default="", help="a line about the machine's load, added to the results")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # While Redis is stopped every failed publish logs a warning with its traceback, by design.
    logging.getLogger("services.jobs.events").setLevel(logging.ERROR)
    load_before = load()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pdfsmaller-latency-") as work:
        figures, versions = run(args.runs, Path(work))
    meta = [
        f"Machine: {machine()}. {versions}; jobs app, storage and client in one process.",
        f"Load average (1/5/15 min) before {load_before}, after {load()}; {time.monotonic() - started:.0f} s in all.",
    ]
    if args.note:
        meta.append(args.note)
    write_markdown(args.out, figures, meta)
    for figure in figures:
        print(
            f"{figure.name:42s} median {figure.quantile(0.5) * 1000:7.1f} ms  p95 {figure.quantile(0.95) * 1000:7.1f}"
            f" ms  max {max(figure.samples) * 1000:7.1f} ms  target {figure.target * 1000:5.0f} ms"
            f"  over {figure.over:3d}  {figure.verdict}"
        )
    return 0 if all(figure.verdict == "PASS" for figure in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
