"""The tenants' API keys in PostgreSQL: created, listed, rotated, revoked, and checked for the gateway.

A key is `pdfs_<id>_<secret>`: `id` is 16 hex characters, public (it names the key in the operator API
and in logs) and the row's primary key, so a check is one lookup; `secret` is 32 random bytes
(base64url). Only a random per-key salt and sha256(salt || secret) are stored, compared in constant time.

No slow KDF (bcrypt, scrypt, argon2): those protect low-entropy passwords against guessing. A 256-bit
random secret cannot be guessed even at the speed of plain SHA-256, while a slow hash would cost CPU on
every uncached gateway check and hand a flood of bad keys a cheap way to exhaust this service.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from libs.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from services.jobs.db import database_errors

log = logging.getLogger(__name__)

KEY_PREFIX = "pdfs_"
ID_BYTES = 8
SECRET_BYTES = 32
SALT_BYTES = 16
# The gateway may reuse an answer this long: how late a revocation can be seen.
DEFAULT_CACHE_SECONDS = 5.0
# last_used_at is written at most this often per key, so checks stay reads.
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_NAME_CHARS = 100
MAX_GRACE = timedelta(days=30)
DEFAULT_GRACE = timedelta(hours=24)
TENANT_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
KEY_ID_PATTERN = re.compile(rf"[0-9a-f]{{{ID_BYTES * 2}}}")
_SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)
_KEY_PATTERN = re.compile(rf"{KEY_PREFIX}({KEY_ID_PATTERN.pattern})_({_SECRET_PATTERN.pattern})")
# Compared against when no row matches, so an unknown id costs about what a wrong secret does.
_NO_SALT = bytes(SALT_BYTES)
_NO_DIGEST = bytes(32)


class Scope(enum.StrEnum):
    """What a key may do at the gateway; stored by these names."""

    UPLOAD = "upload"
    READ = "read"
    DELETE = "delete"


ALL_SCOPES = tuple(Scope)


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    tenant: str
    name: str
    scopes: tuple[Scope, ...]
    created_at: datetime
    expire_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rotated_from: str | None


@dataclass(frozen=True)
class NewApiKey:
    record: ApiKeyRecord
    # The whole key to hand to the client (`pdfs_<id>_<secret>`); exists only in this answer.
    key: str


@dataclass(frozen=True)
class Identity:
    key_id: str
    tenant: str
    scopes: tuple[Scope, ...]
    # The answer stays true until then: a revocation is seen by then, and an expiry exactly at it.
    cache_until: datetime


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("ascii")).digest()


def _new_key() -> tuple[str, str, str]:
    """(id, secret, whole key)."""
    key_id, secret = secrets.token_hex(ID_BYTES), secrets.token_urlsafe(SECRET_BYTES)
    return key_id, secret, f"{KEY_PREFIX}{key_id}_{secret}"


def checked_tenant(tenant: str) -> str:
    if not TENANT_PATTERN.fullmatch(tenant):
        raise InvalidArgument("INVALID_TENANT", "tenant must be 1-64 letters, digits, - or _")
    return tenant


def checked_key_id(key_id: str) -> str:
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise InvalidArgument("INVALID_API_KEY_ID", f"id must be the {ID_BYTES * 2} hex characters of a key's id")
    return key_id


def _checked_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise InvalidArgument("INVALID_API_KEY_NAME", f"name must be 1-{MAX_NAME_CHARS} printable characters")
    return name


def _canonical_scopes(scopes: Iterable[Scope]) -> tuple[Scope, ...]:
    """The scopes in ALL_SCOPES order, each once; none given means all of them."""
    given = set(scopes)
    return tuple(scope for scope in ALL_SCOPES if scope in given) if given else ALL_SCOPES


def checked_grace(grace: timedelta | None) -> timedelta:
    if grace is None:
        return DEFAULT_GRACE
    if not timedelta(0) <= grace <= MAX_GRACE:
        raise InvalidArgument("INVALID_GRACE_PERIOD", f"grace_period must be 0 to {MAX_GRACE.days} days")
    return grace


def _record(row: dict[str, Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        tenant=row["tenant"],
        name=row["name"],
        scopes=tuple(Scope(scope) for scope in row["scopes"]),
        created_at=row["created_at"],
        expire_at=row["expire_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        rotated_from=row["rotated_from"],
    )


def _query(template: str, **parts: sql.Composable) -> sql.Composed:
    """`template` (a constant) with {columns}: every column but the salt and digest, what leaves this
    module; {active}: the key may be used now; and `parts`, themselves made of constants."""
    return sql.SQL(template).format(
        columns=sql.SQL("id, tenant, name, scopes, created_at, expire_at, revoked_at, last_used_at, rotated_from"),
        active=sql.SQL("revoked_at IS NULL AND (expire_at IS NULL OR expire_at > now())"),
        **parts,
    )


_INSERT = _query(
    "INSERT INTO api_keys (id, tenant, name, scopes, salt, secret_sha256, expire_at, rotated_from)"
    " SELECT %(id)s, %(tenant)s, %(name)s, %(scopes)s, %(salt)s, %(digest)s, %(expire_at)s, %(rotated_from)s"
    " WHERE %(expire_at)s::timestamptz IS NULL OR %(expire_at)s::timestamptz > now()"
    " RETURNING {columns}"
)


class ApiKeyStore:
    """API keys on the jobs database; every method is one short transaction from the pool."""

    def __init__(self, pool: ConnectionPool, *, cache_seconds: float = DEFAULT_CACHE_SECONDS) -> None:
        self._pool = pool
        self._cache = timedelta(seconds=cache_seconds)

    def _rows(self, query: sql.Composed, params: dict[str, Any] | tuple[Any, ...]) -> list[dict[str, Any]]:
        with database_errors(), self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description is not None else []

    def create(
        self, tenant: str, name: str, scopes: Collection[Scope] = (), expire_at: datetime | None = None
    ) -> NewApiKey:
        key_id, secret, key = _new_key()
        salt = secrets.token_bytes(SALT_BYTES)
        params = {
            "id": key_id,
            "tenant": checked_tenant(tenant),
            "name": _checked_name(name),
            "scopes": [scope.value for scope in _canonical_scopes(scopes)],
            "salt": salt,
            "digest": _digest(salt, secret),
            "expire_at": expire_at,
            "rotated_from": None,
        }
        rows = self._rows(_INSERT, params)
        if not rows:
            raise InvalidArgument("INVALID_EXPIRE_TIME", "expire_time must be in the future")
        created = NewApiKey(_record(rows[0]), key)
        log.info("API key %s created for tenant %s", key_id, tenant, extra={"fields": _log_fields(created.record)})
        return created

    def get(self, key_id: str) -> ApiKeyRecord:
        rows = self._rows(_query("SELECT {columns} FROM api_keys WHERE id = %s"), (checked_key_id(key_id),))
        if not rows:
            raise NotFound("API_KEY_NOT_FOUND", "no API key has this id")
        return _record(rows[0])

    def list_keys(
        self, tenant: str, include_inactive: bool, page_size: int, after: tuple[datetime, str] | None
    ) -> tuple[list[ApiKeyRecord], bool]:
        """Newest first: a page of keys, and whether more follow. `tenant` "" means every tenant."""
        # Fixed fragments only, chosen by which filters are given; every value is a parameter.
        conditions = [_query("TRUE")]
        params: dict[str, Any] = {"limit": page_size + 1}
        if tenant:
            conditions.append(_query("tenant = %(tenant)s"))
            params["tenant"] = checked_tenant(tenant)
        if not include_inactive:
            conditions.append(_query("{active}"))
        if after is not None:
            conditions.append(_query("(created_at, id) < (%(after_created)s, %(after_id)s)"))
            params["after_created"], params["after_id"] = after
        query = _query(
            "SELECT {columns} FROM api_keys WHERE {where} ORDER BY created_at DESC, id DESC LIMIT %(limit)s",
            where=sql.SQL(" AND ").join(conditions),
        )
        rows = self._rows(query, params)
        return [_record(row) for row in rows[:page_size]], len(rows) > page_size

    def rotate(
        self, key_id: str, grace: timedelta | None = None, expire_at: datetime | None = None
    ) -> tuple[NewApiKey, ApiKeyRecord]:
        """A new key with the old one's tenant, name and scopes; the old one expires after `grace` (or
        its own expiry, if sooner). Returns (new key, old key as it is now)."""
        grace = checked_grace(grace)
        checked_key_id(key_id)
        new_id, secret, key = _new_key()
        salt = secrets.token_bytes(SALT_BYTES)
        with database_errors(), self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                _query(
                    "SELECT {columns}, {active} AS active,"
                    " EXISTS (SELECT 1 FROM api_keys n WHERE n.rotated_from = k.id) AS rotated"
                    " FROM api_keys k WHERE id = %s FOR UPDATE"
                ),
                (key_id,),
            )
            old = cur.fetchone()
            if old is None:
                raise NotFound("API_KEY_NOT_FOUND", "no API key has this id")
            if not old["active"]:
                raise FailedPrecondition("API_KEY_INACTIVE", "the key is revoked or expired; create a new one")
            if old["rotated"]:
                raise FailedPrecondition("API_KEY_ALREADY_ROTATED", "the key was rotated already; rotate its successor")
            params = {
                "id": new_id,
                "tenant": old["tenant"],
                "name": old["name"],
                "scopes": old["scopes"],
                "salt": salt,
                "digest": _digest(salt, secret),
                "expire_at": expire_at,
                "rotated_from": key_id,
            }
            try:
                cur.execute(_INSERT, params)
            except psycopg.errors.UniqueViolation:  # a concurrent rotation of the same key won
                raise FailedPrecondition(
                    "API_KEY_ALREADY_ROTATED", "the key was rotated already; rotate its successor"
                ) from None
            new = cur.fetchone()
            if new is None:
                raise InvalidArgument("INVALID_EXPIRE_TIME", "expire_time must be in the future")
            cur.execute(
                _query(
                    "UPDATE api_keys SET expire_at = LEAST(coalesce(expire_at, 'infinity'), now() + %s)"
                    " WHERE id = %s RETURNING {columns}"
                ),
                (grace, key_id),
            )
            replaced = cur.fetchone()
            assert replaced is not None  # locked above
        rotated = NewApiKey(_record(new), key)
        fields = {**_log_fields(rotated.record), "replaced": key_id, "grace_seconds": grace.total_seconds()}
        log.info("API key %s rotated to %s", key_id, new_id, extra={"fields": fields})
        return rotated, _record(replaced)

    def revoke(self, key_id: str) -> ApiKeyRecord:
        """Revoked now (a key revoked already keeps its first revocation time)."""
        rows = self._rows(
            _query("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s RETURNING {columns}"),
            (checked_key_id(key_id),),
        )
        if not rows:
            raise NotFound("API_KEY_NOT_FOUND", "no API key has this id")
        revoked = _record(rows[0])
        log.info("API key %s revoked", key_id, extra={"fields": _log_fields(revoked)})
        return revoked

    def authenticate(self, presented: str) -> Identity:
        """Who `presented` belongs to; UNAUTHENTICATED API_KEY_INVALID for a malformed, unknown, wrong,
        expired or revoked key (the caller learns no more than that)."""
        match = _KEY_PATTERN.fullmatch(presented)
        if match is None:
            raise _invalid()
        key_id, secret = match.groups()
        with database_errors(), self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                _query(
                    "SELECT tenant, scopes, salt, secret_sha256, expire_at, last_used_at, now() AS now,"
                    " {active} AS active FROM api_keys WHERE id = %s"
                ),
                (key_id,),
            )
            row = cur.fetchone()
            salt, expected = (bytes(row["salt"]), bytes(row["secret_sha256"])) if row else (_NO_SALT, _NO_DIGEST)
            if not hmac.compare_digest(_digest(salt, secret), expected) or row is None or not row["active"]:
                raise _invalid()
            now: datetime = row["now"]
            if row["last_used_at"] is None or now - row["last_used_at"] >= LAST_USED_RESOLUTION:
                # Guarded again in SQL: concurrent checks of one key write once.
                cur.execute(
                    b"UPDATE api_keys SET last_used_at = now()"
                    b" WHERE id = %s AND (last_used_at IS NULL OR last_used_at <= now() - %s)",
                    (key_id, LAST_USED_RESOLUTION),
                )
        cache_until = now + self._cache
        if row["expire_at"] is not None:
            cache_until = min(cache_until, row["expire_at"])
        return Identity(key_id, row["tenant"], tuple(Scope(scope) for scope in row["scopes"]), cache_until)


def _invalid() -> Unauthenticated:
    return Unauthenticated("API_KEY_INVALID", "the API key is not valid")


def _log_fields(record: ApiKeyRecord) -> dict[str, Any]:
    """What a key's log lines carry: its public id and settings, never the secret."""
    return {
        "api_key_id": record.id,
        "tenant": record.tenant,
        "scopes": [scope.value for scope in record.scopes],
        "expire_time": record.expire_at.isoformat() if record.expire_at else None,
    }
