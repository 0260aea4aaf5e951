"""Uploads broken off half-way, through the edge:

- storage killed in the middle of an upload: the client gets a 503 JSON error, no partial object survives a
  restart, and the next upload works (kills the session `stack`'s storage process, restarting it in `finally`);
- the client going away mid-body, on each way the gateway learns that a body is complete (REST with a
  Content-Length, REST chunked, gRPC): the upload is discarded, never stored truncated.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from google.api import httpbody_pb2
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.gateway.v1 import gateway_service_pb2_grpc as public_grpc

from devtools.stack.stack import Stack
from tests.e2e_client import RestClient
from tests.plugins.figures import Figures
from tests.plugins.stack import API_KEYS, stored_objects

pytestmark = pytest.mark.integration

CHUNK = b"%" * (64 * 1024)
# Bounds of the slow body: how long it waits for the kill, and how much it sends after it.
MAX_CHUNKS_BEFORE_KILL = 1600  # 100 MiB at most, never reached: storage is killed after ~1 MiB
CHUNKS_AFTER_KILL = 320  # 20 MiB the gateway must read (or refuse) after storage died


def _temporaries(stack: Stack) -> list[str]:
    return sorted(name for name in stored_objects(stack) if name.rsplit("/", 1)[-1].startswith(".tmp-"))


@dataclass
class SlowBody:
    """A PDF-looking body sent a chunk at a time, until `killed` is set and some more has followed."""

    killed: threading.Event = field(default_factory=threading.Event)
    sent: int = 0
    sent_at_kill: int = 0

    def __iter__(self) -> Iterator[bytes]:
        yield b"%PDF-1.7\n"
        for _ in range(MAX_CHUNKS_BEFORE_KILL):
            if self.killed.is_set():
                break
            self.sent += len(CHUNK)
            yield CHUNK
            time.sleep(0.01)
        self.sent_at_kill = self.sent
        for _ in range(CHUNKS_AFTER_KILL):
            self.sent += len(CHUNK)
            yield CHUNK


def _kill_storage_once_writing(stack: Stack, body: SlowBody, failures: list[str]) -> None:
    """Waits (bounded) until storage holds a temporary file of the upload, then kills storage."""
    deadline = time.monotonic() + 30
    while not _temporaries(stack) or body.sent < 1024 * 1024:
        if time.monotonic() > deadline:
            failures.append("the upload never reached storage")
            body.killed.set()
            return
        time.sleep(0.02)
    stack.kill_service("storage")
    body.killed.set()


def test_storage_killed_mid_upload_is_503_and_leaves_nothing(stack: Stack, figures: Figures) -> None:
    client = RestClient(stack.url, API_KEYS["acme"])
    body = SlowBody()
    failures: list[str] = []
    killer = threading.Thread(target=_kill_storage_once_writing, args=(stack, body, failures), daemon=True)
    started = time.monotonic()
    killer.start()
    try:
        reply = client.upload(body, filename="slow.pdf")
        replied_after = time.monotonic() - started
        killer.join(timeout=35)
        assert not failures, failures
        left_while_down = _temporaries(stack)
    finally:
        killer.join(timeout=35)
        stack.start_service("storage")
    info = reply.assert_error(503, 14, "DEPENDENCY_UNAVAILABLE", "gateway.pdfsmaller")
    assert info["metadata"]["dependency"] == "storage"
    left_after_restart = _temporaries(stack)
    assert left_after_restart == []

    next_started = time.monotonic()
    deadline = next_started + 30
    source = b"%PDF-1.4\n" + b"1 0 obj << >> endobj\n" * 10 + b"%%EOF\n"
    while (again := client.upload(source, filename="after.pdf")).status == 503:
        assert time.monotonic() < deadline, again.body
        time.sleep(0.2)
    assert again.status != 503
    assert again.status in (200, 400), again.body  # a job, or a scanner verdict: storage took it
    figures.add(
        "storage killed mid-upload",
        f"{body.sent_at_kill / 2**20:.1f} MiB sent at the kill, "
        f"{body.sent / 2**20:.1f} MiB in all; reply {reply.status} {reply.reason()} after {replied_after:.1f} s; "
        f"partial objects while storage was down {len(left_while_down)}, after restart {len(left_after_restart)}; "
        f"next upload {again.status} after {time.monotonic() - next_started:.1f} s",
    )


# --- The client going away mid-body ---------------------------------------------------------------

DROP_CHUNK = b"%" * (64 * 1024)
# What the client sends before it goes away (at most; it goes once storage is writing the upload).
MAX_CHUNKS_BEFORE_DROP = 320
DECLARED_BYTES = 50 * 1024 * 1024  # a Content-Length far beyond what is ever sent
DROPS_PER_WAY = 12


def _aborted_uploads(stack: Stack) -> float:
    """The gateway's count of uploads refused UPLOAD_ABORTED (its /metrics)."""
    url = f"http://127.0.0.1:{stack.service('gateway').metrics_port}/metrics"
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    prefix = 'gateway_uploads_total{outcome="UPLOAD_ABORTED"} '
    return next((float(line.removeprefix(prefix)) for line in body.splitlines() if line.startswith(prefix)), 0.0)


