"""Loopback ports a test holds for its whole length, so no other process can take them meanwhile
(a port found free and released could be taken at once).

`closed_address`: host:port where nothing listens: bound, never listening, so connecting is refused
at once. `held_port`: a port "another program" listens on, for tests of what a server does when
its port is taken.
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


@pytest.fixture
def held_port() -> Iterator[int]:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]
    finally:
        holder.close()
