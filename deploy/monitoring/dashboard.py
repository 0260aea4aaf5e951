"""The Grafana dashboard, built with the Grafana Foundation SDK; the committed JSON is rendered from here.

    .venv/bin/python -m deploy.monitoring.dashboard            # rewrite deploy/monitoring/grafana/pdf-smaller.json
    .venv/bin/python -m deploy.monitoring.dashboard --check    # exit 1 when the committed file is stale

Import the JSON into Grafana (Dashboards > New > Import) and pick the Prometheus data source. Panels
query the recording rules of deploy/monitoring/rules.py where one exists, so the dashboard and the
alerts read the same numbers. tests/test_prometheus_stack.py runs every panel's query against the
stack's real Prometheus and requires data.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUTPUT = Path(__file__).resolve().parent / "grafana" / "pdf-smaller.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: tuple[Query, ...]
    description: str = ""


def _ratio_by_service(selector: str) -> str:
    """Errors / all per service, 0 (not "no data") while a service has had no error."""
    total = "sum by (service) (rate(grpc_server_handled_total[5m]))"
    errors = f"sum by (service) (rate(grpc_server_handled_total{{{selector}}}[5m]))"
    return f"({errors} or {total} * 0) / {total}"


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Edge: what users see",
        (
            Panel(
                "Request rate",
                "reqps",
                (Query("pdfsmaller:edge_requests:rate5m", "all requests"),),
                "Requests per second at Envoy's public listener.",
            ),
            Panel(
                "Requests by API method",
                "reqps",
                (Query("pdfsmaller:gateway_requests:rate5m", "{{grpc_method}}"),),
                "Requests per second the gateway answered, per method (one method per route).",
            ),
            Panel(
                "95th-percentile response time",
                "s",
                (Query("pdfsmaller:edge_latency_seconds:p95_5m", "p95"),),
                "HighLatency fires above 2 s for 5 minutes.",
            ),
            Panel(
                "Server error ratio",
                "percentunit",
                (
                    Query("pdfsmaller:edge_5xx:ratio_rate5m", "5xx, 5 min"),
                    Query("pdfsmaller:edge_5xx:ratio_rate1h", "5xx, 1 hour"),
                ),
                "HighErrorRate above 1% for 5 minutes, ServiceUnavailable above 5% for 2 minutes.",
            ),
        ),
    ),
    (
        "Services",
        (
            Panel(
                "gRPC error ratio by service",
                "percentunit",
                (Query(_ratio_by_service('grpc_code!="OK"'), "{{service}}"),),
                "Calls answered with any code but OK, per service (refusals of bad input included).",
            ),
            Panel(
                "gRPC p95 handling time by service",
                "s",
                (
                    Query(
                        "histogram_quantile(0.95, sum by (service, le) "
                        "(rate(grpc_server_handling_seconds_bucket[5m])))",
                        "{{service}}",
                    ),
                ),
            ),
            Panel(
                "CPU by service",
                "percentunit",
                (Query("sum by (service) (rate(process_cpu_seconds_total[5m]))", "{{service}}"),),
                "CPU seconds per second of each service's processes (1 = one core).",
            ),
            Panel(
                "Memory by service",
                "bytes",
                (Query("sum by (service) (process_resident_memory_bytes)", "{{service}}"),),
                "Resident memory of each service's processes.",
            ),
        ),
    ),
)


def panels() -> list[Panel]:
    return [panel for _, row in ROWS for panel in row]


def build() -> dict[str, Any]:
    board = (
        dashboard.Dashboard("pdf-smaller")
        .uid("pdf-smaller")
        .tags(["pdf-smaller"])
        .refresh("30s")
        .time("now-6h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    panel_id = 0
    for title, row in ROWS:
        panel_id += 1
        board = board.with_row(dashboard.Row(title).id(panel_id))
        for panel in row:
            panel_id += 1
            built = (
                timeseries.Panel()
                .id(panel_id)
                .title(panel.title)
                .description(panel.description)
                .unit(panel.unit)
                .datasource(DATASOURCE)
            )
            for ref, query in zip("ABCDEFGH", panel.queries, strict=False):
                target = prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref)
                built = built.with_target(target)
            board = board.with_panel(built)
    encoded: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(board.build()))
    return encoded


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.monitoring.dashboard", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed file differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"stale: {OUTPUT} (run python -m deploy.monitoring.dashboard)", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
