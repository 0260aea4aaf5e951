"""Hostile traffic at the Envoy edge, with figures (printed at the end of the run).

- Long URLs and large headers: 414 / 431 with the JSON error, decided at Envoy, over a sweep of
  sizes on both sides of each limit and through the 8-16 KiB band where the gateway's gRPC
  metadata limit used to answer 429 at random. Each size is sent several times: never a 429.
- Floods: one client (an address, or an API key used from several addresses) sending as fast as
  it can is refused with 429 while a quiet client's requests all pass.

Envoy runs with its default settings in front of tests.test_envoy_edge's FakeGateway (a
RunningServer, so the gRPC server options, metadata limit included, are the real ones).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pdfsmaller.gateway.v1 import gateway_service_pb2_grpc as pb_grpc

from deploy.envoy.render import EnvoySettings
from libs.grpc_server import RunningServer, ServerSpec
from services.gateway.auth import API_KEY_HEADER
from tests.plugins.figures import Figures
from tests.test_envoy_edge import SERVICE, FakeGateway, call, call_from, path_of

pytestmark = pytest.mark.integration

DEFAULTS = EnvoySettings()
REPEATS = 5  # per size: the old failure was random
PATH_SIZES = [1024, 4096, 8191, 8192, 8193, 9 * 1024, 10 * 1024, 12 * 1024, 14 * 1024, 16 * 1024, 20 * 1024]
HEADER_SIZES = [1024, 4096, 8192, 10 * 1024, 12 * 1024, 14 * 1024, 15 * 1024, 16 * 1024 + 1, 20 * 1024, 40 * 1024]
# Envoy's own headers (x-request-id, x-forwarded-*...) count towards the header limit too.
OWN_HEADERS_ALLOWANCE = 1024
FLOOD_SECONDS = 3.0
FLOOD_DEADLINE_SECONDS = 15.0
FLOOD_THREADS = 4
QUIET_INTERVAL_SECONDS = 0.25


@pytest.fixture(scope="module")
def edge(envoy_factory: Any) -> Iterator[str]:
    """host:port of an Envoy with the default limits in front of the fake gateway."""
    servicer = FakeGateway()
    spec = ServerSpec(
        name="gateway",
        listen="127.0.0.1:0",
        register=lambda server: pb_grpc.add_GatewayServiceServicer_to_server(servicer, server),
        service_names=[SERVICE],
    )
    gateway = RunningServer(spec).start()
    try:
        yield envoy_factory(gateway.address).removeprefix("http://")
    finally:
        gateway.stop(0)


def _expected_path_status(size: int) -> int:
    return 200 if size <= DEFAULTS.max_path_bytes else 414


def _expected_header_status(size: int) -> int:
    return 200 if size + OWN_HEADERS_ALLOWANCE <= DEFAULTS.max_header_bytes else 431


def test_long_urls_and_headers_get_414_and_431_never_429(edge: str, figures: Figures) -> None:
    # A fresh address bucket holds the burst: the sweep cannot meet the edge rate limit.
    assert REPEATS * (len(PATH_SIZES) + len(HEADER_SIZES)) <= DEFAULTS.rate_limit_burst
    rows: dict[str, list[str]] = {"path+query": [], "headers": []}
    failures: list[str] = []
    for kind, sizes, send, expected in (
        ("path+query", PATH_SIZES, lambda size: call(edge, "GET", path_of(size)), _expected_path_status),
        (
            "headers",
            HEADER_SIZES,
            lambda size: call(edge, "GET", "/v1/jobs/h1", headers={"x-filler": "f" * size}),
            _expected_header_status,
        ),
    ):
        for size in sizes:
            replies = [send(size) for _ in range(REPEATS)]
            statuses = Counter(reply.status for reply in replies)
            rows[kind].append(f"{size} B: {'/'.join(map(str, sorted(statuses)))}")
            if set(statuses) != {expected(size)}:
                failures.append(f"{kind} {size}: {dict(statuses)}, expected {expected(size)}")
            refusers = {reply.error_info().get("domain") for reply in replies if reply.status != 200}
            if refusers - {"envoy"}:
                failures.append(f"{kind} {size}: refused by {refusers}, not only the edge")
    figures.add(f"edge path limit {DEFAULTS.max_path_bytes} B", ", ".join(rows["path+query"]))
    figures.add(f"edge header limit {DEFAULTS.max_header_bytes} B", ", ".join(rows["headers"]))
    assert not failures, failures


def _flood(send: Callable[[int], int], seconds: float) -> tuple[Counter[int], float]:
    """Statuses of FLOOD_THREADS loops sending as fast as they can: for `seconds`, then on until
    a 429 was seen (at most FLOOD_DEADLINE_SECONDS); and how long it took."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    started = time.monotonic()

    def loop(thread: int) -> None:
        while True:
            elapsed = time.monotonic() - started
            with lock:
                done = elapsed > FLOOD_DEADLINE_SECONDS or (elapsed > seconds and statuses[429] > 0)
            if done:
                return
            status = send(thread)
            with lock:
                statuses[status] += 1

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(FLOOD_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=FLOOD_DEADLINE_SECONDS + 30)
    return statuses, time.monotonic() - started


