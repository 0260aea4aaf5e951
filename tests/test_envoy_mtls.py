"""Mutual TLS from the Envoy edge to the gateway (ENVOY_GATEWAY_TLS_*), against real servers.

The upstream is a gRPC server with only the gateway's GetHealth, served by
libs.grpc_server with the services' own TLS (libs.tls: a client certificate
signed by the CA is required), under the name `gateway`. In front of it, Envoy
from deploy/envoy/envoy.yaml (tests/plugins/envoy.py) with the gateway cluster's
UpstreamTlsContext. REST GET /v1/health is answered through it only when Envoy
presents a certificate of the gateway's CA and the gateway's certificate is of
the trusted CA and for the server name; otherwise the upstream handshake fails
and Envoy answers 503. The client certificate is re-read when its folder gets a
new entry, as a Kubernetes Secret volume rotates it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme
from pdfsmaller.gateway.v1 import gateway_service_pb2 as pb
from pdfsmaller.gateway.v1 import gateway_service_pb2_grpc as pb_grpc

from deploy.envoy.render import EnvoySettings, GatewayTls, render_config, sds_files
from libs.grpc_server import RunningServer, ServerSpec
from libs.settings import SettingsError
from libs.tls import TlsConfig
from tests.e2e_client import Reply, http_call
from tests.plugins.envoy import EnvoyServerFactory

pytestmark = pytest.mark.integration

SERVICE = "pdfsmaller.gateway.v1.GatewayService"
HEALTH_PATH = "/v1/health"
ROTATION_TIMEOUT_SECONDS = 15.0
# Envoy's count of TLS contexts rebuilt from SDS for the gateway cluster (the initial load included).
SDS_UPDATES = "cluster.gateway.client_ssl_socket_factory.ssl_context_update_by_sds"


class HealthOnlyGateway(pb_grpc.GatewayServiceServicer):
    """The gateway's GetHealth; every other method is the generated UNIMPLEMENTED."""

    def GetHealth(self, request: pb.GetHealthRequest, context: grpc.ServicerContext) -> pb.Health:
        return pb.Health(status=pb.SERVING_STATUS_SERVING)


