"""The Grafana dashboard: rendered from its source, and well formed for Grafana to import."""

from __future__ import annotations

import json

from deploy.monitoring import dashboard


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
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"]
        assert all(target["expr"] and target["refId"] for target in panel["targets"])


def test_the_guides_panels_are_there() -> None:
    titles = {panel.title for panel in dashboard.panels()}
    assert {"Request rate", "95th-percentile response time", "Server error ratio"} <= titles