def _until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds:.0f} s"
        time.sleep(0.02)


def _send_until_stored(send: Callable[[bytes], None], stack: Stack) -> None:
    """Send the body a chunk at a time until storage writes the upload (then a little more)."""
    send(b"%PDF-1.7\n")
    for count in range(MAX_CHUNKS_BEFORE_DROP):
        send(DROP_CHUNK)
        if count >= 16 and _temporaries(stack):
            return
        time.sleep(0.005)
    pytest.fail("the upload never reached storage")


def _drop_rest_upload(stack: Stack, chunked: bool) -> None:
    host, port = stack.url.removeprefix("http://").rsplit(":", 1)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {DECLARED_BYTES}"
    head = (
        f"POST /v1/jobs?filename=dropped.pdf HTTP/1.1\r\nHost: {host}\r\nx-api-key: {API_KEYS['acme']}\r\n"
        f"Content-Type: application/pdf\r\n{framing}\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(head.encode())

        def send(data: bytes) -> None:
            connection.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)

        _send_until_stored(send, stack)
    # Closed without the rest of the body (or the last chunk): Envoy resets the gateway's stream.


def _drop_grpc_upload(stack: Stack) -> None:
    sent: list[bytes] = []
    dropped = threading.Event()

    def requests() -> Iterator[public.CreateJobRequest]:
        yield public.CreateJobRequest(filename="dropped.pdf")
        while not dropped.is_set():
            while sent:
                yield public.CreateJobRequest(file=httpbody_pb2.HttpBody(data=sent.pop(0)))
            time.sleep(0.002)

    with grpc.insecure_channel(stack.url.removeprefix("http://")) as channel:
        stub = public_grpc.GatewayServiceStub(channel)
        call = stub.CreateJob.future(requests(), metadata=[("x-api-key", API_KEYS["acme"])], timeout=60)
        _send_until_stored(sent.append, stack)
        call.cancel()
        dropped.set()


@pytest.mark.parametrize("attempt", range(DROPS_PER_WAY))
@pytest.mark.parametrize("way", ["content-length", "chunked", "grpc"])
def test_a_client_gone_mid_body_leaves_nothing_stored(stack: Stack, way: str, attempt: int) -> None:
    """Content-Length: the gateway sees fewer bytes than declared. Chunked and gRPC carry no length: the
    gateway's settle check sees the cancel. Either way storage gets no finish message and keeps nothing.

    Repeated: most drops reach the gateway as an error from the request stream, which no check is needed
    for; the checks matter when the stream just ends, as for a complete body (about 1 drop in 4).
    """
    client = RestClient(stack.url, API_KEYS["acme"])
    jobs_before = _newest_jobs(client)
    inputs_before = _stored_inputs(stack)
    aborted_before = _aborted_uploads(stack)
    if way == "grpc":
        _drop_grpc_upload(stack)
    else:
        _drop_rest_upload(stack, chunked=way == "chunked")
    _until(lambda: _aborted_uploads(stack) > aborted_before, "the gateway refusing the upload UPLOAD_ABORTED")
    _until(lambda: not _temporaries(stack), "storage removing its temporary file")
    assert _stored_inputs(stack) - inputs_before == set()
    assert _newest_jobs(client) - jobs_before == set()


def _stored_inputs(stack: Stack) -> set[str]:
    """Uploads kept by storage (outputs of other tests' jobs may still come in meanwhile)."""
    return {name for name in stored_objects(stack) if name.startswith("inputs/")}


def _newest_jobs(client: RestClient) -> set[str]:
    """The tenant's newest jobs (a job created meanwhile would be among them)."""
    reply = client.request("GET", "/v1/jobs?page_size=20")
    assert reply.status == 200, reply.body
    return {job["id"] for job in reply.json().get("jobs", [])}
