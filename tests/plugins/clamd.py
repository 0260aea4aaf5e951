"""Session fixture `clamd_addr`: a real clamd on a random loopback port.

Uses TEST_CLAMD_ADDR (host:port) when set; otherwise starts Debian's clamd
through devtools.servers.clamd with the small EICAR test database only (fast
and deterministic: the official database takes ~1 GiB and tens of seconds).
Skips loudly only when clamd is not installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.servers.clamd import ClamdServer


@pytest.fixture(scope="session")
def clamd_addr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("TEST_CLAMD_ADDR", "").strip()
    if existing:
        yield existing
        return
    if not ClamdServer.available():
        pytest.skip(
            "CLAMD NOT INSTALLED: malware-scanning tests skipped. Install Debian's clamav-daemon "
            "(`make system-deps` as root) or set TEST_CLAMD_ADDR=host:port."
        )
    server = ClamdServer(Path(tmp_path_factory.mktemp("clamd")), port=0, use_official_db=False)
    try:
        yield server.start()
    finally:
        server.stop()
