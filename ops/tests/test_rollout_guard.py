"""`pdfsmaller-ops rollout-guard` against a real HTTP server answering Prometheus' query API with scripted
values, and a stand-in `kubectl` (an executable script recording its calls, as the real one would be called).
"""

from __future__ import annotations

import json
import socket
import stat
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploy.monitoring import rules
from ops.cli import main
from ops.rollout_guard import ERROR_RATIO_RECORD

# What the stand-in kubectl does: `rollout status` prints and exits as ROLLOUT says, after ROLLOUT_SECONDS.
FAKE_KUBECTL = """\
#!{python}
import json, os, sys, time
with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if "status" in args:
    time.sleep(float(os.environ.get("FAKE_ROLLOUT_SECONDS", "0")))
    outcome = os.environ.get("FAKE_ROLLOUT", "done")
    if outcome == "done":
        print('deployment "gateway" successfully rolled out')
        sys.exit(0)
    if outcome == "deadline":
        print('Waiting for deployment "gateway" rollout to finish: 1 out of 2 new replicas have been updated...')
        print('error: deployment "gateway" exceeded its progress deadline', file=sys.stderr)
        sys.exit(1)
    print('Error from server (NotFound): deployments.apps "gateway" not found', file=sys.stderr)
    sys.exit(1)
if "undo" in args:
    print("deployment.apps/gateway rolled back")
    sys.exit(0)
sys.exit(2)
"""
# A scripted answer: a ratio, NAN (no requests in the window), or DOWN (HTTP 503).
NAN, DOWN = "NaN", "down"


@dataclass
class ScriptedPrometheus:
    """Answers /api/v1/query with the next scripted value (the last one repeats), recording each query."""

    values: list[float | str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_value(self, query: str) -> float | str:
        with self.lock:
            self.queries.append(query)
            return self.values.pop(0) if len(self.values) > 1 else self.values[0]


def _handler(script: ScriptedPrometheus) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/api/v1/query":
                self.send_error(404)
                return
            value = script.next_value(urllib.parse.parse_qs(url.query)["query"][0])
            if value == DOWN:
                self.send_error(503, "query service down")
                return
            body = json.dumps(
                {
                    "status": "success",
                    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, str(value)]}]},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def prometheus() -> Iterator[tuple[str, ScriptedPrometheus]]:
    script = ScriptedPrometheus()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass(frozen=True)
class FakeKubectl:
    path: Path
    log: Path

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def undos(self) -> list[list[str]]:
        return [call for call in self.calls() if "undo" in call]


@pytest.fixture
def kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeKubectl:
    path = tmp_path / "kubectl"
    path.write_text(FAKE_KUBECTL.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "kubectl-calls.jsonl"
    monkeypatch.setenv("FAKE_KUBECTL_LOG", str(log))
    monkeypatch.setenv("FAKE_ROLLOUT_SECONDS", "0.3")
    return FakeKubectl(path, log)


def _guard(url: str, kubectl: FakeKubectl, *extra: str) -> int:
    argv = ["rollout-guard", "gateway", "--namespace", "pdf-smaller-test", "--prometheus-url", url]
    argv += ["--kubectl", str(kubectl.path), "--interval", "0.05", "--bake", "0.3", "--samples", "3", *extra]
    return main(argv)


def test_under_the_threshold_the_rollout_is_kept(
    prometheus: tuple[str, ScriptedPrometheus], kubectl: FakeKubectl, capsys: pytest.CaptureFixture[str]
) -> None:
    url, script = prometheus
    script.values = [0.002, NAN, 0.009]
    assert _guard(url, kubectl) == 0
    assert kubectl.undos() == []
    status = [call for call in kubectl.calls() if "status" in call]
    assert status == [
        [
            "--namespace",
            "pdf-smaller-test",
            "rollout",
            "status",
            "deployment/gateway",
            "--watch=true",
            "--timeout=1800s",
        ]
    ]
    assert set(script.queries) == {ERROR_RATIO_RECORD}
    # Sampled while rolling and through the bake time after it.
    assert len(script.queries) >= 8, script.queries
    out = capsys.readouterr()
    assert "rollout of deployment/gateway ... ok" in out.out
    assert "error ratio no requests" in out.err
    assert "rollout complete" in out.err


def test_above_the_threshold_for_n_samples_undoes_once_and_fails(
    prometheus: tuple[str, ScriptedPrometheus], kubectl: FakeKubectl, capsys: pytest.CaptureFixture[str]
) -> None:
    url, script = prometheus
    # An unanswered sample between two high ones neither ends nor extends the streak.
    script.values = [0.001, 0.02, DOWN, 0.03, 0.05]
    assert _guard(url, kubectl) == 1
    assert kubectl.undos() == [["--namespace", "pdf-smaller-test", "rollout", "undo", "deployment/gateway"]]
    assert len(script.queries) == 5
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("rollout of deployment/gateway"))
    assert "FAILED" in line
    assert "above 1.00% for 3 samples in a row (2.00%, 3.00%, 5.00%)" in line
    assert "rolled back with kubectl rollout undo deployment/gateway (deployment.apps/gateway rolled back)" in line


def test_one_spike_is_not_a_trend(prometheus: tuple[str, ScriptedPrometheus], kubectl: FakeKubectl) -> None:
    url, script = prometheus
    script.values = [0.001, 0.2, 0.3, 0.004, 0.5, 0.001]
    assert _guard(url, kubectl) == 0
    assert kubectl.undos() == []


def test_a_missed_progress_deadline_undoes_the_rollout(
    prometheus: tuple[str, ScriptedPrometheus],
    kubectl: FakeKubectl,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, script = prometheus
    script.values = [0.0]
    monkeypatch.setenv("FAKE_ROLLOUT", "deadline")
    assert _guard(url, kubectl) == 1
    assert len(kubectl.undos()) == 1
    assert (
        'the rollout did not complete: error: deployment "gateway" exceeded its progress deadline'
        in capsys.readouterr().out
    )


def test_kubectl_failing_for_another_reason_undoes_nothing(
    prometheus: tuple[str, ScriptedPrometheus],
    kubectl: FakeKubectl,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, script = prometheus
    script.values = [0.0]
    monkeypatch.setenv("FAKE_ROLLOUT", "not-found")
    assert _guard(url, kubectl) == 1
    assert kubectl.undos() == []
    assert "kubectl rollout status failed, nothing undone: Error from server (NotFound)" in capsys.readouterr().out


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_prometheus_unreachable_is_reported_and_undoes_nothing(
    kubectl: FakeKubectl, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _guard(f"http://127.0.0.1:{_closed_port()}", kubectl) == 1
    assert kubectl.undos() == []
    out = capsys.readouterr()
    assert "rollout of deployment/gateway ... ok" in out.out
    assert "error ratio watched ... FAILED" in out.out
    assert "the rollout went unguarded and was kept" in out.out
    assert "error ratio unknown (Prometheus: URLError" in out.err


def test_the_default_query_is_the_monitoring_rules_edge_error_ratio() -> None:
    records = {record.name: record.expr for record in rules.edge_records()}
    assert ERROR_RATIO_RECORD in records
    assert 'envoy_response_code_class="5"' in records[ERROR_RATIO_RECORD]
    assert "[1m]" in records[ERROR_RATIO_RECORD]
    # The rules Prometheus loads carry it (generated from the same list).
    assert f"record: {ERROR_RATIO_RECORD}" in (rules.COMPONENT_DIR / "rules.yaml").read_text()
