"""Real servers on ports nothing else can take, and a taken port as one clear message.

Third-party servers (PostgreSQL, Valkey, clamd) cannot report a port of their own choosing, so
their launchers choose one outside the kernel's ephemeral range and retry on a bind failure; our
services bind port 0 themselves (also outside that range) and report it. A port `make run` needs
that another program holds is a one-line error naming the port and what to set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from devtools.servers.clamd import ClamdServer
from devtools.servers.postgres import PostgresServer
from devtools.servers.redis import RedisServer
from devtools.stack.stack import PROJECT_ROOT, Ports, Stack
from libs.ports import PortInUse, ephemeral_range

pytestmark = pytest.mark.integration


def _outside_ephemeral(port: int) -> bool:
    low, high = ephemeral_range()
    return not low <= port <= high


Server = PostgresServer | RedisServer | ClamdServer
SERVERS: dict[str, Callable[[Path], Server]] = {
    "postgres": lambda data_dir: PostgresServer(data_dir, port=0, durable=False),
    "valkey": lambda data_dir: RedisServer(data_dir, port=0),
    "clamd": lambda data_dir: ClamdServer(data_dir, port=0, use_official_db=False),
}


@pytest.mark.parametrize("kind", SERVERS)
def test_on_any_port_and_on_one_another_server_of_its_kind_holds(tmp_path: Path, kind: str) -> None:
    if kind == "clamd" and not ClamdServer.available():
        pytest.skip("CLAMD NOT INSTALLED: install Debian's clamav-daemon (`make system-deps` as root)")
    first, second = SERVERS[kind](tmp_path / "first"), SERVERS[kind](tmp_path / "second")
    try:
        first.start()
        assert _outside_ephemeral(first.port)
        # The first server answers on that port too: the second must not take its answer for its own.
        second.port = first.port
        with pytest.raises(PortInUse) as raised:
            second.start()
        assert raised.value.address == f"127.0.0.1:{first.port}"
    finally:
        second.stop()  # a failing check must not leave it running
        first.stop()


def test_third_party_servers_on_a_port_another_program_holds(tmp_path: Path, held_port: int) -> None:
    postgres = PostgresServer(tmp_path / "pg", port=held_port, durable=False)
    valkey = RedisServer(tmp_path / "valkey", port=held_port)
    try:
        with pytest.raises(PortInUse) as raised:
            postgres.start()
        assert raised.value.address == f"127.0.0.1:{held_port}"
        with pytest.raises(PortInUse):
            valkey.start()
    finally:
        valkey.stop()
        postgres.stop()


def test_a_taken_service_port_names_the_service(tmp_path: Path, held_port: int) -> None:
    stack = Stack(data_dir=tmp_path, ports=replace(Ports.any(), storage=held_port), with_clamd=False, durable=False)
    with pytest.raises(PortInUse) as raised:
        stack.start(timeout=60)
    assert (raised.value.what, raised.value.address) == ("storage", f"127.0.0.1:{held_port}")
    assert stack.services == []  # what had started was stopped


def test_make_run_says_in_one_line_which_port_is_taken_and_what_to_set(tmp_path: Path, held_port: int) -> None:
    # Shift every `make run` port so PostgreSQL, started first, lands on the held port.
    offset = held_port - Ports().postgres
    if offset < 0 or held_port - Ports().postgres + 9901 > 65535:
        pytest.skip("the held port does not fit an offset of make run's ports")
    finished = subprocess.run(
        [sys.executable, "-m", "devtools.stack", "--data-dir", str(tmp_path)],
        env={**os.environ, "PDFSMALLER_PORT_OFFSET": str(offset)},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 1
    last = finished.stderr.strip().splitlines()[-1]
    assert last.startswith(f"make run: postgres cannot listen on 127.0.0.1:{held_port}: ")
    assert "PDFSMALLER_PORT_OFFSET=" in last
    assert "Traceback" not in finished.stderr


def test_make_run_on_a_data_folder_another_make_run_uses_says_so_in_one_line(tmp_path: Path) -> None:
    running = PostgresServer(tmp_path / "postgres", port=0, durable=False)  # where make run keeps its database
    try:
        running.start()
        finished = subprocess.run(
            [sys.executable, "-m", "devtools.stack", "--data-dir", str(tmp_path)],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        running.stop()
    assert finished.returncode == 1
    last = finished.stderr.strip().splitlines()[-1]
    assert last.startswith("make run: ")
    assert "is in use by another PostgreSQL" in last
    assert "Traceback" not in finished.stderr
