"""The INSTREAM client against fake and real clamd servers."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from devtools.servers.clamd import NDB_SIGNATURE_NAME, eicar_bytes
from services.scanner.clamd import ClamdClient, ClamdError, ScanResult, parse_address, parse_scan_reply


def test_parse_scan_reply() -> None:
    assert parse_scan_reply("stream: OK") == ScanResult(infected=False)
    assert parse_scan_reply("stream: Win.Test.EICAR_HDB-1 FOUND") == ScanResult(True, "Win.Test.EICAR_HDB-1")
    for reply in ("INSTREAM size limit exceeded. ERROR", "stream: Can't allocate memory ERROR", "", "weird"):
        with pytest.raises(ClamdError):
            parse_scan_reply(reply)


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:3310") == (socket.AF_INET, ("127.0.0.1", 3310))
    assert parse_address("/run/clamav/clamd.ctl") == (socket.AF_UNIX, "/run/clamav/clamd.ctl")
    assert parse_address("unix:/tmp/c.sock") == (socket.AF_UNIX, "/tmp/c.sock")
    with pytest.raises(ValueError, match="neither"):
        parse_address("clamd")


@pytest.fixture
def fake_clamd() -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """Start a one-connection TCP server running `behaviour(conn)`; yields its address."""
    servers: list[socket.socket] = []

    def start(behaviour: Callable[[socket.socket], None]) -> str:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)

        def run() -> None:
            conn, _ = server.accept()
            with conn:
                behaviour(conn)

        threading.Thread(target=run, daemon=True).start()
        return f"127.0.0.1:{server.getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


def _read_stream(conn: socket.socket) -> bytes:
    reader = conn.makefile("rb")
    assert reader.read(len(b"zINSTREAM\0")) == b"zINSTREAM\0"
    data = bytearray()
    while True:
        (length,) = struct.unpack("!L", reader.read(4))
        if length == 0:
            return bytes(data)
        data += reader.read(length)


def _scan(client: ClamdClient, chunks: list[bytes]) -> ScanResult:
    with client.instream() as session:
        for chunk in chunks:
            session.send(chunk)
        return session.finish()


def test_framing_is_exact_for_any_chunking(fake_clamd: Callable[..., str]) -> None:
    received: list[bytes] = []

    def behaviour(conn: socket.socket) -> None:
        received.append(_read_stream(conn))
        conn.sendall(b"stream: OK\0")

    client = ClamdClient(fake_clamd(behaviour), timeout=10)
    payload = bytes(range(256)) * 12_000  # 3 MiB: split into 1 MiB frames
    with client.instream() as session:
        session.send(payload[:5])
        session.send(payload[5:])
        assert session.finish() == ScanResult(infected=False)
    assert received == [payload]


def test_connection_dropped_mid_stream_is_an_error(fake_clamd: Callable[..., str]) -> None:
    def behaviour(conn: socket.socket) -> None:
        conn.recv(1024)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close

    client = ClamdClient(fake_clamd(behaviour), timeout=10)
    with pytest.raises(ClamdError):
        _scan(client, [b"x" * 1024 * 1024] * 64)


def test_size_limit_reply_is_an_error(fake_clamd: Callable[..., str]) -> None:
    def behaviour(conn: socket.socket) -> None:
        _read_stream(conn)
        conn.sendall(b"INSTREAM size limit exceeded. ERROR\0")

    client = ClamdClient(fake_clamd(behaviour), timeout=10)
    with pytest.raises(ClamdError, match="size limit"):
        _scan(client, [b"x" * 1000])


def test_silent_clamd_times_out(fake_clamd: Callable[..., str]) -> None:
    done = threading.Event()

    def behaviour(conn: socket.socket) -> None:
        _read_stream(conn)
        done.wait(5)

    client = ClamdClient(fake_clamd(behaviour), timeout=0.5)
    try:
        with pytest.raises(ClamdError):
            _scan(client, [b"x"])
    finally:
        done.set()


def test_unreachable(closed_address: str) -> None:
    client = ClamdClient(closed_address, timeout=2)
    assert not client.ping()
    with pytest.raises(ClamdError):
        client.instream()
    with pytest.raises(ClamdError):
        client.version()


@pytest.mark.integration
def test_real_clamd_detects_eicar_after_120_mib(clamd_addr: str) -> None:
    """No truncation: EICAR as the very last bytes of a 120 MiB stream is still found."""
    client = ClamdClient(clamd_addr, timeout=60)
    assert client.ping()
    chunk = bytes(1024 * 1024)
    with client.instream() as session:
        for _ in range(120):
            session.send(chunk)
        session.send(eicar_bytes())
        result = session.finish()
    assert session.sent_bytes == 120 * 1024 * 1024 + len(eicar_bytes())
    assert result.infected
    assert result.signature.startswith((NDB_SIGNATURE_NAME, "Win.Test.EICAR", "Eicar"))
