"""The stack's real Prometheus scrapes every service and Envoy (`make run` starts the same one)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from deploy.monitoring import dashboard
from devtools.servers.processes import local_get
from devtools.stack.stack import SERVICES, Stack
from tests.e2e_client import RestClient
from tests.plugins.stack import API_KEYS

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data"
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def test_every_service_and_envoy_is_a_target_that_is_up(stack: Stack) -> None:
    if stack.prometheus is None:
        pytest.skip("prometheus is not installed (make test installs Debian's package when root)")
    expected = {name for name, _ in SERVICES} | {"envoy"}
    deadline = time.monotonic() + 30
    health: dict[str, str] = {}
    while time.monotonic() < deadline:
        targets = stack.prometheus.api("/api/v1/targets")["activeTargets"]
        health = {target["labels"]["job"]: target["health"] for target in targets}
        if set(health) == expected and set(health.values()) == {"up"}:
            break
        time.sleep(0.5)
    assert health == dict.fromkeys(expected, "up")


def test_a_service_metric_and_an_envoy_metric_can_be_queried(stack: Stack) -> None:
    if stack.prometheus is None:
        pytest.skip("prometheus is not installed (make test installs Debian's package when root)")
    deadline = time.monotonic() + 30
    results: dict[str, list[object]] = {}
    while time.monotonic() < deadline:
        results = {
            query: stack.prometheus.api(f"/api/v1/query?query={query}")["result"]
            for query in ("up", "envoy_server_live", "grpc_server_handled_total")
        }
        if all(results.values()):
            break
        time.sleep(0.5)
    assert all(results.values()), results


def test_the_rules_are_loaded_and_evaluate_without_errors(stack: Stack) -> None:
    if stack.prometheus is None:
        pytest.skip("prometheus is not installed (make test installs Debian's package when root)")
    deadline = time.monotonic() + 30
    rules: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        groups = stack.prometheus.api("/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(rule.get("lastEvaluation", "").startswith("2") for rule in rules):  # type: ignore[union-attr]
            break
        time.sleep(0.5)
    names = {str(rule["name"]) for rule in rules}
    assert {"pdfsmaller:edge_requests:rate1m", "ServiceUnavailable", "ErrorBudgetBurnSlow"} <= names
    assert {str(rule["name"]): rule["health"] for rule in rules} == dict.fromkeys(names, "ok")


def test_every_dashboard_panel_query_returns_data_after_uploads(stack: Stack) -> None:
    if stack.prometheus is None:
        pytest.skip("prometheus is not installed (make test installs Debian's package when root)")
    client = RestClient(stack.url, API_KEYS["acme"])
    created = client.upload((DATA / "pypdf__jpeg.pdf").read_bytes(), filename="jpeg.pdf")
    assert created.status == 200, created.body
    client.wait(created.json()["id"])
    queries = [query for panel in dashboard.panels() for query in panel.queries]

    def query(expr: str) -> list[dict[str, Any]]:
        assert stack.prometheus is not None
        return list(stack.prometheus.api("/api/v1/query?" + urlencode({"query": expr}))["result"])

    # A query that needs a series this machine lacks (no cgroup limit) must have no data, not stale data.
    expected = {q.expr: not q.needs or bool(query(q.needs)) for q in queries}
    results: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        results = {q.expr: query(q.expr) for q in queries}
        if all(bool(results[expr]) == wanted for expr, wanted in expected.items()):
            break
        time.sleep(1)
    assert [expr for expr, result in results.items() if bool(result) != expected[expr]] == []
    # A legend names labels its query keeps, or Grafana draws an empty name.
    unnamed = [
        (q.legend, series["metric"])
        for q in queries
        for series in results[q.expr]
        if not set(LEGEND_LABEL.findall(q.legend)) <= set(series["metric"])
    ]
    assert unnamed == []


def test_the_web_pages_make_run_prints_answer(stack: Stack) -> None:
    """make run prints the alerts page and where the targets are (Debian's build: the classic UI only,
    server-rendered, so its alerts page names the alerts; its targets page is empty, the API is not)."""
    if stack.prometheus is None:
        pytest.skip("prometheus is not installed (make test installs Debian's package when root)")
    alerts_url = stack.prometheus.page("alerts")
    alerts = local_get(alerts_url)
    assert alerts is not None, alerts_url
    if "/classic/" in alerts_url:
        assert b"NoCompressorWorkers" in alerts
        assert b"MemoryUsageCritical" in alerts
    targets = local_get(stack.prometheus.targets_url())
    assert targets is not None
    if stack.prometheus.targets_url().endswith("/api/v1/targets"):
        assert b'"service":"compressor"' in targets
