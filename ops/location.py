"""Where backups go: a folder, or an S3 bucket and prefix, through the product's own storage backends.

    location = BackupLocation.from_args(args)     # --backup-dir, or --backup-s3-bucket [--backup-s3-prefix]
    location.put_file("database/full/20261201T120000Z/base.tar.gz", path)
    location.get_file(key, destination)
    location.keys("database/")

Keys are the storage service's (lower-case segments of [a-z0-9._-]), validated before use. With S3
the connection comes from the storage service's settings (S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY,
S3_REGION, S3_SECURE) and the bucket from --backup-s3-bucket: one S3 client for the whole product.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from services.storage.backends import Backend, ObjectMeta
from services.storage.backends.local import LocalBackend
from services.storage.keys import validate_key

# Chunks of a file streamed into a backend (the backends hash and count as they go).
_CHUNK_BYTES = 1024 * 1024
BACKUP_DIR_SETTING = "PDFSMALLER_BACKUP_DIR"
BACKUP_S3_BUCKET_SETTING = "PDFSMALLER_BACKUP_S3_BUCKET"
BACKUP_S3_PREFIX_SETTING = "PDFSMALLER_BACKUP_S3_PREFIX"


class BackupLocation:
    def __init__(self, backend: Backend, prefix: str = "", description: str = "") -> None:
        self._backend = backend
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.description = description

    @classmethod
    def folder(cls, path: Path) -> BackupLocation:
        return cls(LocalBackend(path), description=str(path))

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> BackupLocation:
        if args.backup_s3_bucket:
            # Imported only here: minio costs most of a start, and PostgreSQL starts archive-wal and
            # fetch-wal once per WAL file.
            from services.storage.backends.s3 import S3Backend
            from services.storage.settings import s3_config_from_env

            config = s3_config_from_env(environ, bucket=args.backup_s3_bucket)
            backend = S3Backend(config)
            return cls(backend, args.backup_s3_prefix, f"s3://{config.bucket}/{args.backup_s3_prefix}")
        return cls.folder(Path(args.backup_dir))

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, default_dir: Path) -> None:
        group = parser.add_argument_group("backup location (a folder, or S3 with the storage service's S3_* settings)")
        group.add_argument(
            "--backup-dir",
            default=os.environ.get(BACKUP_DIR_SETTING, str(default_dir)),
            help=f"folder of the backups (default: ${BACKUP_DIR_SETTING} or %(default)s)",
        )
        group.add_argument(
            "--backup-s3-bucket",
            default=os.environ.get(BACKUP_S3_BUCKET_SETTING, ""),
            help=f"S3 bucket of the backups instead of a folder (${BACKUP_S3_BUCKET_SETTING})",
        )
        group.add_argument(
            "--backup-s3-prefix",
            default=os.environ.get(BACKUP_S3_PREFIX_SETTING, "pdf-smaller-backups"),
            help="key prefix in that bucket (default: %(default)s)",
        )

    def _key(self, key: str) -> str:
        return validate_key(self._prefix + key)

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> ObjectMeta:
        with path.open("rb") as handle:
            return self._backend.put(self._key(key), content_type, iter(lambda: handle.read(_CHUNK_BYTES), b""), 0)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> ObjectMeta:
        return self._backend.put(self._key(key), content_type, [data], 0)

    def put_json(self, key: str, document: Any) -> ObjectMeta:
        return self.put_bytes(key, json.dumps(document, indent=2, sort_keys=True).encode(), "application/json")

    def get_file(self, key: str, destination: Path) -> ObjectMeta:
        """Copy the object to `destination` (written beside it, then renamed)."""
        partial = destination.with_name(destination.name + ".partial")
        with self._backend.open(self._key(key)) as (meta, chunks), partial.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
        partial.replace(destination)
        return meta

    def get_bytes(self, key: str) -> bytes:
        with self._backend.open(self._key(key)) as (_meta, chunks):
            return b"".join(chunks)

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def stat(self, key: str) -> ObjectMeta:
        return self._backend.stat(self._key(key))

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix`, relative to the location (without its own prefix)."""
        for key in self._backend.keys(self._prefix + prefix):
            yield key.removeprefix(self._prefix)

    def delete(self, key: str) -> None:
        self._backend.delete(self._key(key))