def _most_a_bucket_allows(burst: int, per_second: int, seconds: float) -> int:
    """A full bucket plus one refill per started second: a bound slowness cannot break."""
    return burst + per_second * (math.ceil(seconds) + 1)


def _quiet_while(flooding: threading.Event, send: Callable[[], int]) -> Counter[int]:
    """A well-behaved client: one request every QUIET_INTERVAL_SECONDS while the flood runs.
    At most the bucket's burst of requests in all, so it passes however the machine schedules it."""
    statuses: Counter[int] = Counter()
    for _ in range(min(DEFAULTS.rate_limit_burst, DEFAULTS.key_rate_limit_burst)):
        if not flooding.is_set():
            break
        statuses[send()] += 1
        time.sleep(QUIET_INTERVAL_SECONDS)
    return statuses


def _flood_against_quiet(
    flood: Callable[[int], int], quiet: Callable[[], int]
) -> tuple[Counter[int], float, Counter[int]]:
    """(flood statuses, flood seconds, quiet statuses)."""
    flooding = threading.Event()
    flooding.set()
    result: dict[str, tuple[Counter[int], float]] = {}

    def run_flood() -> None:
        try:
            result["flood"] = _flood(flood, FLOOD_SECONDS)
        finally:
            flooding.clear()

    flooder = threading.Thread(target=run_flood)
    flooder.start()
    try:
        quiet_statuses = _quiet_while(flooding, quiet)
    finally:
        flooder.join(timeout=FLOOD_DEADLINE_SECONDS + 60)
    flood_statuses, seconds = result.get("flood", (Counter(), 0.0))
    return flood_statuses, seconds, quiet_statuses


def test_a_flooding_address_does_not_starve_a_quiet_one(edge: str, figures: Figures) -> None:
    flood, seconds, quiet = _flood_against_quiet(
        lambda _: call_from(edge, "127.0.0.2", "/v1/jobs/f1"), lambda: call_from(edge, "127.0.0.3", "/v1/jobs/q1")
    )
    figures.add(
        f"edge flood per address ({DEFAULTS.rate_limit_per_second}/s, burst {DEFAULTS.rate_limit_burst})",
        f"flooding address 200 x {flood[200]}, 429 x {flood[429]}; "
        f"quiet address 200 x {quiet[200]}, 429 x {quiet[429]}",
    )
    assert flood[429] > 0, flood
    assert set(flood) <= {200, 429}, flood
    assert flood[200] <= _most_a_bucket_allows(DEFAULTS.rate_limit_burst, DEFAULTS.rate_limit_per_second, seconds)
    assert quiet[200] > 0
    assert set(quiet) == {200}, quiet


def test_a_flooding_api_key_does_not_starve_a_quiet_one(edge: str, figures: Figures) -> None:
    """The flooding key is used from FLOOD_THREADS addresses, so only its key bucket can stop it."""
    flooding_key = {API_KEY_HEADER: "flooding-key-0123456789"}
    quiet_key = {API_KEY_HEADER: "quiet-key-0123456789ab"}
    flood, seconds, quiet = _flood_against_quiet(
        lambda thread: call_from(edge, f"127.0.1.{thread + 1}", "/v1/jobs/f2", flooding_key),
        lambda: call_from(edge, "127.0.2.1", "/v1/jobs/q2", quiet_key),
    )
    figures.add(
        f"edge flood per API key ({DEFAULTS.key_rate_limit_per_second}/s, burst {DEFAULTS.key_rate_limit_burst})",
        f"flooding key from {FLOOD_THREADS} addresses 200 x {flood[200]}, 429 x {flood[429]}; "
        f"quiet key 200 x {quiet[200]}, 429 x {quiet[429]}",
    )
    assert flood[429] > 0, flood
    # The addresses' buckets alone would let FLOOD_THREADS times this through.
    assert flood[200] <= _most_a_bucket_allows(
        DEFAULTS.key_rate_limit_burst, DEFAULTS.key_rate_limit_per_second, seconds
    )
    assert quiet[200] > 0
    assert set(quiet) == {200}, quiet
