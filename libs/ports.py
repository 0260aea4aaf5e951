"""Choosing a listening port that nothing else can take from under us.

The kernel hands ports from its ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`,
32768-60999 by default) to every outgoing connection. A port in that range that a server
does not hold right now (before its first bind, or while it is down for a restart) can be
taken by any connection on the machine. Ports outside the range can only be taken by an
explicit bind, so a server that chose one itself, retrying on a conflict, keeps it across
restarts. `bind_any_port` does that choosing for whoever binds; `candidate_ports` gives the
ports to try to launchers of programs that cannot choose for themselves.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_RANGE = (32768, 60999)
# Below this are well-known services and the fixed ports of `make run` (8080, 8051-8055, 9101-9105, ...).
LOWEST_CANDIDATE = 10_000
HIGHEST_PORT = 65_535
BIND_ATTEMPTS = 50

T = TypeVar("T")


class PortInUse(RuntimeError):
    """A server could not listen on a fixed address (another program holds it)."""

    def __init__(self, what: str, address: str, hint: str = "") -> None:
        self.what = what
        self.address = address
        self.hint = hint
        super().__init__(f"{what} cannot listen on {address}: the address is in use{'; ' + hint if hint else ''}")


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux's default when unreadable)."""
    try:
        low, high = (int(field) for field in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE
    return (low, high) if 0 < low <= high else DEFAULT_EPHEMERAL_RANGE


def _allowed(low: int, high: int, ephemeral: tuple[int, int]) -> list[range]:
    start, end = ephemeral
    ranges = [range(low, min(start, high + 1)), range(max(end + 1, low), high + 1)]
    return [r for r in ranges if len(r) > 0]


def candidate_ports(ephemeral: tuple[int, int] | None = None, rng: random.Random | None = None) -> Iterator[int]:
    """Random ports outside the ephemeral range, endlessly (callers bound their attempts)."""
    ephemeral = ephemeral or ephemeral_range()
    ranges = _allowed(LOWEST_CANDIDATE, HIGHEST_PORT, ephemeral) or _allowed(1024, HIGHEST_PORT, ephemeral)
    if not ranges:  # the whole port space is ephemeral: nothing is safe, let the caller fall back to 0
        return
    chooser = rng or random.SystemRandom()
    weights = [len(r) for r in ranges]
    while True:
        chosen = chooser.choices(ranges, weights)[0]
        yield chooser.randrange(chosen.start, chosen.stop)


def bind_any_port(bind: Callable[[int], T | None], attempts: int = BIND_ATTEMPTS) -> T:
    """Call `bind(port)` with ports outside the ephemeral range until one works (it returns
    non-None); then, as a last resort, with 0 (the kernel's choice). `bind` returns None or
    raises OSError when the port is taken."""
    for port, _ in zip(candidate_ports(), range(attempts), strict=False):
        try:
            bound = bind(port)
        except OSError:
            continue
        if bound is not None:
            return bound
    bound = bind(0)
    if bound is None:
        raise OSError("no port could be bound, not even one the kernel chose")
    return bound
