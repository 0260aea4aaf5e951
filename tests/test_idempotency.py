"""Idempotent uploads end to end (AIP-155), REST through Envoy: a retry with the same request_id,
file and options gets the first job and stores nothing; any other file or options is 409."""

from __future__ import annotations

import re
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.stack.stack import Stack
from tests.e2e_client import RestClient
from tests.plugins.stack import API_KEYS, stored_objects

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data"
FORM = (DATA / "pypdf__libreoffice-form.pdf").read_bytes()
JPEG = (DATA / "pypdf__jpeg.pdf").read_bytes()
GATEWAY_DOMAIN = "gateway.pdfsmaller"


def _inputs(stack: Stack) -> set[str]:
    """Uploads held by storage, complete or being written (the compressor's outputs left out)."""
    return {name for name in stored_objects(stack) if name.startswith("inputs/")}


def _request_id() -> str:
    return f"retry-{uuid.uuid4().hex}"


def _objects_written(stack: Stack) -> float:
    """Storage's count of objects it stored (a copy stored and deleted again counts too)."""
    port = stack.service("storage").metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return float(re.search(r"^storage_objects_written_total (\S+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]


def test_same_request_id_same_file_gets_the_same_job_and_stores_nothing(stack: Stack) -> None:
    client = RestClient(stack.url, API_KEYS["acme"])
    request_id = _request_id()
    first = client.create(FORM, filename="form.pdf", level="high", request_id=request_id)
    client.wait(first["id"])  # the compressor's output is stored: nothing else writes now
    inputs, written = _inputs(stack), _objects_written(stack)
    again = client.create(FORM, filename="form.pdf", level="high", request_id=request_id)
    assert again["id"] == first["id"]
    assert again["input_sha256"] == first["input_sha256"]
    assert (_inputs(stack), _objects_written(stack)) == (inputs, written)


@pytest.mark.parametrize(
    ("source", "options"),
    [(JPEG, {"level": "high"}), (FORM, {"level": "low"}), (FORM, {"level": "high", "grayscale": "true"})],
    ids=["other-file", "other-level", "other-option"],
)
def test_reused_request_id_is_409_and_stores_nothing(stack: Stack, source: bytes, options: dict[str, str]) -> None:
    client = RestClient(stack.url, API_KEYS["acme"])
    request_id = _request_id()
    client.create(FORM, filename="form.pdf", level="high", request_id=request_id)
    inputs = _inputs(stack)
    reply = client.upload(source, filename="form.pdf", request_id=request_id, **options)
    reply.assert_error(409, 6, "REQUEST_ID_REUSED", GATEWAY_DOMAIN)
    assert _inputs(stack) == inputs


def test_the_same_request_id_of_another_tenant_is_its_own_job(stack: Stack) -> None:
    request_id = _request_id()
    acme = RestClient(stack.url, API_KEYS["acme"]).create(FORM, filename="form.pdf", request_id=request_id)
    globex = RestClient(stack.url, API_KEYS["globex"]).create(JPEG, filename="jpeg.pdf", request_id=request_id)
    assert globex["id"] != acme["id"]


def test_a_reused_upload_is_never_written_to_storage(stack: Stack) -> None:
    """Watched while the retry streams: no temporary file or object appears at any point."""
    client = RestClient(stack.url, API_KEYS["acme"])
    request_id = _request_id()
    client.create(FORM, filename="form.pdf", request_id=request_id)
    before = _inputs(stack)
    seen: list[set[str]] = []

    def body() -> Iterator[bytes]:
        yield b"%PDF-1.7\n" + b"%" * (256 * 1024)
        for _ in range(16):  # 4 MiB, looked at every 256 KiB
            seen.append(_inputs(stack) - before)
            yield b"%" * (256 * 1024)

    reply = client.upload(body(), filename="other.pdf", request_id=request_id)
    reply.assert_error(409, 6, "REQUEST_ID_REUSED", GATEWAY_DOMAIN)
    assert len(seen) == 16
    assert all(new == set() for new in seen), seen
    assert _inputs(stack) == before
