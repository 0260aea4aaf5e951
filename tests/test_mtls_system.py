"""The services wired together with mutual TLS on every internal hop, as production enables it.

Storage, scanner, jobs and the gateway run in this process from their real wiring,
configured only through the TLS_* variables (the services pass no TLS argument:
libs.grpc_server and libs.grpc_client read them). An upload over gRPC with a client
certificate goes gateway -> storage, gateway -> scanner -> storage and gateway -> jobs;
a plaintext client is refused on every port. Envoy and the compressor are not part of
it (Envoy to a TLS gateway is tests/test_envoy_mtls.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
import trustme
from google.api import httpbody_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.gateway.v1 import gateway_service_pb2_grpc as public_grpc

from libs.grpc_client import open_channel
from libs.tls import TlsConfig
from services.gateway.app import build as build_gateway
from services.gateway.settings import GatewaySettings
from services.jobs.app import build as build_jobs
from services.jobs.settings import JobsSettings
from services.scanner.app import build as build_scanner
from services.scanner.settings import ScannerSettings
from services.storage.app import build as build_storage
from services.storage.settings import StorageSettings

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data"
GATEWAY_HEALTH = "pdfsmaller.gateway.v1.GatewayService"


def _write(folder: Path, ca: trustme.CA, *names: str) -> TlsConfig:
    folder.mkdir(parents=True, exist_ok=True)
    issued = ca.issue_cert(*names)
    (folder / "tls.crt").write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    (folder / "tls.key").write_bytes(issued.private_key_pem.bytes())
    (folder / "ca.crt").write_bytes(ca.cert_pem.bytes())
    return TlsConfig(folder / "tls.crt", folder / "tls.key", folder / "ca.crt")


def _local(prefix: str) -> dict[str, str]:
    return {f"{prefix}_LISTEN": "127.0.0.1:0", f"{prefix}_METRICS_PORT": "0"}


@pytest.fixture
def services_in_mtls(
    tmp_path: Path, fresh_database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dict[str, str], TlsConfig]]:
    """Every service with the same certificate (as one CA-signed identity per pod would be); yields
    their addresses and a client certificate from the same CA."""
    ca = trustme.CA()
    service = _write(tmp_path / "service", ca, "127.0.0.1")
    client = _write(tmp_path / "client", ca, "test-client")
    monkeypatch.setenv("TLS_CERT_FILE", str(service.cert_file))
    monkeypatch.setenv("TLS_KEY_FILE", str(service.key_file))
    monkeypatch.setenv("TLS_CA_FILE", str(service.ca_file))
    addresses: dict[str, str] = {}
    with ExitStack() as running:
        storage = build_storage(
            StorageSettings.from_env({**_local("STORAGE"), "STORAGE_DIR": str(tmp_path / "objects")})
        ).start()
        running.callback(storage.stop, 0)
        addresses["storage"] = storage.address
        scanner = build_scanner(
            ScannerSettings.from_env({**_local("SCANNER"), "STORAGE_ADDR": storage.address})
        ).start()
        running.callback(scanner.stop, 0)
        addresses["scanner"] = scanner.address
        jobs = build_jobs(
            JobsSettings.from_env(
                {
                    **_local("JOBS"),
                    "DATABASE_URL": fresh_database_url,
                    "REDIS_URL": redis_url,
                    "STORAGE_ADDR": storage.address,
                }
            )
        ).start()
        running.callback(jobs.stop, 0)
        addresses["jobs"] = jobs.address
        gateway = build_gateway(
            GatewaySettings.from_env(
                {
                    **_local("GATEWAY"),
                    "JOBS_ADDR": addresses["jobs"],
                    "STORAGE_ADDR": storage.address,
                    "SCANNER_ADDR": scanner.address,
                    "REDIS_URL": redis_url,
                }
            )
        ).start()
        running.callback(gateway.stop, 0)
        addresses["gateway"] = gateway.address
        yield addresses, client


def _upload(source: bytes) -> Iterator[public.CreateJobRequest]:
    yield public.CreateJobRequest(filename="form.pdf", level="lossless")
    for start in range(0, len(source), 10_000):
        yield public.CreateJobRequest(file=httpbody_pb2.HttpBody(data=source[start : start + 10_000]))


def test_upload_crosses_every_internal_hop_over_mtls(services_in_mtls: tuple[dict[str, str], TlsConfig]) -> None:
    addresses, client = services_in_mtls
    source = (DATA / "pypdf__libreoffice-form.pdf").read_bytes()
    with open_channel(addresses["gateway"], tls=client) as channel:
        # Ready means the gateway reached jobs, storage and scanner (over mTLS) with its health checks.
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=GATEWAY_HEALTH)
        assert health.Check(request, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        stub = public_grpc.GatewayServiceStub(channel)
        job = stub.CreateJob(_upload(source), timeout=60)  # stored, scanned, queued
        assert job.state == public.JOB_STATE_QUEUED
        assert stub.GetJob(public.GetJobRequest(id=job.id), timeout=10).id == job.id
    for name, address in addresses.items():
        with grpc.insecure_channel(address) as plaintext, pytest.raises(grpc.RpcError) as caught:
            health_pb2_grpc.HealthStub(plaintext).Check(health_pb2.HealthCheckRequest(), timeout=3)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, name  # type: ignore[attr-defined]
