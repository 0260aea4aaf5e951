"""Storage killed in the middle of an upload: the client gets a 503 JSON error, no partial object
survives a restart, and the next upload works.

Uses the session `stack` and kills its storage process (SIGKILL), restarting it in `finally`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

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
