"""Session fixture `s3_endpoint`: an S3 server (moto) on a random loopback port.

moto's ThreadedMotoServer is the most faithful S3 we can run here (multipart,
metadata, errors); it ignores credentials and keeps objects in memory.
Yields "127.0.0.1:PORT" (minio's endpoint form, plain HTTP).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"{host}:{port}"
    finally:
        server.stop()
