"""Health as load balancers read it: the real gateway behind a real Envoy (deploy/envoy/envoy.yaml).

- `GET /v1/health` is 503 when users cannot work (a required dependency down) and 200 otherwise,
  with the same JSON report either way; gRPC callers get the report with status OK.
- Redis down is DEGRADED (200): uploads, jobs and downloads keep working.
- `GET /v1/health:live` is 200 while the gateway serves, whatever its dependencies do.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pdfsmaller.gateway.v1 import gateway_service_pb2 as pb
from pdfsmaller.gateway.v1 import gateway_service_pb2_grpc as pb_grpc

from devtools.stack.stack import Stack
from services.gateway.app import build as build_gateway
from services.gateway.settings import GatewaySettings
from tests.e2e_client import Reply, RestClient, http_call
from tests.plugins.services import in_process, loopback_env
from tests.plugins.stack import gateway_beside

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PDF = (ROOT / "tests/data/pypdf__libreoffice-form.pdf").read_bytes()


@pytest.fixture(scope="module")
def lonely_edge(envoy_factory: Callable[..., str]) -> Iterator[str]:
    """host:port of an Envoy in front of a real gateway none of whose dependencies listen (their
    address is bound but never listening, so every connection is refused at once)."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{holder.getsockname()[1]}"
        env = {"JOBS_ADDR": closed, "STORAGE_ADDR": closed, "SCANNER_ADDR": closed, "REDIS_URL": f"redis://{closed}"}
        settings = GatewaySettings.from_env({**loopback_env("gateway"), **env})
        with in_process(build_gateway, settings) as gateway:
            yield envoy_factory(gateway.address).removeprefix("http://")
    finally:
        holder.close()


def _dependencies(reply: Reply) -> dict[str, dict[str, Any]]:
    return {dependency["name"]: dependency for dependency in reply.json()["dependencies"]}


def _curl_fail_exit(url: str) -> int:
    """`curl -f`'s exit code: 0 for a 2xx, 22 for an HTTP error status."""
    command = ["curl", "-fsS", "-o", "/dev/null", "--max-time", "10", url]
    return subprocess.run(command, capture_output=True, timeout=20, check=False).returncode


def test_required_dependencies_down_is_503_with_the_report(lonely_edge: str) -> None:
    reply = http_call(lonely_edge, "GET", "/v1/health", timeout=10)
    assert reply.status == 503, (reply.status, reply.body)
    assert reply.json()["status"] == "SERVING_STATUS_NOT_SERVING"
    assert reply.headers["x-health-status"] == "not-serving"
    dependencies = _dependencies(reply)
    for name in ("jobs", "storage", "scanner", "malware-scanning"):
        assert dependencies[name]["status"] == "SERVING_STATUS_NOT_SERVING", dependencies[name]
        assert dependencies[name]["required"] is True, dependencies[name]
    assert dependencies["redis"]["required"] is False
    assert _curl_fail_exit(f"http://{lonely_edge}/v1/health") == 22


def test_grpc_callers_get_the_report_with_status_ok(lonely_edge: str) -> None:
    """The 503 is for REST only: through the same Envoy a gRPC client gets OK and reads `status`."""
    with grpc.insecure_channel(lonely_edge) as channel:
        health = pb_grpc.GatewayServiceStub(channel).GetHealth(pb.GetHealthRequest(), timeout=10)
    assert health.status == pb.SERVING_STATUS_NOT_SERVING
    assert {dependency.name for dependency in health.dependencies} >= {"jobs", "storage", "redis"}


def test_liveness_is_200_without_any_dependency(lonely_edge: str) -> None:
    reply = http_call(lonely_edge, "GET", "/v1/health:live", timeout=10)
    assert reply.status == 200, (reply.status, reply.body)
    assert reply.json() == {"status": "SERVING_STATUS_SERVING"}
    assert _curl_fail_exit(f"http://{lonely_edge}/v1/health:live") == 0
    with grpc.insecure_channel(lonely_edge) as channel:
        liveness = pb_grpc.GatewayServiceStub(channel).GetLiveness(pb.GetLivenessRequest(), timeout=10)
    assert liveness.status == pb.SERVING_STATUS_SERVING


def test_redis_down_is_degraded_200_and_users_keep_working(
    stack: Stack, envoy_factory: Callable[..., str], closed_address: str
) -> None:
    with gateway_beside(stack, REDIS_URL=f"redis://{closed_address}") as gateway:
        url = envoy_factory(gateway.address)
        edge = url.removeprefix("http://")
        health = http_call(edge, "GET", "/v1/health", timeout=10)
        assert health.status == 200, (health.status, health.body)
        assert health.json()["status"] == "SERVING_STATUS_DEGRADED"
        assert health.headers["x-health-status"] == "degraded"
        redis = _dependencies(health)["redis"]
        assert (redis["status"], redis["required"]) == ("SERVING_STATUS_NOT_SERVING", False)
        assert _dependencies(health)["jobs"] == {
            "name": "jobs",
            "status": "SERVING_STATUS_SERVING",
            "detail": "ready",
            "required": True,
        }
        assert _curl_fail_exit(f"{url}/v1/health") == 0
        # What DEGRADED promises: upload, follow and download still work.
        client = RestClient(url)
        job = client.create(PDF, filename="form.pdf")
        assert client.wait(job["id"])["state"] == "JOB_STATE_SUCCEEDED"
        assert client.result(job["id"]).startswith(b"%PDF-")
