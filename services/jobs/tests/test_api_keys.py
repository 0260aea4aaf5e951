"""API keys on real PostgreSQL: the store directly, and ApiKeyService / AuthenticateApiKey over a real channel."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from pdfsmaller.jobs.v1 import api_key_service_pb2 as pb
from pdfsmaller.jobs.v1 import api_key_service_pb2_grpc as pb_grpc
from pdfsmaller.jobs.v1 import api_keys_pb2 as keys_pb
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from psycopg_pool import ConnectionPool

from libs.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated, reason_of
from libs.service import RunningService
from services.jobs.api_keys import ALL_SCOPES, DEFAULT_GRACE, ApiKeyStore, Scope
from services.jobs.app import build
from services.jobs.tests.conftest import service_settings

pytestmark = pytest.mark.integration

OPERATOR_TOKEN = "operator-token-0123456789abcdef"


@pytest.fixture
def store(pool: ConnectionPool) -> ApiKeyStore:
    return ApiKeyStore(pool)


def sql(pool: ConnectionPool, query: str, *params: object) -> list[tuple[object, ...]]:
    with pool.connection() as conn:
        cursor = conn.execute(query.encode(), params)
        return cursor.fetchall() if cursor.description is not None else []


def table_dump(pool: ConnectionPool) -> str:
    """Every column of every row, as PostgreSQL prints them (bytea as hex)."""
    return "\n".join(str(row) for row in sql(pool, "SELECT api_keys::text FROM api_keys"))


def test_a_created_key_authenticates_as_its_tenant_with_its_scopes(store: ApiKeyStore) -> None:
    created = store.create("acme", "ci-uploader", [Scope.READ, Scope.UPLOAD, Scope.READ])
    assert created.key.startswith(f"pdfs_{created.record.id}_")
    assert created.record.scopes == (Scope.UPLOAD, Scope.READ)  # canonical order, once each
    identity = store.authenticate(created.key)
    assert (identity.key_id, identity.tenant, identity.scopes) == (
        created.record.id,
        "acme",
        (Scope.UPLOAD, Scope.READ),
    )
    now = datetime.now(UTC)
    assert now < identity.cache_until <= now + timedelta(seconds=6)
    assert store.create("acme", "all").record.scopes == ALL_SCOPES  # no scopes given: every scope


def test_wrong_unknown_and_malformed_keys_are_refused_alike(store: ApiKeyStore) -> None:
    created = store.create("acme", "k")
    prefix, key_id, secret = created.key.split("_", 2)
    other = store.create("acme", "other")
    wrong_secret = f"{prefix}_{key_id}_{other.key.split('_', 2)[2]}"
    unknown_id = f"{prefix}_{'0' * 16}_{secret}"
    for presented in (wrong_secret, unknown_id, created.key + "x", created.key[:-1], "", "acme-key-0123456789abcdef"):
        with pytest.raises(Unauthenticated) as refused:
            store.authenticate(presented)
        assert refused.value.reason == "API_KEY_INVALID"


def test_the_table_never_holds_the_secret(store: ApiKeyStore, pool: ConnectionPool) -> None:
    created = store.create("acme", "k")
    rotated, _ = store.rotate(created.record.id, timedelta(seconds=60))
    dump = table_dump(pool)
    assert created.record.id in dump
    assert rotated.record.id in dump
    for key in (created.key, rotated.key):
        secret = key.split("_", 2)[2]
        assert secret not in dump
        assert secret.encode().hex() not in dump
        for row in sql(pool, "SELECT * FROM api_keys"):
            assert all(secret.encode() not in bytes(value) for value in row if isinstance(value, (bytes, memoryview)))


def test_revoked_keys_are_refused_and_listed_only_as_inactive(store: ApiKeyStore) -> None:
    created = store.create("acme", "k")
    revoked = store.revoke(created.record.id)
    assert revoked.revoked_at is not None
    with pytest.raises(Unauthenticated):
        store.authenticate(created.key)
    assert store.revoke(created.record.id).revoked_at == revoked.revoked_at  # the first revocation stands
    assert store.list_keys("acme", False, 10, None) == ([], False)
    assert [key.id for key in store.list_keys("acme", True, 10, None)[0]] == [created.record.id]
    with pytest.raises(NotFound):
        store.revoke("0" * 16)
    with pytest.raises(InvalidArgument):
        store.revoke("not-an-id")


def test_expiry(store: ApiKeyStore, pool: ConnectionPool) -> None:
    with pytest.raises(InvalidArgument) as past:
        store.create("acme", "k", expire_at=datetime.now(UTC) - timedelta(seconds=1))
    assert past.value.reason == "INVALID_EXPIRE_TIME"
    soon = datetime.now(UTC) + timedelta(seconds=2)
    created = store.create("acme", "k", expire_at=soon)
    # Not cached past its expiry, though the usual cache time is longer.
    assert store.authenticate(created.key).cache_until <= soon
    sql(pool, "UPDATE api_keys SET expire_at = now() - interval '1 second' WHERE id = %s", created.record.id)
    with pytest.raises(Unauthenticated):
        store.authenticate(created.key)
    assert store.list_keys("acme", False, 10, None)[0] == []


def test_rotation_keeps_both_keys_for_the_grace_period_only(store: ApiKeyStore) -> None:
    old = store.create("acme", "ci", [Scope.READ])
    new, replaced = store.rotate(old.record.id, timedelta(seconds=1))
    assert (new.record.tenant, new.record.name, new.record.scopes) == ("acme", "ci", (Scope.READ,))
    assert new.record.rotated_from == old.record.id
    assert new.key != old.key
    assert replaced.expire_at is not None
    assert store.authenticate(old.key).tenant == store.authenticate(new.key).tenant == "acme"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            store.authenticate(old.key)
        except Unauthenticated:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the old key stayed valid after its grace period")
    assert datetime.now(UTC) >= replaced.expire_at
    assert store.authenticate(new.key).key_id == new.record.id


def test_rotation_rules(store: ApiKeyStore) -> None:
    old = store.create("acme", "ci")
    new, replaced = store.rotate(old.record.id)
    assert replaced.expire_at is not None
    assert abs(replaced.expire_at - datetime.now(UTC) - DEFAULT_GRACE) < timedelta(minutes=1)
    with pytest.raises(FailedPrecondition) as twice:
        store.rotate(old.record.id)
    assert twice.value.reason == "API_KEY_ALREADY_ROTATED"
    # A key expiring sooner than the grace keeps its earlier expiry.
    early = store.create("acme", "early", expire_at=datetime.now(UTC) + timedelta(minutes=5))
    assert store.rotate(early.record.id, timedelta(days=2))[1].expire_at == early.record.expire_at
    store.revoke(new.record.id)
    with pytest.raises(FailedPrecondition) as inactive:
        store.rotate(new.record.id)
    assert inactive.value.reason == "API_KEY_INACTIVE"
    with pytest.raises(InvalidArgument) as long_grace:
        store.rotate(early.record.id, timedelta(days=31))
    assert long_grace.value.reason == "INVALID_GRACE_PERIOD"
    with pytest.raises(NotFound):
        store.rotate("f" * 16)


def test_last_used_is_written_at_most_once_a_minute(store: ApiKeyStore, pool: ConnectionPool) -> None:
    created = store.create("acme", "k")

    def last_used() -> object:
        return sql(pool, "SELECT last_used_at FROM api_keys WHERE id = %s", created.record.id)[0][0]

    assert last_used() is None
    store.authenticate(created.key)
    first = last_used()
    assert first is not None
    store.authenticate(created.key)
    assert last_used() == first
    sql(pool, "UPDATE api_keys SET last_used_at = now() - interval '61 seconds' WHERE id = %s", created.record.id)
    store.authenticate(created.key)
    again = last_used()
    assert isinstance(again, datetime)
    assert isinstance(first, datetime)
    assert again >= first


@pytest.mark.parametrize(
    ("tenant", "name", "reason"),
    [
        ("bad tenant", "k", "INVALID_TENANT"),
        ("", "k", "INVALID_TENANT"),
        ("a" * 65, "k", "INVALID_TENANT"),
        ("acme", " ", "INVALID_API_KEY_NAME"),
        ("acme", "n" * 101, "INVALID_API_KEY_NAME"),
        ("acme", "tab\there", "INVALID_API_KEY_NAME"),
    ],
)
def test_tenant_and_name_are_checked(store: ApiKeyStore, tenant: str, name: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        store.create(tenant, name)
    assert refused.value.reason == reason


# --- over gRPC, through the service's own wiring ---------------------------------------------------


@dataclass
class KeysService:
    keys: pb_grpc.ApiKeyServiceStub
    jobs: jobs_grpc.JobsServiceStub
    database_url: str

    def call(self, method: str, request: object, token: str = OPERATOR_TOKEN) -> object:
        return getattr(self.keys, method)(request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)


@pytest.fixture
def keys_service(jobs_database_url: str, redis_url: str, storage_server: RunningService) -> Iterator[KeysService]:
    settings = service_settings(
        jobs_database_url,
        redis_url,
        storage_server.address,
        database_pool_size=4,
        max_workers=16,
        operator_tokens={"oncall": OPERATOR_TOKEN},
    )
    service = build(settings, event_prefix=f"test-{uuid.uuid4().hex}")
    service.spec.metrics_port = None
    running = service.start()
    channel = grpc.insecure_channel(running.address)
    try:
        yield KeysService(pb_grpc.ApiKeyServiceStub(channel), jobs_grpc.JobsServiceStub(channel), jobs_database_url)
    finally:
        channel.close()
        running.stop(0)


def _rpc_error(call: object) -> grpc.RpcError:
    assert callable(call)
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_the_api_end_to_end_never_logs_a_secret(keys_service: KeysService, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    expire = timestamp_pb2.Timestamp()
    expire.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    created = keys_service.call(
        "CreateApiKey",
        pb.CreateApiKeyRequest(tenant="acme", name="ci", scopes=[keys_pb.API_KEY_SCOPE_UPLOAD], expire_time=expire),
    )
    assert isinstance(created, pb.CreatedApiKey)
    assert created.secret.startswith(f"pdfs_{created.key.id}_")
    assert list(created.key.scopes) == [keys_pb.API_KEY_SCOPE_UPLOAD]
    assert created.key.expire_time == expire

    identity = keys_service.jobs.AuthenticateApiKey(
        keys_pb.AuthenticateApiKeyRequest(api_key=created.secret), timeout=10
    )
    assert (identity.key_id, identity.tenant, list(identity.scopes)) == (
        created.key.id,
        "acme",
        [keys_pb.API_KEY_SCOPE_UPLOAD],
    )
    assert identity.cache_until.ToDatetime(tzinfo=UTC) > datetime.now(UTC)

    grace = duration_pb2.Duration(seconds=60)
    rotated = keys_service.call("RotateApiKey", pb.RotateApiKeyRequest(id=created.key.id, grace_period=grace))
    assert isinstance(rotated, pb.CreatedApiKey)
    assert rotated.key.rotated_from_id == created.key.id
    assert rotated.replaced.id == created.key.id
    assert rotated.replaced.expire_time.ToSeconds() - time.time() == pytest.approx(60, abs=10)
    assert not rotated.key.HasField("expire_time")
    revoked = keys_service.call("RevokeApiKey", pb.RevokeApiKeyRequest(id=rotated.key.id))
    assert isinstance(revoked, pb.ApiKey)
    assert revoked.HasField("revoke_time")
    refused = _rpc_error(
        lambda: keys_service.jobs.AuthenticateApiKey(
            keys_pb.AuthenticateApiKeyRequest(api_key=rotated.secret), timeout=10
        )
    )
    assert (refused.code(), reason_of(refused)) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")

    listed = keys_service.call("ListApiKeys", pb.ListApiKeysRequest(tenant="acme", include_inactive=True))
    assert isinstance(listed, pb.ListApiKeysResponse)
    assert [key.id for key in listed.keys] == [rotated.key.id, created.key.id]
    assert listed.keys[1].HasField("last_used_time")

    logged = "\n".join(record.getMessage() + str(getattr(record, "fields", "")) for record in caplog.records)
    assert created.key.id in logged  # the audit and store lines were captured
    for secret in (created.secret, rotated.secret):
        assert secret.split("_", 2)[2] not in logged


def test_the_api_needs_an_operator_token(keys_service: KeysService) -> None:
    request = pb.CreateApiKeyRequest(tenant="acme", name="ci")
    for token in ("", "wrong-token-0123456789abcdef"):
        refused = _rpc_error(lambda token=token: keys_service.call("CreateApiKey", request, token=token))
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    with psycopg.connect(keys_service.database_url) as conn:
        assert conn.execute(b"SELECT count(*) FROM api_keys").fetchone() == (0,)


def test_requests_are_checked(keys_service: KeysService) -> None:
    for request, reason in [
        (
            pb.CreateApiKeyRequest(tenant="acme", name="ci", scopes=[keys_pb.API_KEY_SCOPE_UNSPECIFIED]),
            "INVALID_API_KEY_SCOPE",
        ),
        (pb.CreateApiKeyRequest(tenant="a b", name="ci"), "INVALID_TENANT"),
        (pb.CreateApiKeyRequest(tenant="acme", name=""), "INVALID_API_KEY_NAME"),
    ]:
        refused = _rpc_error(lambda request=request: keys_service.call("CreateApiKey", request))
        assert (refused.code(), reason_of(refused)) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    grace = duration_pb2.Duration(seconds=-1)
    refused = _rpc_error(
        lambda: keys_service.call("RotateApiKey", pb.RotateApiKeyRequest(id="0" * 16, grace_period=grace))
    )
    assert reason_of(refused) == "INVALID_GRACE_PERIOD"
    refused = _rpc_error(lambda: keys_service.call("RevokeApiKey", pb.RevokeApiKeyRequest(id="0" * 16)))
    assert (refused.code(), reason_of(refused)) == (grpc.StatusCode.NOT_FOUND, "API_KEY_NOT_FOUND")


def test_pages_cover_every_key_once_newest_first_and_tokens_are_checked(keys_service: KeysService) -> None:
    made = [keys_service.call("CreateApiKey", pb.CreateApiKeyRequest(tenant="acme", name=f"k{n}")) for n in range(5)]
    keys_service.call("CreateApiKey", pb.CreateApiKeyRequest(tenant="globex", name="other"))
    expected = [created.key.id for created in reversed(made)]  # type: ignore[attr-defined]
    seen: list[str] = []
    token = ""
    for _page in range(10):
        page = keys_service.call("ListApiKeys", pb.ListApiKeysRequest(tenant="acme", page_size=2, page_token=token))
        assert isinstance(page, pb.ListApiKeysResponse)
        seen.extend(key.id for key in page.keys)
        token = page.next_page_token
        if not token:
            break
    assert seen == expected
    everyone = keys_service.call("ListApiKeys", pb.ListApiKeysRequest())
    assert isinstance(everyone, pb.ListApiKeysResponse)
    assert len(everyone.keys) == 6

    first = keys_service.call("ListApiKeys", pb.ListApiKeysRequest(tenant="acme", page_size=2))
    assert isinstance(first, pb.ListApiKeysResponse)
    for request in (
        pb.ListApiKeysRequest(tenant="acme", page_token="not-a-token"),
        pb.ListApiKeysRequest(tenant="acme", page_token=first.next_page_token[:-2]),
        # A token is good for the listing that made it only.
        pb.ListApiKeysRequest(tenant="globex", page_token=first.next_page_token),
        pb.ListApiKeysRequest(tenant="acme", include_inactive=True, page_token=first.next_page_token),
        pb.ListApiKeysRequest(page_size=-1),
    ):
        refused = _rpc_error(lambda request=request: keys_service.call("ListApiKeys", request))
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(refused) in {"INVALID_PAGE_TOKEN", "INVALID_PAGE_SIZE"}
