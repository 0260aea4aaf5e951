"""The Grafana dashboard: rendered from its source, well formed for Grafana to import, and every query
valid PromQL (tests/test_prometheus_stack.py runs them on a real Prometheus and requires data)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.monitoring import dashboard, rules

PROMTOOL = shutil.which("promtool")
CAMEL_CASE = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)+\b")


def test_the_committed_dashboard_is_rendered_from_the_source() -> None:
    assert dashboard.OUTPUT.read_text() == dashboard.render(), "stale: python -m deploy.monitoring.dashboard"


def test_every_panel_queries_the_chosen_prometheus_with_unique_ids() -> None:
    board = json.loads(dashboard.render())
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert len(panels) == len(dashboard.panels())
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel, source in zip(panels, dashboard.panels(), strict=True):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert [target["expr"] for target in panel["targets"]] == [query.expr for query in source.queries]
        assert all(target["expr"] and target["refId"] for target in panel["targets"])


def test_every_panel_says_what_it_shows_in_which_unit() -> None:
    for panel in dashboard.panels():
        assert panel.unit, panel.title
        assert "Bad" in panel.description, f"{panel.title}: say what a bad value looks like"
        assert all(query.legend for query in panel.queries), panel.title


def test_the_alerts_the_descriptions_name_exist() -> None:
    """A CamelCase word in a description is an alert's name: it must not outlive a rename."""
    alerts = {alert.name for alert in rules.all_alerts()}
    named = {word for panel in dashboard.panels() for word in CAMEL_CASE.findall(panel.description)}
    assert named
    assert named - alerts == set()


def test_the_issues_panels_are_there() -> None:
    titles = {panel.title for panel in dashboard.panels()}
    assert {
        "Request rate",
        "95th-percentile response time",
        "Server error ratio",
        "Queue depth",
        "Processing time by level",
        "Success rate",
        "Compression ratio",
        "Worker utilisation",
        "Connections by state",
        "Disk usage by volume",
    } <= titles


def test_queue_depth_is_never_summed_over_jobs_replicas() -> None:
    queries = [query.expr for panel in dashboard.panels() for query in panel.queries]
    assert not [q for q in queries if "jobs_queue_depth" in q and not q.startswith("max(")]
    assert not [q for q in queries if "jobs_waiting_retry" in q and not q.startswith("max(")]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus) is not installed")
def test_prometheus_parses_every_panel_query(tmp_path: Path) -> None:
    """Each query as a recording rule: `promtool check rules` parses it (a typo in PromQL fails here,
    a misspelled metric name only on the stack's Prometheus)."""
    queries = [query.expr for panel in dashboard.panels() for query in panel.queries]
    records = [{"record": f"dashboard:query_{index}", "expr": expr} for index, expr in enumerate(queries)]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