def _write_identity(folder: Path, ca: trustme.CA, name: str, trusted: trustme.CA) -> None:
    """tls.crt/tls.key issued by `ca` for `name`, and `trusted` as ca.crt (a Secret's three keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    issued = ca.issue_cert(name)
    (folder / "tls.crt").write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    (folder / "tls.key").write_bytes(issued.private_key_pem.bytes())
    (folder / "ca.crt").write_bytes(trusted.cert_pem.bytes())


class SecretVolume:
    """A folder laid out as the kubelet mounts a Secret: tls.crt -> ..data/tls.crt, and a rotation
    renames a new `..data` link into place (the one move Envoy's watched_directory sees)."""

    FILES = ("tls.crt", "tls.key", "ca.crt")

    def __init__(self, root: Path) -> None:
        self.root = root
        self._versions = 0

    def publish(self, ca: trustme.CA, name: str, trusted: trustme.CA) -> None:
        self._versions += 1
        version = f"..version-{self._versions}"
        _write_identity(self.root / version, ca, name, trusted)
        (self.root / "..data_tmp").symlink_to(version)
        os.replace(self.root / "..data_tmp", self.root / "..data")
        for file in self.FILES:
            if not (self.root / file).is_symlink():
                (self.root / file).symlink_to(Path("..data") / file)

    def gateway_tls(self) -> GatewayTls:
        return GatewayTls(self.root / "tls.crt", self.root / "tls.key", self.root / "ca.crt")


def _start_gateway(folder: Path, ca: trustme.CA, name: str) -> RunningServer:
    _write_identity(folder, ca, name, trusted=ca)
    spec = ServerSpec(
        name="gateway",
        listen="127.0.0.1:0",
        register=lambda server: pb_grpc.add_GatewayServiceServicer_to_server(HealthOnlyGateway(), server),
        service_names=[SERVICE],
        tls=TlsConfig(folder / "tls.crt", folder / "tls.key", folder / "ca.crt"),
    )
    return RunningServer(spec).start()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[str]:
    """A TLS gateway whose certificate is for `gateway` (the default server name), signed by `ca`."""
    server = _start_gateway(tmp_path_factory.mktemp("gateway-tls"), ca, "gateway")
    try:
        yield server.address
    finally:
        server.stop(0)


def _health(envoy_url: str) -> Reply:
    return http_call(envoy_url.removeprefix("http://"), "GET", HEALTH_PATH, timeout=10)


def _wait_for_status(envoy_url: str, status: int, timeout: float) -> Reply:
    deadline = time.monotonic() + timeout
    reply = _health(envoy_url)
    while reply.status != status and time.monotonic() < deadline:
        time.sleep(0.2)
        reply = _health(envoy_url)
    return reply


def _assert_upstream_refused(reply: Reply) -> None:
    assert reply.status == 503, (reply.status, reply.body[:300])
    assert reply.reason() == "UPSTREAM_UNAVAILABLE"


def test_rest_health_through_envoy_over_mtls(
    tmp_path: Path, ca: trustme.CA, gateway: str, envoy_server_factory: EnvoyServerFactory
) -> None:
    volume = SecretVolume(tmp_path / "envoy-tls")
    volume.publish(ca, "envoy", trusted=ca)
    envoy = envoy_server_factory(gateway, gateway_tls=volume.gateway_tls())
    reply = _health(envoy.url)
    assert reply.status == 200, reply.body[:300]
    assert reply.json()["status"] == "SERVING_STATUS_SERVING"
    assert envoy.stats().get("cluster.gateway.ssl.handshake", 0) >= 1


def test_plaintext_envoy_cannot_reach_a_tls_gateway(gateway: str, envoy_server_factory: EnvoyServerFactory) -> None:
    _assert_upstream_refused(_health(envoy_server_factory(gateway).url))


def test_client_certificate_of_another_ca_is_refused_until_rotated(
    tmp_path: Path, ca: trustme.CA, gateway: str, envoy_server_factory: EnvoyServerFactory
) -> None:
    """The gateway refuses Envoy's certificate from another CA (503); after a Secret-style
    rotation to one of the gateway's CA, Envoy re-reads the files and gets through, no restart."""
    volume = SecretVolume(tmp_path / "envoy-tls")
    volume.publish(trustme.CA(), "envoy", trusted=ca)
    envoy = envoy_server_factory(gateway, gateway_tls=volume.gateway_tls())
    _assert_upstream_refused(_health(envoy.url))
    updates = envoy.stats()[SDS_UPDATES]
    volume.publish(ca, "envoy", trusted=ca)
    reply = _wait_for_status(envoy.url, 200, ROTATION_TIMEOUT_SECONDS)
    assert reply.status == 200, reply.body[:300]
    assert envoy.stats()[SDS_UPDATES] > updates


def test_gateway_certificate_for_another_name_is_refused(
    tmp_path: Path, ca: trustme.CA, envoy_server_factory: EnvoyServerFactory
) -> None:
    """Signed by the trusted CA but not for `gateway`: Envoy refuses the upstream (no name check
    would let any workload of the CA pose as the gateway)."""
    impostor = _start_gateway(tmp_path / "impostor", ca, "jobs")
    try:
        volume = SecretVolume(tmp_path / "envoy-tls")
        volume.publish(ca, "envoy", trusted=ca)
        envoy = envoy_server_factory(impostor.address, gateway_tls=volume.gateway_tls())
        _assert_upstream_refused(_health(envoy.url))
    finally:
        impostor.stop(0)


def test_plaintext_stays_the_default() -> None:
    settings = EnvoySettings.from_env({})
    config = render_config(settings)
    gateway = next(c for c in config["static_resources"]["clusters"] if c["name"] == "gateway")
    assert settings.gateway_tls is None
    assert "transport_socket" not in gateway
    assert "node" not in config
    assert sds_files(settings) == {}


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"ENVOY_GATEWAY_TLS_CERT_FILE": "/tls/tls.crt"}, "missing: ENVOY_GATEWAY_TLS_KEY_FILE, ENVOY_GATEWAY_TLS_CA"),
        (
            {
                "ENVOY_GATEWAY_TLS_CERT_FILE": "tls.crt",
                "ENVOY_GATEWAY_TLS_KEY_FILE": "/tls/tls.key",
                "ENVOY_GATEWAY_TLS_CA_FILE": "/tls/ca.crt",
            },
            "ENVOY_GATEWAY_TLS_CERT_FILE='tls.crt' is not an absolute path",
        ),
        ({"ENVOY_GATEWAY_TLS_SERVER_NAME": "gateway"}, "ENVOY_GATEWAY_TLS_SERVER_NAME is set but gateway TLS is not"),
    ],
)
def test_gateway_tls_problems_are_reported_with_the_others(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError) as raised:
        EnvoySettings.from_env({**environ, "ENVOY_MAX_CONNECTIONS": "0"})
    assert problem in str(raised.value)
    assert "ENVOY_MAX_CONNECTIONS=0 is below the minimum 1" in str(raised.value)
