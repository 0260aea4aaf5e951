"""Validation of object keys.

Keys are chosen by the services (for example `jobs/<uuid>/input.pdf`), never
taken from user file names; validating them anyway keeps a buggy or hostile
caller from escaping the storage root or naming odd S3 objects.
"""

from __future__ import annotations

import re

from libs.errors import InvalidArgument

MAX_KEY_LENGTH = 512
# Lower-case segments separated by single slashes; a segment never starts with
# "." or "-", so "." and ".." segments and hidden files are impossible.
_KEY_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*")
DOMAIN = "storage.pdfsmaller"


def validate_key(key: str) -> str:
    """Return `key` if it is a valid object key, else raise InvalidArgument INVALID_KEY."""
    if not key:
        raise InvalidArgument("INVALID_KEY", "the object key is empty", domain=DOMAIN)
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument(
            "INVALID_KEY", f"the object key is longer than {MAX_KEY_LENGTH} characters", domain=DOMAIN
        )
    if ".." in key or not _KEY_PATTERN.fullmatch(key):
        raise InvalidArgument(
            "INVALID_KEY",
            "the object key must be lower-case segments of [a-z0-9._-] separated by '/', without '..'",
            domain=DOMAIN,
        )
    return key
