"""Security events through the real gateway (`build(settings)`), in-process on real jobs, storage and
scanner (real PostgreSQL, Valkey and, for malware, clamd): each refusal a client meets leaves one
`security` JSON line with the client address Envoy forwarded and the call's trace id, and counts in
/metrics."""

from __future__ import annotations

import io
import json
import secrets
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.gateway.v1 import gateway_service_pb2_grpc as public_grpc

from libs.errors import reason_of
from libs.service import RunningService
from libs.tests.scrape import scrape
from services.gateway.app import build as build_gateway
from services.gateway.settings import GatewaySettings
from services.gateway.tests.test_app import upload
from services.jobs.app import build as build_jobs
from services.jobs.settings import JobsSettings
from services.scanner.app import build as build_scanner
from services.scanner.settings import ScannerSettings
from services.scanner.tests import pdfs
from tests.plugins.services import StartService, loopback_env

pytestmark = pytest.mark.integration

SOURCE = Path(__file__).resolve().parents[3] / "tests" / "data" / "pypdf__jpeg.pdf"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
# What Envoy forwards: the client's own x-forwarded-for claim with the address Envoy saw appended.
FROM_ENVOY = (
    ("x-forwarded-for", "203.0.113.5, 198.51.100.20"),
    ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"),
)
StartGateway = Callable[..., RunningService]


@pytest.fixture
def start_gateway(
    fresh_database_url: str, redis_url: str, storage_server: RunningService, service_starter: StartService
) -> StartGateway:
    """Start jobs, a scanner (its settings from `scanner_env`) and the gateway (`gateway_env` on top)."""

    def start(scanner_env: dict[str, str], gateway_env: dict[str, str]) -> RunningService:
        storage = {"STORAGE_ADDR": storage_server.address}
        jobs_env = {**loopback_env("jobs"), **storage, "DATABASE_URL": fresh_database_url, "REDIS_URL": redis_url}
        jobs = service_starter(build_jobs, JobsSettings.from_env(jobs_env), event_prefix=f"t-{uuid.uuid4().hex[:8]}")
        scanner = service_starter(
            build_scanner, ScannerSettings.from_env({**loopback_env("scanner"), **storage, **scanner_env})
        )
        env = {**loopback_env("gateway"), **storage, "JOBS_ADDR": jobs.address, "SCANNER_ADDR": scanner.address}
        settings = GatewaySettings.from_env({**env, "REDIS_URL": redis_url, **gateway_env})
        return service_starter(build_gateway, settings, metrics=True)

    return start


def _tenant_and_key() -> tuple[str, str]:
    # Fresh per test: rate limits and quotas in the shared Valkey count per key and tenant.
    return f"t{uuid.uuid4().hex[:10]}", secrets.token_hex(16)


def _refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert isinstance(error, grpc.Call)
    return error.code(), reason_of(error)


def _security_counts(gateway: RunningService) -> dict[tuple[str, str], float]:
    samples = scrape(gateway.metrics_port)["pdfsmaller_gateway_security_events_total"]
    return {(labels["event"], labels["reason"]): value for labels, value in ((dict(k), v) for k, v in samples.items())}


