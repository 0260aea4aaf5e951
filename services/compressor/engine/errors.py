"""The one exception type the engine raises; ``reason`` is a stable code, ``message`` is safe to show users."""

from __future__ import annotations

# Stable reason codes (UPPER_SNAKE). Callers map them to job failure reasons; never rename one.
NOT_A_PDF = "NOT_A_PDF"
MALFORMED_PDF = "MALFORMED_PDF"
ENCRYPTED_PDF = "ENCRYPTED_PDF"
SIGNED_PDF = "SIGNED_PDF"
TOO_COMPLEX = "TOO_COMPLEX"
TIMEOUT = "TIMEOUT"
OUT_OF_MEMORY = "OUT_OF_MEMORY"
ENGINE_CRASHED = "ENGINE_CRASHED"
INVALID_OPTIONS = "INVALID_OPTIONS"
IO_ERROR = "IO_ERROR"

REASONS = frozenset(
    {
        NOT_A_PDF,
        MALFORMED_PDF,
        ENCRYPTED_PDF,
        SIGNED_PDF,
        TOO_COMPLEX,
        TIMEOUT,
        OUT_OF_MEMORY,
        ENGINE_CRASHED,
        INVALID_OPTIONS,
        IO_ERROR,
    }
)


class EngineError(Exception):
    """A failure with a stable ``reason`` code and a user-safe ``message`` (never raw exception text)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[type[EngineError], tuple[str, str]]:
        # Pickle by (reason, message) so the error crosses the child-process boundary intact.
        return (EngineError, (self.reason, self.message))
