"""Reading an upload from the client and streaming it into storage, checking it on the way.

Only the handler's thread reads the client's stream (grpcio's request iterator must not be read
from two threads); chunks reach the PutObject call, which grpcio drives from a thread of its own,
through a small hand-off queue. So the handler can still read the rest of the body when storage
fails mid-way, and answer only then. Memory stays bounded: the queue holds a few chunks, and the
first KiB is held back only until we know the body is a PDF, so a disguised file never reaches
storage in full.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import grpc
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.storage.v1 import storage_service_pb2 as storage

from libs.errors import InvalidArgument, ResourceExhausted, ServiceError
from libs.grpc_server import client_stream_completed
from libs.pdf_header import HEADER_WINDOW, has_pdf_header

MAX_FILENAME_CHARS = 200
_UNSAFE_FILENAME_CHARS = re.compile(r'[\x00-\x1f\x7f"\\/;:*?<>|]+')
# Chunks waiting for the PutObject call (each at most the gRPC message limit).
HANDOFF_CHUNKS = 2
# How often a hand-off blocked on a full queue looks whether the storage call has ended.
HANDOFF_POLL_SECONDS = 0.1
# The REST body's length, which Envoy's transcoder does not pass on (it drops content-length): the edge's
# Lua filter copies Content-Length into this header for REST requests and removes any client copy.
BODY_LENGTH_HEADER = "x-request-body-length"
MAX_BODY_LENGTH_DIGITS = 18


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
class UploadBody:
    """The client's CreateJob messages: options first, then the body, checked, counted and hashed.

    Read from one thread only. `read_options()` reads up to the first message that carries options
    or data; `chunks()` then yields the body; `drain()` reads and drops whatever is left.
    """

    messages: Iterable[public.CreateJobRequest]
    max_bytes: int
    # The body's length as the edge announced it (BODY_LENGTH_HEADER); None when unknown.
    declared_size: int | None = None
    # Whether the client really finished its stream (a disconnect also just ends it); asked only
    # when no length was declared.
    client_finished: Callable[[], bool] = lambda: True
    # The options of the first message (REST clients send them as query parameters there), minus its data.
    options: public.CreateJobRequest = field(default_factory=public.CreateJobRequest)
    size: int = 0
    _digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    _pending: bytes = b""
    _options_read: bool = False
    _ended: bool = False

    def __post_init__(self) -> None:
        # One iterator for every reader below, so each message is read once.
        self._source = iter(self.messages)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def read_options(self) -> public.CreateJobRequest:
        """The upload's options, from the first message that carries options or data."""
        if self._options_read:
            return self.options
        self._options_read = True
        for message in self._messages():
            if message.file.data or any(getattr(message, name) for name in OPTION_FIELDS):
                self.options.CopyFrom(message)
                self.options.ClearField("file")
                self._pending = message.file.data
                break
        return self.options

    def chunks(self) -> Iterator[bytes]:
        """The body: the first KiB once it is known to be a PDF, then each chunk as it arrives.

        Raises NOT_A_PDF, FILE_TOO_LARGE, EMPTY_FILE, or UPLOAD_ABORTED for a client that went away.
        """
        head = b""
        sniffed = False
        for chunk in self._data():
            if sniffed:
                yield chunk
                continue
            head += chunk
            if len(head) < HEADER_WINDOW:  # held back until the header window is complete
                continue
            _check_magic(head)
            sniffed = True
            yield head
        if not self._complete():
            raise _aborted()
        if self.size == 0:
            raise InvalidArgument("EMPTY_FILE", "the request body is empty; send the PDF as the body")
        if not sniffed:
            _check_magic(head)
            yield head

    def drain(self) -> None:
        """Read and drop the rest of the body, up to the size limit.

        An HTTP/1.1 client that gets its answer while still sending sees a TCP reset instead of the
        answer (Envoy closes the connection it cannot reuse): answer errors only after this.
        """
        with contextlib.suppress(ServiceError):
            for message in self._messages():
                self.size += len(message.file.data)
                if self.size > self.max_bytes:
                    return

    def _complete(self) -> bool:
        """Whether the stream that just ended carried the whole body, not a dropped upload's part.

        grpcio ends the request iterator the same way for a half-close and for a cancel. With a declared
        length (REST through Envoy, which never forwards more or fewer bytes than Content-Length as a
        complete request) the count says it at once. Without one (a chunked HTTP/1.1 body, HTTP/2
        without content-length, gRPC clients) only the settle check is left: a cancel shows in
        is_active() a moment later, so it watches for one (libs.grpc_server.client_stream_completed).
        """
        if self.declared_size is None:
            return self.client_finished()
        return self.size == self.declared_size

    def _data(self) -> Iterator[bytes]:
        self.read_options()
        pending, self._pending = self._pending, b""
        if pending:
            yield self._counted(pending)
        for message in self._messages():
            if message.file.data:
                yield self._counted(message.file.data)

    def _counted(self, chunk: bytes) -> bytes:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise ResourceExhausted("FILE_TOO_LARGE", f"the file is larger than {self.max_bytes} bytes")
        self._digest.update(chunk)
        return chunk

    def _messages(self) -> Iterator[public.CreateJobRequest]:
        if self._ended or self.size > self.max_bytes:
            return
        try:
            # Not `yield from`: closing this generator early (read_options) must not close the source.
            for message in self._source:  # noqa: UP028
                yield message
        except grpc.RpcError:  # grpcio's iterator raises when the client cancels
            self._ended = True
            raise _aborted() from None
        self._ended = True