def test_refusals_are_security_events_with_the_forwarded_client(
    start_gateway: StartGateway, security_log: io.StringIO
) -> None:
    tenant, key = _tenant_and_key()
    gateway = start_gateway(
        {},
        {
            "API_KEYS": f"{tenant}:{key}",
            "RATE_LIMIT_READ": "2/hour",
            "RATE_LIMIT_READ_BURST": "0",
            "QUOTA_FILES_PER_DAY": "1",
            "REFUSE_ACTIVE_CONTENT": "launch",
        },
    )
    signed = (("x-api-key", key), *FROM_ENVOY)
    wrong = (("x-api-key", "not-" + key), *FROM_ENVOY)
    with grpc.insecure_channel(gateway.address) as channel:
        stub = public_grpc.GatewayServiceStub(channel)
        get_job = public.GetJobRequest(id=str(uuid.uuid4()))
        assert _refusal(lambda: stub.GetJob(get_job, metadata=wrong, timeout=10)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "API_KEY_INVALID",
        )
        launch = _refusal(lambda: stub.CreateJob(upload(pdfs.with_launch_action()), metadata=signed, timeout=60))
        assert launch == (grpc.StatusCode.INVALID_ARGUMENT, "ACTIVE_CONTENT_REFUSED")
        stub.CreateJob(upload(SOURCE.read_bytes()), metadata=signed, timeout=60)  # today's one file
        again = _refusal(lambda: stub.CreateJob(upload(SOURCE.read_bytes()), metadata=signed, timeout=60))
        assert again == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
        for _ in range(2):
            stub.GetQuota(public.GetQuotaRequest(), metadata=signed, timeout=10)
        polled = _refusal(lambda: stub.GetQuota(public.GetQuotaRequest(), metadata=signed, timeout=10))
        assert polled == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")

    lines = [json.loads(line) for line in security_log.getvalue().splitlines()]
    assert [(line["event"], line["reason"]) for line in lines] == [
        ("authentication_failed", "invalid_key"),
        ("active_content_refused", "launch"),
        ("quota_exceeded", "files"),
        ("rate_limit_exceeded", "reads"),
    ]
    assert [line["tenant"] for line in lines] == [None, tenant, tenant, tenant]
    for line in lines:
        assert (line["logger"], line["service"]) == ("security", "gateway")
        assert line["client_address"] == "198.51.100.20"
        assert line["trace_id"] == TRACE_ID
    assert key not in security_log.getvalue()
    counts = _security_counts(gateway)
    for line in lines:
        assert counts[(line["event"], line["reason"])] == 1
    assert counts[("malware_detected", "infected")] == 0


def test_through_envoy_the_address_is_the_one_envoy_saw_and_the_request_id_its_own(
    start_gateway: StartGateway, security_log: io.StringIO, envoy_factory: Callable[..., str]
) -> None:
    tenant, key = _tenant_and_key()
    gateway = start_gateway({}, {"API_KEYS": f"{tenant}:{key}"})
    url = envoy_factory(gateway.address)
    # The client claims another address. Envoy (no internal_address_config: every client is external)
    # sets x-envoy-external-address to the peer it saw, 127.0.0.1, and appends to x-forwarded-for
    # the host's own address, as it does for a loopback peer: only the first is the client.
    headers = {"x-api-key": "not-" + key, "x-forwarded-for": "6.6.6.6"}
    request = urllib.request.Request(f"{url}/v1/jobs/{uuid.uuid4()}", headers=headers)  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
    assert refused.value.code == 401
    (line,) = [json.loads(line) for line in security_log.getvalue().splitlines()]
    assert (line["event"], line["reason"], line["tenant"]) == ("authentication_failed", "invalid_key", None)
    assert line["client_address"] == "127.0.0.1"
    assert line["request_id"] == refused.value.headers["x-request-id"]  # the access log's request_id
    assert key not in security_log.getvalue()


def test_malware_is_a_security_event_with_its_signature(
    start_gateway: StartGateway, security_log: io.StringIO, clamd_addr: str
) -> None:
    tenant, key = _tenant_and_key()
    gateway = start_gateway({"CLAMD_ADDR": clamd_addr}, {"API_KEYS": f"{tenant}:{key}"})
    with grpc.insecure_channel(gateway.address) as channel:
        stub = public_grpc.GatewayServiceStub(channel)
        refused = _refusal(
            lambda: stub.CreateJob(upload(pdfs.with_eicar_attachment()), metadata=(("x-api-key", key),), timeout=60)
        )
    assert refused == (grpc.StatusCode.INVALID_ARGUMENT, "MALWARE_DETECTED")
    (line,) = [json.loads(line) for line in security_log.getvalue().splitlines()]
    assert (line["event"], line["reason"], line["tenant"]) == ("malware_detected", "infected", tenant)
    assert "eicar" in line["signature"].lower()
    assert line["client_address"] == "127.0.0.1"  # straight to the gateway: the gRPC peer
    assert key not in security_log.getvalue()
    assert _security_counts(gateway)[("malware_detected", "infected")] == 1
