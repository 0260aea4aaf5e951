"""Ports nothing else can take: chosen outside the ephemeral range, bound by whoever listens, reported."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devtools.servers.processes import launch_on_port, listens_on
from libs.grpc_server import RunningServer, ServerSpec
from libs.ports import PortInUse, bind_any_port, candidate_ports, ephemeral_range


def test_candidates_avoid_the_ephemeral_range() -> None:
    ports = [p for p, _ in zip(candidate_ports((32768, 60999), random.Random(1)), range(5000), strict=False)]
    assert all(10_000 <= p < 32768 or 60999 < p <= 65535 for p in ports)
    assert any(p > 60999 for p in ports)  # both sides of the range are used
    assert len(set(ports)) > 1000


def test_candidates_when_the_range_covers_almost_everything() -> None:
    ports = [p for p, _ in zip(candidate_ports((2000, 65535), random.Random(2)), range(500), strict=False)]
    assert ports
    assert all(1024 <= p < 2000 for p in ports)
    assert list(candidate_ports((1, 65535))) == []  # nothing safe: callers fall back to the kernel's choice


def test_ephemeral_range_is_read_from_the_kernel_file(tmp_path: Path) -> None:
    custom = tmp_path / "range"
    custom.write_text("40000\t50000\n")
    assert ephemeral_range(custom) == (40000, 50000)
    custom.write_text("garbage")
    assert ephemeral_range(custom) == (32768, 60999)
    assert ephemeral_range(tmp_path / "missing") == (32768, 60999)


def test_bind_any_port_retries_taken_ports_then_falls_back_to_zero() -> None:
    tried: list[int] = []

    def bind(port: int) -> int | None:
        tried.append(port)
        if port == 0:
            return 12345
        if len(tried) % 2:
            raise OSError("taken")
        return None  # grpcio's way of saying taken

    assert bind_any_port(bind, attempts=6) == 12345
    assert len(tried) == 7
    assert tried[-1] == 0
    assert 0 not in tried[:-1]


def _spec(listen: str, address_file: Path | None = None, metrics_port: int | None = None) -> ServerSpec:
    return ServerSpec(
        name="probe",
        listen=listen,
        register=lambda server: None,
        service_names=[],
        metrics_port=metrics_port,
        address_file=address_file,
    )


def test_port_zero_binds_outside_the_ephemeral_range_and_reports_it(tmp_path: Path) -> None:
    report = tmp_path / "run" / "probe.json"
    running = RunningServer(_spec("127.0.0.1:0", report, metrics_port=0)).start()
    try:
        reported = json.loads(report.read_text())
        low, high = ephemeral_range()
        assert reported == {"grpc": running.address, "metrics_port": running.metrics_port}
        assert not low <= running.port <= high
        assert running.metrics_port is not None
        assert not low <= running.metrics_port <= high
        with grpc.insecure_channel(reported["grpc"]) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert not list(report.parent.glob("*.partial"))
    finally:
        running.stop(0)


def test_a_taken_fixed_port_is_one_clear_error_naming_the_setting(
    held_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR), pytest.raises(PortInUse) as raised:
        RunningServer(_spec(f"127.0.0.1:{held_port}"))
    assert raised.value.address == f"127.0.0.1:{held_port}"
    assert "PROBE_LISTEN" in str(raised.value)
    flagged = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "port_in_use"]
    assert flagged, "the launcher finds the conflict by this structured log line"


def test_a_taken_fixed_metrics_port_names_its_setting(held_port: int) -> None:
    server = RunningServer(_spec("127.0.0.1:0", metrics_port=held_port))
    try:
        with pytest.raises(PortInUse) as raised:
            server.start()
        assert "PROBE_METRICS_PORT" in str(raised.value)
    finally:
        server.stop(0)


def test_launch_on_port_retries_a_bind_failure_with_another_port(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    attempts: list[int] = []

    def launch(port: int) -> None:
        attempts.append(port)
        if len(attempts) < 3:
            with log_path.open("a") as log:
                log.write(f"FATAL: could not bind IPv4 address on port {port}: Address already in use\n")
            raise RuntimeError("exited")

    stops: list[int] = []
    port = launch_on_port("server", "127.0.0.1", 0, launch, lambda: stops.append(attempts[-1]), log_path)
    assert port == attempts[-1]
    assert len(attempts) == 3
    assert stops == attempts[:2]  # each failed try was stopped before the next
    assert len(set(attempts)) == 3
    low, high = ephemeral_range()
    assert not any(low <= p <= high for p in attempts)


def test_launch_on_port_does_not_retry_other_failures(tmp_path: Path) -> None:
    attempts: list[int] = []

    def launch(port: int) -> None:
        attempts.append(port)
        raise RuntimeError("bad configuration")

    stops: list[int] = []
    with pytest.raises(RuntimeError, match="bad configuration"):
        launch_on_port("server", "127.0.0.1", 0, launch, lambda: stops.append(1), tmp_path / "server.log")
    assert len(attempts) == 1
    assert stops == [1]


def test_launch_on_a_taken_fixed_port_raises_port_in_use(tmp_path: Path) -> None:
    def launch(port: int) -> None:
        raise RuntimeError(f"cannot bind '127.0.0.1:{port}': Address already in use")

    with pytest.raises(PortInUse) as raised:
        launch_on_port("server", "127.0.0.1", 5433, launch, lambda: None, tmp_path / "server.log")
    assert raised.value.address == "127.0.0.1:5433"


def test_listens_on_tells_whose_socket_holds_a_port() -> None:
    with socket.socket() as ours:
        ours.bind(("127.0.0.1", 0))
        ours.listen()
        port = ours.getsockname()[1]
        assert listens_on(os.getpid(), port)
        child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        try:
            assert not listens_on(child.pid, port)  # something answers on the port, but not this process
        finally:
            assert child.stdin is not None
            child.stdin.close()
            child.wait()
    assert not listens_on(os.getpid(), port)  # closed
