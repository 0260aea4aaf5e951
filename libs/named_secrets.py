"""Which configured secret a presented one is: API_KEYS' tenants, OPERATOR_TOKENS' operators.

Digests are compared, so the time does not depend on the secret's length, and every entry is compared,
so it does not tell which one matched either.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping


def secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class NamedSecrets:
    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._digests = {name: secret_digest(secret) for name, secret in secrets.items()}

    def __bool__(self) -> bool:
        return bool(self._digests)

    def name_of(self, digest: bytes) -> str | None:
        """The name whose secret has this digest (secret_digest), or None."""
        match = None
        for name, expected in self._digests.items():
            if hmac.compare_digest(digest, expected):
                match = name
        return match
