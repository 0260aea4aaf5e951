"""`closed_address`: a loopback host:port where nothing listens and nothing can start listening.

The fixture holds the port bound (without listening) for the whole test, so connecting is refused
at once, and no other process can take the port meanwhile (a port found free and released could be).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def closed_address() -> Iterator[str]:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{holder.getsockname()[1]}"
    finally:
        holder.close()
