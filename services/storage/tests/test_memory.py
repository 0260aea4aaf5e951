"""Memory stays bounded whatever the object size: stream 192 MiB (96 MiB through S3) in and out and watch peak RSS.

Client and server share this process, so the measured peak covers both; the
client reuses one chunk buffer, so anything proportional to the object size
would come from the server. The S3 case runs moto in a child process so its
in-memory objects do not count against us.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pdfsmaller.storage.v1 import storage_service_pb2 as pb

from services.storage.tests.helpers import put_requests, start

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
CHUNK = bytes(range(256)) * 4096  # 1 MiB, the largest chunk Envoy sends over HTTP/1.1


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) * 1024


def _rss_bytes() -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert match is not None
    return int(match.group(1)) * 1024


# moto in a child process on a port it binds itself (0) and prints; it runs until its stdin closes.
MOTO_CHILD = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


@pytest.fixture
def moto_subprocess() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", MOTO_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()  # ends (empty) if the child dies first
        assert port.isdigit(), "moto server did not start"
        yield f"127.0.0.1:{int(port)}"
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize(("backend", "size_mib"), [("local", 192), ("s3", 96)])
def test_streaming_large_object_keeps_memory_bounded(
    backend: str, size_mib: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if not _reset_peak_rss():
        pytest.skip("cannot reset peak RSS (/proc/self/clear_refs) on this kernel")
    endpoint = request.getfixturevalue("moto_subprocess") if backend == "s3" else None
    storage = start(backend, tmp_path, endpoint, bucket=f"mem-{uuid.uuid4().hex[:12]}")
    try:
        expected = hashlib.sha256()
        for _ in range(size_mib):
            expected.update(CHUNK)
        # Warm up first: thread pools, gRPC buffers and allocator arenas are one-off costs, not per-byte ones.
        storage.stub.PutObject(put_requests("warm/up", (CHUNK for _ in range(4))), timeout=60)
        for _ in storage.stub.GetObject(pb.GetObjectRequest(key="warm/up"), timeout=60):
            pass
        baseline = _rss_bytes()
        _reset_peak_rss()

        info = storage.stub.PutObject(put_requests("big/object", (CHUNK for _ in range(size_mib))), timeout=120)
        assert info.size_bytes == size_mib * MIB
        assert info.sha256 == expected.hexdigest()

        received = hashlib.sha256()
        total = 0
        for response in storage.stub.GetObject(pb.GetObjectRequest(key="big/object"), timeout=120):
            if response.WhichOneof("part") == "chunk":
                received.update(response.chunk)
                total += len(response.chunk)
        assert total == size_mib * MIB
        assert received.hexdigest() == expected.hexdigest()

        growth = _peak_rss_bytes() - baseline
        print(f"{backend}: {size_mib} MiB streamed in and out, peak RSS growth {growth / MIB:.1f} MiB")
        # Holding the object would cost >= its size; gRPC buffers and minio's 8 MiB part stay well below.
        assert growth < 48 * MIB
    finally:
        storage.channel.close()
        storage.server.stop(0)
