"""devtools.servers.clamd: a private clamd that starts, detects EICAR and always stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.servers.clamd import TEST_SIGNATURES_MARKER, ClamdServer, eicar_bytes, ping
from services.scanner.clamd import ClamdClient

pytestmark = pytest.mark.integration


@pytest.mark.skipif(not ClamdServer.available(), reason="CLAMD NOT INSTALLED (Debian package clamav-daemon)")
def test_start_scan_stop(tmp_path: Path) -> None:
    server = ClamdServer(tmp_path, port=0, use_official_db=False)
    assert server.test_signatures_only
    try:
        address = server.start()
        assert ping(address)
        config = server.config_path.read_text()
        assert "StreamMaxLength 200M" in config
        assert f"TCPSocket {server.port}" in config
        assert (tmp_path / TEST_SIGNATURES_MARKER).is_file()
        client = ClamdClient(address, timeout=10)
        with client.instream() as session:
            session.send(b"hello " + eicar_bytes() + b" world")
            assert session.finish().infected
        assert "/" not in client.version()  # no official database version
    finally:
        server.stop()
    assert not ping(address)
    server.stop()  # idempotent
