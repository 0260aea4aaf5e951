"""libs.service: the order a service starts and stops in, readiness logged once per change, and the
one run loop (LOG_LEVEL, SIGTERM) through a real service process."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.grpc_server import ServerSpec
from libs.service import Loop, Service
from services.compressor.settings import CompressorSettings
from services.gateway.settings import GatewaySettings
from services.jobs.settings import JobsSettings
from services.scanner.settings import ScannerSettings
from services.storage.settings import StorageSettings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NAME = "test.v1.Service"


def spec(readiness: Callable[[], bool] = lambda: True, interval: float = 2.0) -> ServerSpec:
    return ServerSpec(
        name="test",
        listen="127.0.0.1:0",
        register=lambda server: None,
        service_names=[NAME],
        readiness=readiness,
        readiness_interval_seconds=interval,
        tls=None,
    )


class Recorder:
    """Loops and resources that write what happened to them, in order, into one list."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def loop(self, name: str, fail_start: bool = False) -> Loop:
        def start() -> None:
            if fail_start:
                raise RuntimeError(f"{name} cannot start")
            self.events.append(f"start {name}")

        return Loop(start, lambda: self.events.append(f"stop {name}"))

    def resource(self, name: str) -> Any:
        recorder = self

        class Resource:
            def close(self) -> None:
                recorder.events.append(f"close {name}")

        return Resource()


def readiness_of(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        request = health_pb2.HealthCheckRequest(service=NAME)
        return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status)


def test_stop_goes_not_serving_loops_newest_first_server_then_resources() -> None:
    recorder = Recorder()
    running: list[Any] = []

    def stop_first() -> None:
        # While the loops stop, readiness already says NOT_SERVING but the server still answers.
        recorder.events.append(f"health {readiness_of(running[0].address)}")
        recorder.events.append("stop b")

    service = Service(
        spec(),
        background=[recorder.loop("a"), Loop(lambda: recorder.events.append("start b"), stop_first)],
        resources=[recorder.resource("channel"), recorder.resource("pool")],
    )
    running.append(service.start())
    assert readiness_of(running[0].address) == health_pb2.HealthCheckResponse.SERVING
    running[0].stop(0)
    running[0].stop(0)  # a second stop does nothing
    not_serving = f"health {health_pb2.HealthCheckResponse.NOT_SERVING}"
    assert recorder.events == ["start a", "start b", not_serving, "stop b", "stop a", "close channel", "close pool"]
    with pytest.raises(grpc.RpcError):
        readiness_of(running[0].address)


def test_a_loop_that_cannot_start_stops_what_started() -> None:
    recorder = Recorder()
    service = Service(
        spec(),
        background=[recorder.loop("a"), recorder.loop("b", fail_start=True)],
        resources=[recorder.resource("channel")],
    )
    with pytest.raises(RuntimeError, match="b cannot start"):
        service.start()
    assert recorder.events == ["start a", "stop a", "close channel"]


def test_a_failing_readiness_check_is_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    answers = {"error": True}

    def readiness() -> bool:
        if answers["error"]:
            raise ConnectionError("dependency down")
        return True

    caplog.set_level(logging.INFO, logger="libs.grpc_server")
    running = Service(spec(readiness, interval=0.02)).start()
    try:
        time.sleep(0.5)  # about 25 failed checks
        answers["error"] = False
        deadline = time.monotonic() + 5
        while readiness_of(running.address) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        running.stop(0)
    said = [(record.getMessage(), bool(record.exc_info)) for record in caplog.records]
    assert said.count(("test not ready", True)) == 1, said
    assert said.count(("test ready", False)) == 1, said


def _storage_env(tmp_path: Path, level: str) -> dict[str, str]:
    return {
        **os.environ,
        "STORAGE_LISTEN": "127.0.0.1:0",
        "STORAGE_METRICS_PORT": "0",
        "STORAGE_DIR": str(tmp_path / "objects"),
        "STORAGE_ADDRESS_FILE": str(tmp_path / "storage.json"),
        "LOG_LEVEL": level,
    }


@pytest.mark.parametrize(("level", "info_logged"), [("DEBUG", True), ("WARNING", False)])
def test_run_honours_log_level_and_stops_cleanly_on_sigterm(tmp_path: Path, level: str, info_logged: bool) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "services.storage"],
        env=_storage_env(tmp_path, level),
        cwd=PROJECT_ROOT,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "storage.json").exists():
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "storage did not report its address"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    messages = [json.loads(line)["message"] for line in stderr.decode().splitlines() if line.startswith("{")]
    assert ("storage stopped" in messages) is info_logged, messages


@pytest.mark.parametrize(
    ("settings", "required"),
    [
        (StorageSettings, {}),
        (ScannerSettings, {"STORAGE_ADDR": "127.0.0.1:1"}),
        (JobsSettings, {"DATABASE_URL": "postgresql://x/y", "REDIS_URL": "redis://x", "STORAGE_ADDR": "127.0.0.1:1"}),
        (GatewaySettings, {"REDIS_URL": "redis://x"}),
        (CompressorSettings, {}),
    ],
)
def test_every_service_reads_log_level(settings: Any, required: Mapping[str, str]) -> None:
    assert settings.from_env({**required, "LOG_LEVEL": "DEBUG"}).log_level == "DEBUG"
    assert settings.from_env(dict(required)).log_level == "INFO"


# A launcher that starts a grandchild watching it, prints the grandchild's pid, then waits to be killed.
_LAUNCHER = """
import subprocess, sys, time
watcher = '''
import sys, threading
from libs.service import stop_when_orphaned
stop = threading.Event()
stop_when_orphaned(int(sys.argv[1]), stop, interval=0.05)
print("watching", flush=True)
sys.exit(0 if stop.wait(30) else 3)
'''
import os
child = subprocess.Popen([sys.executable, "-c", watcher, str(os.getpid())], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "watching"
print(child.pid, flush=True)
time.sleep(60)
"""


def test_a_service_whose_launcher_is_killed_stops_by_itself() -> None:
    root = Path(__file__).resolve().parents[2]
    launcher = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER], stdout=subprocess.PIPE, text=True, cwd=root, env={**os.environ}
    )
    try:
        grandchild = int(launcher.stdout.readline())  # type: ignore[union-attr]
        launcher.kill()  # SIGKILL: the launcher stops nothing; the grandchild must notice by itself
        launcher.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(grandchild):
            time.sleep(0.05)
        assert not _alive(grandchild)
    finally:
        launcher.kill()
        launcher.wait(10)


def _alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's zombie is reaped by init, but may linger a moment)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
