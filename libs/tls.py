"""Optional mutual TLS between services, from certificate files that may be rotated.

The same three variables on every service, as cert-manager's csi-driver, a
Secret volume or a mesh mounts them: `TLS_CERT_FILE` (this service's chain, PEM),
`TLS_KEY_FILE` (its private key) and `TLS_CA_FILE` (the CA that signs every
service's certificate). None set: plaintext (the `make run` default). All set:
servers require a client certificate signed by the CA and clients present theirs
and verify the server's. `TLS_PLAINTEXT_HEALTH_PORT` adds a plaintext port that
serves only grpc.health.v1, for kubelet gRPC probes (they cannot present a
certificate).

Rotation: `PemWatcher.changed()` re-reads the files when their stat changes
(a Secret volume swaps a symlink, so the resolved file's inode changes); the
server asks on every handshake, clients on new calls (see libs.grpc_client).
A half-written rotation (key not matching the certificate) keeps the old pair.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

if TYPE_CHECKING:
    from libs.settings import EnvReader

log = logging.getLogger(__name__)

FILE_VARIABLES = ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CA_FILE")


@dataclass(frozen=True)
class TlsConfig:
    cert_file: Path
    key_file: Path
    ca_file: Path
    # A plaintext port with only grpc.health.v1 on it (0: any free port); None: no such port.
    plaintext_health_port: int | None = None


def read_tls(env: EnvReader) -> TlsConfig | None:
    """The TLS settings, or None for plaintext; problems are recorded on `env`."""
    values = {name: env.optional(name) for name in FILE_VARIABLES}
    health_port = env.optional("TLS_PLAINTEXT_HEALTH_PORT")
    if not any(values.values()):
        if health_port:
            env.problem(
                "TLS_PLAINTEXT_HEALTH_PORT is set but TLS is not (set TLS_CERT_FILE, TLS_KEY_FILE, TLS_CA_FILE)"
            )
        return None
    missing = [name for name, value in values.items() if not value]
    if missing:
        env.problem(f"{', '.join(FILE_VARIABLES)} go together; missing: {', '.join(missing)}")
        return None
    paths = {name: Path(value or "") for name, value in values.items()}
    for name, path in paths.items():
        if not path.is_file():
            env.problem(f"{name}={str(path)!r} is not a readable file")
    return TlsConfig(
        cert_file=paths["TLS_CERT_FILE"],
        key_file=paths["TLS_KEY_FILE"],
        ca_file=paths["TLS_CA_FILE"],
        plaintext_health_port=env.int("TLS_PLAINTEXT_HEALTH_PORT", 0, minimum=0) if health_port else None,
    )


def tls_from_environment() -> TlsConfig | None:
    """The process's TLS settings (raises SettingsError listing every problem)."""
    from libs.settings import EnvReader  # libs.settings validates TLS with the other settings

    env = EnvReader()
    config = read_tls(env)
    env.done()
    return config


@dataclass(frozen=True)
class PemSet:
    cert: bytes
    key: bytes
    ca: bytes


def _key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    certificate = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        certificate.public_key().public_bytes(serialization.Encoding.DER, spki)
        == key.public_key().public_bytes(serialization.Encoding.DER, spki)
    )


class PemWatcher:
    """The current certificate files, re-read when they change on disk."""

    def __init__(self, config: TlsConfig) -> None:
        self._paths = (config.cert_file, config.key_file, config.ca_file)
        self._lock = threading.Lock()
        self._signature = self._stat()
        self.current = self._read()  # fails loudly at start: no TLS with unreadable files

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        stats = [os.stat(path) for path in self._paths]  # follows the Secret volume's symlinks
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def _read(self) -> PemSet:
        cert, key, ca = (path.read_bytes() for path in self._paths)
        if not _key_matches(cert, key):
            raise ValueError(f"{self._paths[1]} is not the key of {self._paths[0]}")
        return PemSet(cert=cert, key=key, ca=ca)

    def changed(self) -> PemSet | None:
        """The new files if they changed since the last call, else None (also while they are unusable)."""
        with self._lock:
            try:
                signature = self._stat()
                if signature == self._signature:
                    return None
                pem = self._read()
            except (OSError, ValueError):
                # Mid-rotation (a file missing, the key not yet matching): keep serving the old pair.
                log.warning("TLS files unreadable or inconsistent; keeping the previous certificate", exc_info=True)
                return None
            self._signature, self.current = signature, pem
            log.info("TLS certificate files reloaded")
            return pem


def _server_configuration(pem: PemSet) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(pem.key, pem.cert)], root_certificates=pem.ca)


def server_credentials(config: TlsConfig) -> grpc.ServerCredentials:
    """Credentials requiring a client certificate signed by the CA; files re-read on each handshake."""
    watcher = PemWatcher(config)

    def fetch_configuration() -> grpc.ServerCertificateConfiguration | None:
        pem = watcher.changed()
        return None if pem is None else _server_configuration(pem)

    return grpc.dynamic_ssl_server_credentials(
        _server_configuration(watcher.current), fetch_configuration, require_client_authentication=True
    )


def channel_credentials(pem: PemSet) -> grpc.ChannelCredentials:
    """Present this service's certificate; trust only servers signed by the CA."""
    return grpc.ssl_channel_credentials(root_certificates=pem.ca, private_key=pem.key, certificate_chain=pem.cert)
