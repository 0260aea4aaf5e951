"""StorageService over a real gRPC server, against both backends (local fs and S3 via moto)."""

from __future__ import annotations

import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pdfsmaller.storage.v1 import storage_service_pb2 as pb
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as pb_grpc

from libs.errors import reason_of
from services.storage.app import SERVICE_NAME, build
from services.storage.settings import StorageSettings
from services.storage.tests.helpers import (
    StorageUnderTest,
    finish_of,
    get_all,
    plain_channel,
    put_requests,
    sha256,
    start,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageUnderTest]:
    endpoint = request.getfixturevalue("s3_endpoint") if request.param == "s3" else None
    under_test = start(request.param, tmp_path, endpoint, bucket=f"test-{uuid.uuid4().hex[:12]}")
    try:
        yield under_test
    finally:
        under_test.channel.close()
        under_test.server.stop(0)


def test_put_get_stat_delete_round_trip(storage: StorageUnderTest) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    pieces = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
    info = storage.stub.PutObject(put_requests("jobs/abc/input.pdf", pieces), timeout=60)
    assert (info.key, info.size_bytes, info.sha256, info.content_type) == (
        "jobs/abc/input.pdf",
        len(data),
        sha256(data),
        "application/pdf",
    )

    got, chunks = get_all(storage.stub, "jobs/abc/input.pdf")
    assert got == info
    assert b"".join(chunks) == data
    # Every chunk but the last is within the contract's 256 KiB..1 MiB.
    assert all(256 * 1024 <= len(c) <= 1024 * 1024 for c in chunks[:-1])
    assert storage.stub.StatObject(pb.StatObjectRequest(key="jobs/abc/input.pdf"), timeout=10) == info

    storage.stub.DeleteObject(pb.DeleteObjectRequest(key="jobs/abc/input.pdf"), timeout=10)
    with pytest.raises(grpc.RpcError) as raised:
        storage.stub.StatObject(pb.StatObjectRequest(key="jobs/abc/input.pdf"), timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(raised.value) == "OBJECT_NOT_FOUND"
    assert storage.leftovers() == []


def test_empty_object_and_default_content_type(storage: StorageUnderTest) -> None:
    info = storage.stub.PutObject(put_requests("empty", [], content_type=""), timeout=10)
    assert info.size_bytes == 0
    assert info.sha256 == sha256(b"")
    assert info.content_type == "application/octet-stream"
    got, chunks = get_all(storage.stub, "empty")
    assert got.size_bytes == 0
    assert b"".join(chunks) == b""


def test_key_and_its_prefix_can_both_be_objects(storage: StorageUnderTest) -> None:
    storage.stub.PutObject(put_requests("a", [b"parent"]), timeout=10)
    storage.stub.PutObject(put_requests("a/b", [b"child"]), timeout=10)
    assert b"".join(get_all(storage.stub, "a")[1]) == b"parent"
    assert b"".join(get_all(storage.stub, "a/b")[1]) == b"child"


def test_overwrite_replaces_object(storage: StorageUnderTest) -> None:
    storage.stub.PutObject(put_requests("k", [b"old"]), timeout=10)
    info = storage.stub.PutObject(put_requests("k", [b"new", b"er"], content_type="text/plain"), timeout=10)
    assert storage.stub.StatObject(pb.StatObjectRequest(key="k"), timeout=10) == info
    assert b"".join(get_all(storage.stub, "k")[1]) == b"newer"


def test_first_message_must_be_header(storage: StorageUnderTest) -> None:
    for requests in ([pb.PutObjectRequest(chunk=b"data")], [finish_of(0, sha256(b""))], []):
        with pytest.raises(grpc.RpcError) as raised:
            storage.stub.PutObject(iter(requests), timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(raised.value) == "MISSING_HEADER"


def test_second_header_is_refused_and_nothing_stored(storage: StorageUnderTest) -> None:
    requests = [
        pb.PutObjectRequest(header=pb.PutObjectHeader(key="twice")),
        pb.PutObjectRequest(chunk=b"x"),
        pb.PutObjectRequest(header=pb.PutObjectHeader(key="other")),
    ]
    with pytest.raises(grpc.RpcError) as raised:
        storage.stub.PutObject(iter(requests), timeout=10)
    assert reason_of(raised.value) == "UNEXPECTED_HEADER"
    assert storage.leftovers() == []


def _header(key: str) -> pb.PutObjectRequest:
    return pb.PutObjectRequest(header=pb.PutObjectHeader(key=key))


@pytest.mark.parametrize(
    ("ending", "reason"),
    [
        ([], "UPLOAD_INCOMPLETE"),  # half-closed without the finish: an abandoned upload
        ([finish_of(7, sha256(b"partial"))], "UPLOAD_SIZE_MISMATCH"),
        ([finish_of(8, sha256(b"partial!"))], "UPLOAD_CHECKSUM_MISMATCH"),
        ([finish_of(8, sha256(b"partial?").upper())], "UPLOAD_CHECKSUM_MISMATCH"),  # lower-case hex only
        ([finish_of(8, sha256(b"partial?")), pb.PutObjectRequest(chunk=b"more")], "UNEXPECTED_MESSAGE"),
    ],
)
def test_upload_is_stored_only_with_a_matching_finish(
    storage: StorageUnderTest, ending: list[pb.PutObjectRequest], reason: str
) -> None:
    storage.stub.PutObject(put_requests("kept", [b"original"]), timeout=10)
    requests = [_header("kept"), pb.PutObjectRequest(chunk=b"part"), pb.PutObjectRequest(chunk=b"ial?"), *ending]
    with pytest.raises(grpc.RpcError) as raised:
        storage.stub.PutObject(iter(requests), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(raised.value) == reason
    assert b"".join(get_all(storage.stub, "kept")[1]) == b"original"
    assert storage.leftovers() in (["kept"], ["kept@object"])


def test_finish_counts_every_chunk(storage: StorageUnderTest) -> None:
    requests = [_header("whole"), pb.PutObjectRequest(chunk=b"part"), pb.PutObjectRequest(chunk=b"ial?")]
    info = storage.stub.PutObject(iter([*requests, finish_of(8, sha256(b"partial?"))]), timeout=10)
    assert (info.size_bytes, info.sha256) == (8, sha256(b"partial?"))


@pytest.mark.parametrize("key", ["", "../etc/passwd", "/abs", "A", "a/../../b"])
def test_invalid_keys_are_refused_by_every_rpc(storage: StorageUnderTest, key: str) -> None:
    calls = [
        lambda: storage.stub.PutObject(put_requests(key, [b"x"]), timeout=10),
        lambda: list(storage.stub.GetObject(pb.GetObjectRequest(key=key), timeout=10)),
        lambda: storage.stub.StatObject(pb.StatObjectRequest(key=key), timeout=10),
        lambda: storage.stub.DeleteObject(pb.DeleteObjectRequest(key=key), timeout=10),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as raised:
            call()
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(raised.value) == "INVALID_KEY"


def test_too_large_is_refused_leaves_nothing_and_keeps_existing_object(storage: StorageUnderTest) -> None:
    storage.stub.PutObject(put_requests("keep", [b"original"]), timeout=10)
    chunk = b"z" * 65536
    with pytest.raises(grpc.RpcError) as raised:
        storage.stub.PutObject(put_requests("big", [chunk] * 20, max_size_bytes=1_000_000), timeout=30)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(raised.value) == "OBJECT_TOO_LARGE"
    with pytest.raises(grpc.RpcError) as raised:
        storage.stub.PutObject(put_requests("keep", [chunk] * 20, max_size_bytes=1_000_000), timeout=30)
    assert reason_of(raised.value) == "OBJECT_TOO_LARGE"
    assert b"".join(get_all(storage.stub, "keep")[1]) == b"original"
    leftovers = storage.leftovers()
    assert leftovers in (["keep"], ["keep@object"])


def test_exactly_max_size_is_accepted(storage: StorageUnderTest) -> None:
    info = storage.stub.PutObject(put_requests("exact", [b"12345", b"67890"], max_size_bytes=10), timeout=10)
    assert info.size_bytes == 10


def test_missing_object_is_not_found(storage: StorageUnderTest) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        list(storage.stub.GetObject(pb.GetObjectRequest(key="nope/missing"), timeout=10))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(raised.value) == "OBJECT_NOT_FOUND"


def test_delete_is_idempotent(storage: StorageUnderTest) -> None:
    storage.stub.DeleteObject(pb.DeleteObjectRequest(key="never/was"), timeout=10)
    storage.stub.PutObject(put_requests("d/e", [b"x"]), timeout=10)
    storage.stub.DeleteObject(pb.DeleteObjectRequest(key="d/e"), timeout=10)
    storage.stub.DeleteObject(pb.DeleteObjectRequest(key="d/e"), timeout=10)
    assert storage.leftovers() == []


@pytest.mark.parametrize("attempt", range(5))
def test_client_disconnect_mid_upload_leaves_nothing(storage: StorageUnderTest, attempt: int) -> None:
    # Repeated at several points: before the finish message a cancel can only abandon the upload.
    sent_some = threading.Event()
    release = threading.Event()

    def requests() -> Iterator[pb.PutObjectRequest]:
        yield pb.PutObjectRequest(header=pb.PutObjectHeader(key="abandoned/upload.pdf"))
        for _ in range(8):
            yield pb.PutObjectRequest(chunk=b"q" * 65536)
        sent_some.set()
        release.wait(10)

    future = storage.stub.PutObject.future(requests(), timeout=30)
    assert sent_some.wait(10)
    time.sleep(0.05 * attempt)  # cancel at different points: before and after the server wrote the chunks
    future.cancel()
    release.set()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    time.sleep(0.3)  # let the server finish handling the cancelled call
    assert storage.leftovers() == []
    with pytest.raises(grpc.RpcError) as raised:
        storage.stub.StatObject(pb.StatObjectRequest(key="abandoned/upload.pdf"), timeout=10)
    assert reason_of(raised.value) == "OBJECT_NOT_FOUND"


def test_readiness_is_serving(storage: StorageUnderTest) -> None:
    health = health_pb2_grpc.HealthStub(storage.channel)
    for service in ("", SERVICE_NAME):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_metrics_count_bytes(tmp_path: Path) -> None:
    settings = StorageSettings(listen="127.0.0.1:0", metrics_port=0, backend="local", directory=str(tmp_path), s3=None)
    server = build(settings).start()
    try:
        with plain_channel(server.address) as channel:
            stub = pb_grpc.StorageServiceStub(channel)
            stub.PutObject(put_requests("m", [b"x" * 1000]), timeout=10)
            get_all(stub, "m")
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    finally:
        server.stop(0)
    assert "storage_bytes_written_total 1000.0" in body
    assert "storage_bytes_read_total 1000.0" in body


def test_keys_lists_what_a_prefix_holds_on_both_backends(storage: StorageUnderTest) -> None:
    """The operator tools' listing (backups, sweeps): objects under a prefix, not temporaries or others."""
    for key in ("list/a/input.pdf", "list/a/output.pdf", "list/b/input.pdf", "listing/other.pdf", "list/a"):
        storage.backend.put(key, "application/pdf", [b"%PDF-1.7"], 0)
    assert sorted(storage.backend.keys("list/")) == [
        "list/a",
        "list/a/input.pdf",
        "list/a/output.pdf",
        "list/b/input.pdf",
    ]
    assert sorted(storage.backend.keys("list/a/")) == ["list/a/input.pdf", "list/a/output.pdf"]
    assert sorted(storage.backend.keys("list/a/out")) == ["list/a/output.pdf"]
    assert list(storage.backend.keys("missing/")) == []
    storage.backend.delete("list/a/input.pdf")
    assert sorted(storage.backend.keys("list/a/")) == ["list/a/output.pdf"]
    listed = list(storage.backend.listing("list/a/"))
    assert [item.key for item in listed] == ["list/a/output.pdf"]
    # The time the object was written (the sweep of orphans spares young ones), give or take clock skew.
    assert abs((listed[0].modified_at - datetime.now(UTC)).total_seconds()) < 120
