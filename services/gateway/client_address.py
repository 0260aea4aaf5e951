"""The address of the client behind a call, as far as the gateway can trust it.

Only Envoy reaches the gateway (the NetworkPolicy admits nothing else), and Envoy, with
`use_remote_address: true`, sets `x-envoy-external-address` to the client's address for a request
it counts as external (every one, as no `internal_address_config` is set) and appends the address
it saw to `x-forwarded-for` (the host's own for a loopback peer; earlier entries are whatever the
client sent). So the external address comes first, then the last x-forwarded-for entry. A call
with neither came straight to the gateway: its gRPC peer is the client. Whatever is logged is a
parsed IP address, so a header can neither forge a log field nor make it long.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import unquote

import grpc

EXTERNAL_ADDRESS_HEADER = "x-envoy-external-address"
FORWARDED_FOR_HEADER = "x-forwarded-for"
# Longer than any IP address in text (IPv6 with an IPv4 tail and a zone index): only this much of
# a header's end is looked at.
MAX_ADDRESS_CHARS = 64
UNKNOWN_ADDRESS = "unknown"


def client_address(context: grpc.ServicerContext) -> str:
    """The client's IP address: Envoy's external address, else the last x-forwarded-for entry, else
    the gRPC peer; "unknown" when none is a valid address."""
    metadata = context.invocation_metadata() or ()
    external = _single_header(metadata, EXTERNAL_ADDRESS_HEADER)
    forwarded = _single_header(metadata, FORWARDED_FOR_HEADER)
    candidates = (
        _parsed(external),
        _parsed(forwarded[-MAX_ADDRESS_CHARS:].rsplit(",", 1)[-1]) if forwarded else None,
        _peer_address(context.peer()),
    )
    return next((address for address in candidates if address), UNKNOWN_ADDRESS)


def _single_header(metadata: Iterable[tuple[str, str | bytes]], name: str) -> str | None:
    """The header's value if it came once, as text; a repeated header is not trusted."""
    values = [value for key, value in metadata if key == name]
    if len(values) != 1 or not isinstance(values[0], str):
        return None
    return values[0]


def _parsed(text: str | None) -> str | None:
    """`text` as a canonical IP address, or None."""
    if not text:
        return None
    candidate = text[-MAX_ADDRESS_CHARS:].strip().removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def _peer_address(peer: object) -> str | None:
    """The IP address in a gRPC peer string ("ipv4:1.2.3.4:5678", "ipv6:%5B::1%5D:5678", grpcio
    percent-encoding the brackets); "unix" for a socket."""
    if not isinstance(peer, str):
        return None
    scheme, _, rest = unquote(peer[: MAX_ADDRESS_CHARS * 2]).partition(":")
    if scheme == "unix":
        return "unix"
    if scheme not in ("ipv4", "ipv6"):
        return None
    return _parsed(rest.rsplit(":", 1)[0])  # the port goes; an IPv6 host keeps its brackets until _parsed
