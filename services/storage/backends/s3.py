"""Objects in an S3-compatible bucket (MinIO in production) through the minio client.

The sha256 is stored as object metadata (`x-amz-meta-sha256`), and S3 takes
metadata only when an upload starts, before the bytes are known. So an upload
is first spooled to a temporary file while it is hashed and size-checked, then
sent with the hash as metadata: the object appears in the bucket complete, with
its hash, or not at all. A refused (too large) or abandoned upload never
reaches S3. Memory stays bounded: the spool is on disk and minio sends at most
one part (PART_SIZE_BYTES) at a time.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import urllib3
from minio import Minio
from minio.error import S3Error

from libs.errors import Unavailable
from services.storage.backends import READ_CHUNK_BYTES, Listed, ObjectMeta, copy_hashed, not_found
from services.storage.keys import DOMAIN

log = logging.getLogger(__name__)

SHA256_METADATA = "sha256"
# S3's minimum part size is 5 MiB; one part at a time is held in memory.
PART_SIZE_BYTES = 8 * 1024 * 1024
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}


@dataclass(frozen=True)
class S3Config:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str
    secure: bool


def _unavailable() -> Unavailable:
    return Unavailable("STORAGE_BACKEND_UNAVAILABLE", "object storage is unavailable; retry later", domain=DOMAIN)


@contextlib.contextmanager
def _read_errors(action: str, key: str) -> Iterator[None]:
    """A missing key is OBJECT_NOT_FOUND; any other S3 or transport failure is unavailable."""
    try:
        yield
    except S3Error as error:
        if error.code in _NOT_FOUND_CODES:
            raise not_found(key) from None
        log.warning("%s of %s failed", action, key, exc_info=True)
        raise _unavailable() from None
    except urllib3.exceptions.HTTPError:
        log.warning("%s of %s failed", action, key, exc_info=True)
        raise _unavailable() from None


class S3Backend:
    def __init__(self, config: S3Config, *, spool_dir: str | None = None) -> None:
        self.bucket = config.bucket
        self._spool_dir = spool_dir
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=60),
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
            maxsize=16,
        )
        self.client = Minio(
            config.endpoint,
            access_key=config.access_key,
            secret_key=config.secret_key,
            region=config.region,
            secure=config.secure,
            http_client=http,
        )

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (dev set-ups); production buckets usually exist already."""
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
                log.info("created bucket %s", self.bucket)
        except (S3Error, urllib3.exceptions.HTTPError):
            log.warning("cannot check or create bucket %s; readiness will say so", self.bucket, exc_info=True)

    def put(self, key: str, content_type: str, chunks: Iterable[bytes], max_size_bytes: int) -> ObjectMeta:
        with tempfile.TemporaryFile(dir=self._spool_dir, prefix="pdfsmaller-s3-spool-") as spool:
            size, sha256 = copy_hashed(chunks, spool, max_size_bytes)
            spool.seek(0)
            meta = ObjectMeta(key=key, size_bytes=size, sha256=sha256, content_type=content_type)
            try:
                self.client.put_object(
                    self.bucket,
                    key,
                    spool,
                    length=size,
                    content_type=content_type,
                    metadata={SHA256_METADATA: meta.sha256},
                    part_size=PART_SIZE_BYTES,
                    num_parallel_uploads=1,
                )
            except (S3Error, urllib3.exceptions.HTTPError):
                log.warning("put of %s to bucket %s failed", key, self.bucket, exc_info=True)
                raise _unavailable() from None
        return meta

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[tuple[ObjectMeta, Iterator[bytes]]]:
        with _read_errors("get", key):
            response = self.client.get_object(self.bucket, key)
        try:
            headers = response.headers
            meta = ObjectMeta(
                key=key,
                size_bytes=int(headers.get("Content-Length", "0")),
                sha256=headers.get(f"x-amz-meta-{SHA256_METADATA}", ""),
                content_type=headers.get("Content-Type", ""),
            )
            yield meta, _stream(response)
        finally:
            response.close()
            response.release_conn()

    def stat(self, key: str) -> ObjectMeta:
        with _read_errors("stat", key):
            stat = self.client.stat_object(self.bucket, key)
        metadata = stat.metadata or {}
        return ObjectMeta(
            key=key,
            size_bytes=int(stat.size or 0),
            sha256=str(metadata.get(f"x-amz-meta-{SHA256_METADATA}", "")),
            content_type=str(stat.content_type or ""),
        )

    def delete(self, key: str) -> None:
        # S3's DeleteObject already succeeds for a missing key.
        try:
            self.client.remove_object(self.bucket, key)
        except (S3Error, urllib3.exceptions.HTTPError):
            log.warning("delete of %s failed", key, exc_info=True)
            raise _unavailable() from None

    def keys(self, prefix: str) -> Iterator[str]:
        return (listed.key for listed in self.listing(prefix))

    def listing(self, prefix: str) -> Iterator[Listed]:
        with _read_errors("list", prefix):
            for item in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                if item.object_name and not item.is_dir:
                    yield Listed(item.object_name, item.last_modified or datetime.now(UTC))

    def ready(self) -> bool:
        try:
            return bool(self.client.bucket_exists(self.bucket))
        except (S3Error, urllib3.exceptions.HTTPError):
            log.warning("bucket %s is not reachable", self.bucket, exc_info=True)
            return False


def _stream(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    try:
        for chunk in response.stream(READ_CHUNK_BYTES):
            if chunk:
                yield chunk
    except urllib3.exceptions.HTTPError:
        log.warning("reading an object from S3 failed mid-stream", exc_info=True)
        raise _unavailable() from None