def upload_body(
    messages: Iterable[public.CreateJobRequest], context: grpc.ServicerContext, max_bytes: int
) -> UploadBody:
    """The CreateJob call's body, told how to know that it is complete (see UploadBody._complete)."""
    return UploadBody(
        messages=messages,
        max_bytes=max_bytes,
        declared_size=declared_body_length(context.invocation_metadata() or ()),
        client_finished=lambda: client_stream_completed(context),
    )


def declared_body_length(metadata: Iterable[tuple[str, str | bytes]]) -> int | None:
    """The length in BODY_LENGTH_HEADER when it is there once and a plain decimal number."""
    values = [value for key, value in metadata if key == BODY_LENGTH_HEADER]
    if len(values) != 1 or not isinstance(values[0], str):
        return None
    value = values[0]
    if not (value.isascii() and value.isdigit()) or len(value) > MAX_BODY_LENGTH_DIGITS:
        return None
    return int(value)


def _aborted() -> ServiceError:
    return ServiceError("UPLOAD_ABORTED", "the upload was interrupted", code=grpc.StatusCode.CANCELLED)


def _check_magic(head: bytes) -> None:
    if not has_pdf_header(head):
        raise InvalidArgument("NOT_A_PDF", "the file is not a PDF (no %PDF- header)")


# Starts a PutObject call on a request iterator (the storage stub's PutObject.future, with a timeout).
StartPut = Callable[[Iterator[storage.PutObjectRequest]], grpc.Future]


def store_upload(body: UploadBody, key: str, start_put: StartPut) -> storage.ObjectInfo:
    """Stream the body into storage as `key`; the object exists only if this returns.

    The last message tells storage the size and sha256 of the body, and storage commits only then. A
    refusal of the body (ServiceError) ends the call without it (and cancels it), so storage keeps
    nothing. When storage ends the call early, reading stops and its grpc.RpcError is raised: the rest
    of the body is left for the caller to drain.
    """
    handoff: queue.Queue[storage.PutObjectRequest | None] = queue.Queue(maxsize=HANDOFF_CHUNKS)
    header = storage.PutObjectHeader(key=key, content_type="application/pdf", max_size_bytes=body.max_bytes)
    call = start_put(_put_requests(header, handoff))
    try:
        for chunk in body.chunks():
            if not _hand_over(handoff, storage.PutObjectRequest(chunk=chunk), call):
                break
        else:
            finish = storage.PutObjectFinish(size_bytes=body.size, sha256=body.sha256)
            _hand_over(handoff, storage.PutObjectRequest(finish=finish), call)
        return call.result()
    finally:
        if not call.done():
            call.cancel()  # storage stops at once (ending without the finish alone would keep nothing too)
        _release(handoff)


def _put_requests(
    header: storage.PutObjectHeader, handoff: queue.Queue[storage.PutObjectRequest | None]
) -> Iterator[storage.PutObjectRequest]:
    """The call's messages: the header, then what is handed over, up to the finish (None: give up
    without it, which storage takes as an abandoned upload)."""
    yield storage.PutObjectRequest(header=header)
    while (request := handoff.get()) is not None:
        yield request
        if request.HasField("finish"):
            return


def _release(handoff: queue.Queue[storage.PutObjectRequest | None]) -> None:
    """Leave grpcio's thread, which may wait for a message that will not come, the end of the requests.

    The queue may be full (a refusal right after two chunks): what is still in it is dropped first, as
    the call is over. This thread is the only one putting, so the end then fits.
    """
    with contextlib.suppress(queue.Empty):
        for _ in range(HANDOFF_CHUNKS):
            handoff.get_nowait()
    handoff.put_nowait(None)


def _hand_over(
    handoff: queue.Queue[storage.PutObjectRequest | None], item: storage.PutObjectRequest, call: grpc.Future
) -> bool:
    """Queue one message for the call; False if the call ended first."""
    while not call.done():  # the call's own deadline bounds this wait
        try:
            handoff.put(item, timeout=HANDOFF_POLL_SECONDS)
        except queue.Full:
            continue
        return True
    return False
