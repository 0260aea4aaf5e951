"""The product's object store as the operator commands open it: the storage service's own backends
and settings (STORAGE_BACKEND, STORAGE_DIR, S3_*), make run's folder by default."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from ops import defaults
from ops.report import OpsError
from services.storage.backends import Backend
from services.storage.backends.local import LocalBackend
from services.storage.backends.s3 import S3Backend
from services.storage.settings import BACKENDS, s3_config_from_env


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("object store (the storage service's settings: STORAGE_*, S3_*)")
    group.add_argument(
        "--storage-backend",
        choices=BACKENDS,
        default=os.environ.get("STORAGE_BACKEND", "local").lower(),
        help="the storage service's backend (default: $STORAGE_BACKEND or %(default)s); s3 reads S3_* settings",
    )
    group.add_argument(
        "--storage-dir",
        default=os.environ.get("STORAGE_DIR", str(defaults.OBJECTS_DIR)),
        help="root of the local backend (default: $STORAGE_DIR or %(default)s)",
    )


def storage_backend(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ, *, create: bool = False
) -> Backend:
    """The product's own backend over the object store the arguments name; a missing folder is an
    error (a mistyped --storage-dir) unless `create` (a restore into an empty store)."""
    if args.storage_backend == "s3":
        return S3Backend(s3_config_from_env(environ))
    directory = Path(args.storage_dir)
    if not create and not directory.is_dir():
        raise OpsError(f"the object store {directory} is not a folder (--storage-dir, or STORAGE_DIR)")
    return LocalBackend(directory)
