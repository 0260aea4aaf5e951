"""ApiKeyService: the tenants' API keys, managed by operators (behind services.jobs.operator_auth).

The secret of a key is in the CreatedApiKey answer only; the operator gate's audit line logs the
request (which holds none) and never the answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.message import Message
from pdfsmaller.jobs.v1 import api_key_service_pb2 as pb
from pdfsmaller.jobs.v1 import api_key_service_pb2_grpc as pb_grpc
from pdfsmaller.jobs.v1 import api_keys_pb2 as keys_pb

from libs.errors import InvalidArgument
from libs.proto_time import timestamp
from services.jobs.api_keys import ApiKeyRecord, ApiKeyStore, Identity, NewApiKey, Scope, checked_tenant

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SCOPE_NAMES = {
    keys_pb.API_KEY_SCOPE_UPLOAD: Scope.UPLOAD,
    keys_pb.API_KEY_SCOPE_READ: Scope.READ,
    keys_pb.API_KEY_SCOPE_DELETE: Scope.DELETE,
}
SCOPE_NUMBERS = {scope: number for number, scope in SCOPE_NAMES.items()}


def scopes_from_proto(numbers: list[int]) -> list[Scope]:
    unknown = [number for number in numbers if number not in SCOPE_NAMES]
    if unknown:
        raise InvalidArgument("INVALID_API_KEY_SCOPE", "scopes are API_KEY_SCOPE_UPLOAD, _READ or _DELETE")
    return [SCOPE_NAMES[number] for number in numbers]  # type: ignore[index]


def _optional_time(message: Message, field: str) -> datetime | None:
    return getattr(message, field).ToDatetime(tzinfo=UTC) if message.HasField(field) else None


def key_to_proto(record: ApiKeyRecord) -> pb.ApiKey:
    key = pb.ApiKey(
        id=record.id,
        tenant=record.tenant,
        name=record.name,
        scopes=[SCOPE_NUMBERS[scope] for scope in record.scopes],
        create_time=timestamp(record.created_at),
        rotated_from_id=record.rotated_from or "",
    )
    for field, value in (
        ("expire_time", record.expire_at),
        ("last_used_time", record.last_used_at),
        ("revoke_time", record.revoked_at),
    ):
        if value is not None:
            getattr(key, field).CopyFrom(timestamp(value))
    return key


def _created(new: NewApiKey) -> pb.CreatedApiKey:
    return pb.CreatedApiKey(key=key_to_proto(new.record), secret=new.key)


def _filter_digest(request: pb.ListApiKeysRequest) -> str:
    """Binds a page token to the filter it was made for: another filter's token is refused."""
    return hashlib.sha256(f"{request.tenant}\0{request.include_inactive}".encode()).hexdigest()[:16]


def encode_page_token(record: ApiKeyRecord, request: pb.ListApiKeysRequest) -> str:
    micros = (record.created_at - _EPOCH) // timedelta(microseconds=1)
    raw = json.dumps({"c": micros, "i": record.id, "f": _filter_digest(request)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(request: pb.ListApiKeysRequest) -> tuple[datetime, str]:
    token = request.page_token
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = _EPOCH + timedelta(microseconds=int(data["c"])), str(data["i"])
        valid = data["f"] == _filter_digest(request)
    except (binascii.Error, ValueError, KeyError, TypeError, OverflowError):
        valid = False
    if not valid:
        raise InvalidArgument("INVALID_PAGE_TOKEN", "page_token is not one this listing returned")
    return after


class ApiKeyServicer(pb_grpc.ApiKeyServiceServicer):
    def __init__(self, store: ApiKeyStore) -> None:
        self._store = store

    def CreateApiKey(self, request: pb.CreateApiKeyRequest, context: grpc.ServicerContext) -> pb.CreatedApiKey:
        return _created(
            self._store.create(
                request.tenant,
                request.name,
                scopes_from_proto(list(request.scopes)),
                _optional_time(request, "expire_time"),
            )
        )

    def ListApiKeys(self, request: pb.ListApiKeysRequest, context: grpc.ServicerContext) -> pb.ListApiKeysResponse:
        if request.page_size < 0:
            raise InvalidArgument("INVALID_PAGE_SIZE", "page_size must not be negative")
        if request.tenant:
            checked_tenant(request.tenant)
        page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = decode_page_token(request) if request.page_token else None
        keys, more = self._store.list_keys(request.tenant, request.include_inactive, page_size, after)
        response = pb.ListApiKeysResponse(keys=[key_to_proto(key) for key in keys])
        if more and keys:
            response.next_page_token = encode_page_token(keys[-1], request)
        return response

    def RotateApiKey(self, request: pb.RotateApiKeyRequest, context: grpc.ServicerContext) -> pb.CreatedApiKey:
        grace = request.grace_period.ToTimedelta() if request.HasField("grace_period") else None
        new, replaced = self._store.rotate(request.id, grace, _optional_time(request, "expire_time"))
        created = _created(new)
        created.replaced.CopyFrom(key_to_proto(replaced))
        return created

    def RevokeApiKey(self, request: pb.RevokeApiKeyRequest, context: grpc.ServicerContext) -> pb.ApiKey:
        return key_to_proto(self._store.revoke(request.id))


def identity_to_proto(identity: Identity) -> keys_pb.ApiKeyIdentity:
    """JobsService.AuthenticateApiKey's answer."""
    return keys_pb.ApiKeyIdentity(
        key_id=identity.key_id,
        tenant=identity.tenant,
        scopes=[SCOPE_NUMBERS[scope] for scope in identity.scopes],
        cache_until=timestamp(identity.cache_until),
    )
