"""A small clamd client: PING, VERSION and INSTREAM over TCP or a unix socket.

Why not pyclamd: it writes with `socket.send` and ignores the count sent. On a
socket with a timeout (which it sets) Python's send() may write only part of a
buffer, and a short write silently corrupts INSTREAM's length-prefixed framing.
It also reads the reply with one `recv(4096)`, needs the whole stream as bytes
or a file object, and reports clamd ERROR replies as ordinary results. On
loopback it happened to pass a 120 MiB scan here, but nothing makes that hold
under load or across a network. This client uses `sendall`, frames chunks
itself, reads the reply to its NUL terminator, applies a timeout to every
socket operation and turns every failure into `ClamdError`, so the caller can
fail closed.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from types import TracebackType

# clamd accepts any chunk size up to StreamMaxLength; 1 MiB keeps framing overhead negligible.
MAX_FRAME_BYTES = 1024 * 1024
_MAX_REPLY_BYTES = 64 * 1024


class ClamdError(Exception):
    """clamd is unreachable, timed out, or answered with an error."""


@dataclass(frozen=True)
class ScanResult:
    infected: bool
    # Signature name when infected (e.g. "Win.Test.EICAR_HDB-1").
    signature: str = ""


def parse_address(address: str) -> tuple[int, str | tuple[str, int]]:
    """`host:port` -> TCP; `/path` or `unix:/path` -> unix socket."""
    if address.startswith("unix:"):
        return socket.AF_UNIX, address[len("unix:") :]
    if address.startswith("/"):
        return socket.AF_UNIX, address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"clamd address {address!r} is neither host:port nor a socket path")
    return socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, (host.strip("[]"), int(port))


class ClamdClient:
    def __init__(self, address: str, timeout: float = 60.0) -> None:
        self.address = address
        self.timeout = timeout
        self._family, self._target = parse_address(address)

    def _connect(self, timeout: float | None = None) -> socket.socket:
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            sock.connect(self._target)
        except OSError as error:
            sock.close()
            raise ClamdError(f"cannot connect to clamd at {self.address}: {error}") from error
        return sock

    def _command(self, command: bytes, timeout: float | None = None) -> str:
        with self._connect(timeout) as sock:
            try:
                sock.sendall(b"z" + command + b"\0")
                return _read_reply(sock)
            except OSError as error:
                raise ClamdError(f"clamd {command.decode()} failed: {error}") from error

    def ping(self, timeout: float = 2.0) -> bool:
        """True when clamd answers PONG; False when unreachable."""
        try:
            return self._command(b"PING", timeout) == "PONG"
        except ClamdError:
            return False

    def version(self, timeout: float = 5.0) -> str:
        """clamd's VERSION: "ClamAV 1.4.6/27512/<date>" with the official database, "ClamAV 1.4.6" without."""
        return self._command(b"VERSION", timeout)

    def instream(self) -> InstreamSession:
        """Start an INSTREAM scan; feed it with `send()`, then `finish()` for the verdict."""
        return InstreamSession(self._connect(), self.address)


class InstreamSession:
    """One INSTREAM conversation, so a caller can stream chunks as they arrive from elsewhere."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self._sock = sock
        self._address = address
        self.sent_bytes = 0
        try:
            sock.sendall(b"zINSTREAM\0")
        except OSError as error:
            sock.close()
            raise ClamdError(f"clamd INSTREAM at {address} failed: {error}") from error

    def send(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        for start in range(0, len(view), MAX_FRAME_BYTES):
            frame = view[start : start + MAX_FRAME_BYTES]
            try:
                self._sock.sendall(struct.pack("!L", len(frame)))
                self._sock.sendall(frame)
            except OSError as error:
                # clamd closes the connection after an error reply (e.g. the size limit); report that reply.
                raise ClamdError(f"clamd stopped reading the stream: {self._reply_after_error() or error}") from error
            self.sent_bytes += len(frame)

    def finish(self) -> ScanResult:
        try:
            self._sock.sendall(struct.pack("!L", 0))
            reply = _read_reply(self._sock)
        except OSError as error:
            raise ClamdError(f"clamd INSTREAM at {self._address} failed: {error}") from error
        finally:
            self.close()
        return parse_scan_reply(reply)

    def _reply_after_error(self) -> str:
        try:
            self._sock.settimeout(1.0)
            return _read_reply(self._sock)
        except (OSError, ClamdError):
            return ""

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> InstreamSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _read_reply(sock: socket.socket) -> str:
    """Read up to the NUL that ends a reply to a z-prefixed command."""
    buffer = bytearray()
    while True:
        data = sock.recv(4096)
        if not data:
            break
        buffer += data
        if b"\0" in data or len(buffer) > _MAX_REPLY_BYTES:
            break
    if not buffer:
        raise ClamdError("clamd closed the connection without answering")
    return buffer.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()


def parse_scan_reply(reply: str) -> ScanResult:
    """`stream: OK` / `stream: <name> FOUND` / `... ERROR` (an error never counts as clean)."""
    body = reply.split(": ", 1)[1] if reply.startswith("stream: ") else reply
    if body == "OK":
        return ScanResult(infected=False)
    if body.endswith(" FOUND"):
        return ScanResult(infected=True, signature=body[: -len(" FOUND")].strip())
    raise ClamdError(f"clamd could not scan the stream: {reply}")
