"""API keys on the real stack: made with ApiKeyService on the jobs port (operator token), used through
Envoy as a client does, seen by the gateway within seconds of every change, and never in clear in the
database or in a log."""

from __future__ import annotations

import io
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pikepdf
import psycopg
import pytest
from google.protobuf import duration_pb2
from pdfsmaller.jobs.v1 import api_key_service_pb2 as pb
from pdfsmaller.jobs.v1 import api_key_service_pb2_grpc as pb_grpc
from pdfsmaller.jobs.v1 import api_keys_pb2 as keys_pb

from devtools.stack.stack import Stack
from tests.e2e_client import Reply, RestClient

pytestmark = pytest.mark.integration

# The gateway caches an answer for 5 s (services/jobs/api_keys.py); a loaded machine adds some.
SEEN_WITHIN_SECONDS = 15.0
# Long enough for the three calls made within it on a loaded machine.
GRACE_SECONDS = 8


class Operator:
    """ApiKeyService as an operator's grpcurl reaches it: the jobs port, a bearer token."""

    def __init__(self, stack: Stack) -> None:
        self._channel = grpc.insecure_channel(stack.service("jobs").address)
        self._stub = pb_grpc.ApiKeyServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {stack.operator_token}"),)

    def create(self, tenant: str, *scopes: keys_pb.ApiKeyScope.ValueType) -> pb.CreatedApiKey:
        request = pb.CreateApiKeyRequest(tenant=tenant, name="e2e", scopes=list(scopes))
        return self._stub.CreateApiKey(request, metadata=self._metadata, timeout=10)

    def rotate(self, key_id: str, grace_seconds: int) -> pb.CreatedApiKey:
        grace = duration_pb2.Duration(seconds=grace_seconds)
        request = pb.RotateApiKeyRequest(id=key_id, grace_period=grace)
        return self._stub.RotateApiKey(request, metadata=self._metadata, timeout=10)

    def revoke(self, key_id: str) -> pb.ApiKey:
        return self._stub.RevokeApiKey(pb.RevokeApiKeyRequest(id=key_id), metadata=self._metadata, timeout=10)

    def close(self) -> None:
        self._channel.close()


@pytest.fixture
def operator(stack: Stack) -> Iterator[Operator]:
    operator = Operator(stack)
    try:
        yield operator
    finally:
        operator.close()


def _tenant() -> str:
    return f"keys-{secrets.token_hex(4)}"


def _pdf() -> bytes:
    pdf = pikepdf.new()
    pdf.add_blank_page()
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def _until(check: Callable[[], bool], what: str, timeout: float = SEEN_WITHIN_SECONDS) -> float:
    """Seconds until `check()` held (polled), failing after `timeout`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, what
        time.sleep(0.2)
    return time.monotonic() - started


def _list_jobs(stack: Stack, key: str) -> Reply:
    return RestClient(stack.url, key).request("GET", "/v1/jobs")


def test_a_created_key_uploads_through_envoy_as_its_tenant(stack: Stack, operator: Operator) -> None:
    tenant = _tenant()
    created = operator.create(tenant)
    client = RestClient(stack.url, created.secret)
    # At once: the gateway has no answer cached for a key it never saw.
    reply = client.upload(_pdf(), filename="keyed.pdf")
    assert reply.status == 200, (reply.status, reply.body)
    job = reply.json()
    assert any(listed["id"] == job["id"] for listed in client.request("GET", "/v1/jobs").json()["jobs"])
    # Another tenant's key does not see it.
    other = RestClient(stack.url, operator.create(_tenant()).secret)
    assert other.request("GET", f"/v1/jobs/{job['id']}").status == 404


def test_a_read_only_key_cannot_upload(stack: Stack, operator: Operator) -> None:
    created = operator.create(_tenant(), keys_pb.API_KEY_SCOPE_READ)
    client = RestClient(stack.url, created.secret)
    refused = client.upload(_pdf(), filename="refused.pdf")
    info = refused.assert_error(403, 7, "API_KEY_SCOPE_MISSING", "gateway.pdfsmaller")
    assert info["metadata"] == {"scope": "upload"}
    assert client.request("GET", "/v1/jobs").status == 200
    deleted = client.request("DELETE", "/v1/jobs/00000000-0000-4000-8000-000000000000")
    assert (deleted.status, deleted.reason()) == (403, "API_KEY_SCOPE_MISSING")


def test_a_revoked_key_is_refused_within_seconds(stack: Stack, operator: Operator) -> None:
    created = operator.create(_tenant())
    assert _list_jobs(stack, created.secret).status == 200
    operator.revoke(created.key.id)
    _until(lambda: _list_jobs(stack, created.secret).status == 401, "the revoked key still works")
    reply = _list_jobs(stack, created.secret)
    reply.assert_error(401, 16, "API_KEY_INVALID", "gateway.pdfsmaller")


def test_a_rotated_key_overlaps_with_its_successor_for_the_grace_period(stack: Stack, operator: Operator) -> None:
    old = operator.create(_tenant())
    assert _list_jobs(stack, old.secret).status == 200  # cached by the gateway from now on
    rotated = operator.rotate(old.key.id, GRACE_SECONDS)
    grace_ends = rotated.replaced.expire_time.ToSeconds()
    assert rotated.replaced.id == old.key.id
    assert _list_jobs(stack, rotated.secret).status == 200
    assert _list_jobs(stack, old.secret).status == 200
    assert time.time() < grace_ends  # both worked within the grace period
    _until(lambda: _list_jobs(stack, old.secret).status == 401, "the old key outlived its grace period")
    assert time.time() >= grace_ends
    assert _list_jobs(stack, rotated.secret).status == 200


def _database_dump(stack: Stack) -> str:
    with psycopg.connect(stack.service("jobs").env["DATABASE_URL"], autocommit=True) as conn:
        rows = conn.execute(b"SELECT api_keys::text FROM api_keys").fetchall()
    return "\n".join(row[0] for row in rows)


def _files_holding(folder: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found.extend(f"{path}: {needle[:8]!r}..." for needle in needles if needle in data)
    return found


def test_no_key_is_in_clear_in_the_database_or_any_log(stack: Stack, operator: Operator) -> None:
    tenant = _tenant()
    used = operator.create(tenant)
    client = RestClient(stack.url, used.secret)
    assert client.upload(_pdf(), filename="logged.pdf").status == 200
    read_only = operator.create(tenant, keys_pb.API_KEY_SCOPE_READ)
    assert RestClient(stack.url, read_only.secret).upload(_pdf(), filename="refused.pdf").status == 403
    rotated = operator.rotate(used.key.id, 0)
    revoked = operator.revoke(rotated.key.id)
    assert revoked.HasField("revoke_time")
    _until(lambda: client.request("GET", "/v1/jobs").status == 401, "the expired key still works")
    keys = [used.secret, read_only.secret, rotated.secret]
    dump = _database_dump(stack)
    assert used.key.id in dump  # the rows are there, by their public ids
    secrets_only = [key.split("_", 2)[2] for key in keys]
    assert not [secret for secret in secrets_only if secret in dump]
    time.sleep(1)  # log lines written by now
    logs = stack.data_dir / "logs"
    # The scan reads the real logs: they name the keys, by their public ids.
    assert _files_holding(logs, [used.key.id.encode()])
    needles = [secret.encode() for secret in secrets_only]
    assert _files_holding(logs, needles) == []
    # Nor anywhere PostgreSQL writes (tables, WAL, its own log): the secret never reaches it at all.
    assert _files_holding(stack.data_dir / "postgres", needles) == []
