"""The compressor's settings: where its worker says it runs."""

from __future__ import annotations

import socket

from services.compressor.settings import CompressorSettings


def test_the_worker_host_is_the_node_when_given_else_this_host() -> None:
    assert CompressorSettings.from_env({}).worker_host == socket.gethostname()
    assert CompressorSettings.from_env({"WORKER_HOST": "node-7"}).worker_host == "node-7"
