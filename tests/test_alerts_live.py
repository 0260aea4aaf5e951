"""The alerts against the live system: the session stack's real Prometheus evaluates the shipped rules
(with every `for:` 60 times shorter, tests/plugins/stack.py), while a test takes a part down.

Also here: the security events reach the gateway's log with the fields the runbook searches for, and
every service's metrics stay low-cardinality.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from devtools.servers.processes import local_get
from devtools.servers.prometheus import PrometheusServer
from devtools.stack.stack import Stack
from services.scanner.tests import pdfs
from tests.e2e_client import RestClient
from tests.plugins.stack import API_KEYS

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data"
RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "runbook.md"
# Generous: the sweeper refreshes the queue gauges every few seconds, scrapes and rules run every second.
ALERT_TIMEOUT = 60.0
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _prometheus(stack: Stack) -> PrometheusServer:
    if stack.prometheus is None:
        pytest.skip("prometheus is not installed (make test installs Debian's package when root)")
    return stack.prometheus


def _alert_states(prometheus: PrometheusServer, name: str) -> list[dict[str, Any]]:
    return [alert for alert in prometheus.api("/api/v1/alerts")["alerts"] if alert["labels"]["alertname"] == name]


def _wait_for(what: str, check: Callable[[], Any], timeout: float = ALERT_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def _query(prometheus: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    return list(prometheus.api("/api/v1/query?" + urlencode({"query": expr}))["result"])


def test_stopping_the_compressor_with_jobs_queued_turns_the_worker_alert_on(stack: Stack) -> None:
    prometheus = _prometheus(stack)
    client = RestClient(stack.url, API_KEYS["acme"])
    assert not _alert_states(prometheus, "NoCompressorWorkers"), "firing before the test"
    stack.kill_service("compressor")
    try:
        created = client.upload((DATA / "pypdf__jpeg.pdf").read_bytes(), filename="queued.pdf")
        assert created.status == 200, created.body
        alerts = _wait_for(
            "NoCompressorWorkers pending or firing", lambda: _alert_states(prometheus, "NoCompressorWorkers")
        )
        assert alerts[0]["state"] in {"pending", "firing"}
        assert alerts[0]["labels"]["severity"] == "critical"
        assert client.job(created.json()["id"])["state"] == "JOB_STATE_QUEUED"
    finally:
        stack.start_service("compressor")
    assert client.wait(created.json()["id"])["state"] == "JOB_STATE_SUCCEEDED"
    _wait_for("NoCompressorWorkers resolved", lambda: not _alert_states(prometheus, "NoCompressorWorkers"))


def test_clamd_down_raises_the_scanner_alert_and_it_clears(stack: Stack) -> None:
    prometheus = _prometheus(stack)
    if stack.clamd is None:
        pytest.skip("clamd is not installed (make test installs Debian's clamav-daemon when root)")
    stack.clamd.stop()
    try:
        alerts = _wait_for(
            "ScannerDependencyDown pending or firing", lambda: _alert_states(prometheus, "ScannerDependencyDown")
        )
        assert alerts[0]["labels"]["dependency"] == "clamd"
        assert alerts[0]["labels"]["severity"] == "critical"
        assert alerts[0]["state"] in {"pending", "firing"}
    finally:
        stack.clamd.start()
    _wait_for(
        "the scanner sees clamd again", lambda: _query(prometheus, 'scanner_dependency_up{dependency="clamd"} == 1')
    )
    _wait_for("ScannerDependencyDown resolved", lambda: not _alert_states(prometheus, "ScannerDependencyDown"))


def _security_events(log_path: Path, offset: int) -> list[dict[str, Any]]:
    with log_path.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    events = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("logger") == "security":
            events.append(record)
    return events


def test_security_events_reach_the_gateway_log_with_their_fields(stack: Stack) -> None:
    """What the runbook's searches (jq 'select(.event == ...)') find in the stack's gateway log."""
    log_path = stack.data_dir / "logs" / "gateway.log"
    offset = log_path.stat().st_size
    wrong_key = "not-a-key-0123456789abcdef"
    assert RestClient(stack.url, wrong_key).request("GET", "/v1/jobs").status == 401
    acme = RestClient(stack.url, API_KEYS["acme"])
    assert acme.upload(pdfs.with_launch_action(), filename="launch.pdf").status == 400
    expected = {"authentication_failed", "active_content_refused"}
    if stack.clamd is not None:
        assert acme.upload(pdfs.with_eicar_attachment(), filename="eicar.pdf").status == 400
        expected.add("malware_detected")
    events = _wait_for(
        "the events in the log",
        lambda: (found := _security_events(log_path, offset)) and expected <= {e.get("event") for e in found} and found,
        timeout=15,
    )
    by_event = {event["event"]: event for event in events}
    for event in by_event.values():
        assert event["level"] == "warning"
        assert event["service"] == "gateway"
        assert event["client_address"] == "127.0.0.1"
        assert re.fullmatch(r"[0-9a-f]{32}", event["trace_id"])
        assert event["request_id"]
    assert by_event["authentication_failed"]["reason"] == "invalid_key"
    assert by_event["authentication_failed"]["tenant"] is None
    assert by_event["active_content_refused"]["tenant"] == "acme"
    assert by_event["active_content_refused"]["reason"] == "launch"
    if "malware_detected" in by_event:
        assert by_event["malware_detected"]["tenant"] == "acme"
        assert by_event["malware_detected"]["signature"]
    text = log_path.read_text(errors="replace")[offset:]
    # Never a key, in any line.
    assert wrong_key not in text
    assert API_KEYS["acme"] not in text


def _runbook_searches() -> list[tuple[str, str]]:
    """(what, command) of the runbook's security-event search table, on `make run`'s log paths."""
    section = RUNBOOK.read_text().split("## Searching the security events", 1)[1]
    rows = re.findall(r"^\| (.+?) \| `(.+)` \|$", section, re.MULTILINE)
    return [(what, command.replace("\\|", "|")) for what, command in rows if "gateway.log" in command]


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_the_runbook_searches_find_the_events(stack: Stack) -> None:
    """The documented commands, run as written against the stack's gateway log, find what they say."""
    assert RestClient(stack.url, "not-a-key-0123456789abcdef").request("GET", "/v1/jobs").status == 401
    assert RestClient(stack.url, API_KEYS["acme"]).upload(pdfs.with_launch_action(), filename="l.pdf").status == 400
    log_path = stack.data_dir / "logs" / "gateway.log"
    searches = _runbook_searches()
    assert len(searches) >= 7
    found: dict[str, str] = {}
    for what, command in searches:
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command.replace(".data/logs/gateway.log", str(log_path))],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, (what, command, result.stderr)
        found[what] = result.stdout
    assert "authentication_failed" in found['`grep "authentication failed"`']
    assert "127.0.0.1" in found["failed logins per address"]
    assert '"launch"' in found["refused active content"]
    assert "active_content_refused" in found["every security event"]


def test_metrics_stay_low_cardinality(stack: Stack) -> None:
    """No job id or object key in any label, and no metric with an unbounded number of series."""
    scraped: dict[str, str] = {}
    for service in stack.services:
        assert service.metrics_port, service.name
        body = local_get(f"http://127.0.0.1:{service.metrics_port}/metrics")
        assert body is not None, service.name
        scraped[service.name] = body.decode()
    for name, body in scraped.items():
        samples = [line for line in body.splitlines() if line and not line.startswith("#")]
        assert not [line for line in samples if UUID.search(line)], f"{name}: a job id in a label"
        series = Counter(
            re.sub(r"(_bucket|_count|_sum|_created|_total)$", "", line.split("{")[0].split()[0]) for line in samples
        )
        crowded = {metric: count for metric, count in series.items() if count > 400}
        assert crowded == {}, f"{name}: metrics with too many series"
