"""Storage service settings, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from libs.settings import EnvReader, common_ports
from services.storage.backends.s3 import S3Config

BACKENDS = ("local", "s3")


@dataclass(frozen=True)
class StorageSettings:
    listen: str
    metrics_port: int
    backend: str
    # Local backend root (STORAGE_DIR).
    directory: str
    # Set when backend == "s3".
    s3: S3Config | None
    log_level: str = "INFO"
    # Written with the bound ports once serving (STORAGE_ADDRESS_FILE), for launchers using port 0.
    address_file: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StorageSettings:
        env = EnvReader(os.environ if environ is None else environ)
        listen, metrics_port, address_file = common_ports(env, "storage")
        backend = env.str("STORAGE_BACKEND", "local").lower()
        if backend not in BACKENDS:
            env.problem(f"STORAGE_BACKEND={backend!r} is not one of {', '.join(BACKENDS)}")
        directory = env.str("STORAGE_DIR", ".data/objects")
        s3 = _s3_config(env) if backend == "s3" else None
        log_level = env.log_level()
        env.done()
        return cls(
            listen=listen,
            metrics_port=metrics_port,
            address_file=address_file,
            backend=backend,
            directory=directory,
            s3=s3,
            log_level=log_level,
        )


def s3_config_from_env(environ: Mapping[str, str], bucket: str | None = None) -> S3Config:
    """The S3 connection of the storage service's settings (S3_*); `bucket`, when given, replaces
    S3_BUCKET: operator tools keep backups in a bucket of their own with the same credentials."""
    env = EnvReader({**environ, "S3_BUCKET": bucket} if bucket else environ)
    config = _s3_config(env)
    env.done()
    return config


def _s3_config(env: EnvReader) -> S3Config:
    endpoint = env.str("S3_ENDPOINT")
    secure_default = True
    # minio wants host:port; accept a URL too and let its scheme pick TLS unless S3_SECURE says otherwise.
    for scheme, is_secure in (("https://", True), ("http://", False)):
        if endpoint.startswith(scheme):
            endpoint, secure_default = endpoint[len(scheme) :].rstrip("/"), is_secure
    if "/" in endpoint:
        env.problem(f"S3_ENDPOINT={endpoint!r} must be host[:port] without a path")
    return S3Config(
        endpoint=endpoint,
        bucket=env.str("S3_BUCKET"),
        access_key=env.str("S3_ACCESS_KEY"),
        secret_key=env.str("S3_SECRET_KEY"),
        region=env.str("S3_REGION", "us-east-1"),
        secure=env.bool("S3_SECURE", secure_default),
    )
