"""Streaming an upload from the client into storage, checking it on the way.

Chunks are forwarded as they arrive (bounded memory); the first KiB is held
back only until we know the body is a PDF, so a disguised file never reaches
storage in full.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import grpc
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.storage.v1 import storage_service_pb2 as storage

from libs.errors import InvalidArgument, ResourceExhausted, ServiceError

PDF_MAGIC = b"%PDF-"
# Readers accept the header anywhere in the first KiB (some files carry junk before it).
SNIFF_BYTES = 1024
MAX_FILENAME_CHARS = 200
_UNSAFE_FILENAME_CHARS = re.compile(r'[\x00-\x1f\x7f"\\/;:*?<>|]+')


def clean_filename(raw: str) -> str:
    """A display name safe for headers and logs: no path, no control characters."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_FILENAME_CHARS.sub("_", name).strip(" .")
    return name[:MAX_FILENAME_CHARS] or "document.pdf"


# Fields of the first CreateJobRequest that are options rather than file data.
OPTION_FIELDS = (
    "filename",
    "level",
    "image_quality",
    "request_id",
    "max_image_dpi",
    "grayscale",
    "remove_metadata",
    "linearize",
    "target_size_bytes",
    "allow_signature_break",
)


@dataclass
class UploadStream:
    """Turns the client's CreateJob messages into PutObject messages.

    `error` is set when the body is refused, so the caller can tell a refusal
    from a storage failure after the PutObject call ends.
    """

    messages: Iterable[public.CreateJobRequest]
    key: str
    max_bytes: int
    # Whether the client really finished its stream (a disconnect also just ends it).
    client_finished: Callable[[], bool] = lambda: True
    # The first message with options set, minus its file data.
    options: public.CreateJobRequest = field(default_factory=public.CreateJobRequest)
    size: int = 0
    error: ServiceError | None = None
    _options_seen: bool = False

    def _take_options(self, message: public.CreateJobRequest) -> None:
        # REST clients send options as query parameters on the first message only.
        if self._options_seen:
            return
        if any(getattr(message, name) for name in OPTION_FIELDS):
            self.options = public.CreateJobRequest()
            self.options.CopyFrom(message)
            self.options.ClearField("file")
            self._options_seen = True

    def _refuse(self, error: ServiceError) -> ServiceError:
        self.error = error
        return error

    def requests(self) -> Iterator[storage.PutObjectRequest]:
        yield storage.PutObjectRequest(
            header=storage.PutObjectHeader(key=self.key, content_type="application/pdf", max_size_bytes=self.max_bytes)
        )
        head = b""
        sniffed = False
        for message in self.messages:
            self._take_options(message)
            chunk = message.file.data
            if not chunk:
                continue
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise self._refuse(
                    ResourceExhausted("FILE_TOO_LARGE", f"the file is larger than {self.max_bytes} bytes")
                )
            if sniffed:
                yield storage.PutObjectRequest(chunk=chunk)
                continue
            head += chunk
            if len(head) < SNIFF_BYTES:
                continue
            self._check_magic(head)
            sniffed = True
            yield storage.PutObjectRequest(chunk=head)
        if not self.client_finished():
            raise self._refuse(
                ServiceError("UPLOAD_ABORTED", "the upload was interrupted", code=grpc.StatusCode.CANCELLED)
            )
        if self.size == 0:
            raise self._refuse(InvalidArgument("EMPTY_FILE", "the request body is empty; send the PDF as the body"))
        if not sniffed:
            self._check_magic(head)
            yield storage.PutObjectRequest(chunk=head)

    def _check_magic(self, head: bytes) -> None:
        if PDF_MAGIC not in head[:SNIFF_BYTES]:
            raise self._refuse(InvalidArgument("NOT_A_PDF", "the file is not a PDF (no %PDF- header)"))
