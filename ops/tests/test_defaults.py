"""make run's defaults follow its port offset, as the stack does."""

from __future__ import annotations

import importlib

import pytest

from devtools.stack.stack import Ports
from ops import defaults


def test_the_defaults_follow_make_run_s_port_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    for offset in ("0", "2000"):
        monkeypatch.setenv("PDFSMALLER_PORT_OFFSET", offset)
        shifted = importlib.reload(defaults)
        ports = Ports.from_env({"PDFSMALLER_PORT_OFFSET": offset})
        database_url, edge_url = shifted.DATABASE_URL, shifted.EDGE_URL
        assert database_url == f"postgresql://postgres@127.0.0.1:{ports.postgres}/pdfsmaller"
        assert edge_url == f"http://127.0.0.1:{ports.envoy}"
    monkeypatch.delenv("PDFSMALLER_PORT_OFFSET")
    importlib.reload(defaults)
