"""Envoy in front of a gateway, for end-to-end tests.

`envoy_factory(gateway_addr)` returns the base URL (http://127.0.0.1:PORT) of an
Envoy built from deploy/envoy/envoy.yaml that transcodes REST and passes gRPC
to `gateway_addr`; the gRPC target for clients is the same host:port. Keyword
arguments override EnvoySettings fields (e.g. max_request_bytes=1024). One
Envoy per distinct call for the session, stopped at the end in `finally`.
`envoy_server_factory` is the same but returns the EnvoyServer (admin URL,
stats, log path).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from devtools.servers.envoy import EnvoyServer, EnvoySettings

EnvoyServerFactory = Callable[..., EnvoyServer]


@pytest.fixture(scope="session")
def envoy_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyServerFactory]:
    servers: dict[tuple[str, tuple[tuple[str, Any], ...]], EnvoyServer] = {}

    def start(gateway_addr: str, **overrides: Any) -> EnvoyServer:
        key = (gateway_addr, tuple(sorted(overrides.items())))
        if key not in servers:
            settings = replace(
                EnvoySettings(), listen="127.0.0.1:0", admin_port=0, gateway_addr=gateway_addr, **overrides
            )
            server = EnvoyServer(tmp_path_factory.mktemp("envoy"), settings)
            server.start()
            servers[key] = server
        return servers[key]

    try:
        yield start
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="session")
def envoy_factory(envoy_server_factory: EnvoyServerFactory) -> Callable[..., str]:
    def start(gateway_addr: str, **overrides: Any) -> str:
        return envoy_server_factory(gateway_addr, **overrides).url

    return start
