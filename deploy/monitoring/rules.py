"""The Prometheus recording rules and alerts, defined once; the committed YAML is rendered from here.

    .venv/bin/python -m deploy.monitoring.rules            # rewrite the files below
    .venv/bin/python -m deploy.monitoring.rules --check    # exit 1 when a committed file is stale

It writes deploy/monitoring/prometheus/{rules,alerts}.yaml (plain Prometheus: `rule_files`; the `make
run` stack loads them) and, for Kubernetes, the kustomize component deploy/k8s/components/monitoring/:
the same groups as a PrometheusRule (Prometheus Operator) and as files of a ConfigMap.

Every alert has a severity (critical pages, warning opens a ticket, info informs), a summary, a
description and a runbook URL pointing at its section of docs/runbook.md. `render(for_scale=...)`
gives the same rules with shorter `for:` durations, for tests that watch an alert turn pending
against a live system without waiting minutes.

Edge traffic is measured at Envoy (`envoy_http_downstream_rq_*` of the `public` listener): it sees
every answer users get, the gateway's and Envoy's own (413, 429, 503 when the gateway is down).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

OUTPUT_DIR = Path(__file__).resolve().parent / "prometheus"
COMPONENT_DIR = Path(__file__).resolve().parents[1] / "k8s" / "components" / "monitoring"
RUNBOOK = "docs/runbook.md"
# Availability objective of the public API: answers that are not 5xx, over 30 days.
AVAILABILITY_SLO = 0.999
ERROR_BUDGET = 1 - AVAILABILITY_SLO

_EDGE = 'envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="public"}'
_EDGE_5XX = 'envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="public",envoy_response_code_class="5"}'
_EDGE_TIME = 'envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix="public"}'
_GATEWAY = 'grpc_server_handled_total{service="gateway",grpc_service="pdfsmaller.gateway.v1.GatewayService"}'
# Windows of the 5xx ratio: the guide's alerts (1m, 5m) and the burn-rate pairs (SRE workbook, ch. 5).
ERROR_RATIO_WINDOWS = ("1m", "5m", "30m", "1h", "2h", "6h", "1d", "3d")


@dataclass(frozen=True)
class Record:
    name: str
    expr: str

    def rule(self) -> dict[str, Any]:
        return {"record": self.name, "expr": self.expr}


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def anchor(self) -> str:
        """The runbook section's anchor: its heading is the alert's name."""
        return self.name.lower()

    def rule(self, for_scale: float = 1.0) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.for_ != "0s":
            rule["for"] = _scaled(self.for_, for_scale)
        rule["labels"] = {"severity": self.severity, **self.labels}
        rule["annotations"] = {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": f"{RUNBOOK}#{self.anchor}",
        }
        return rule


def _scaled(duration: str, scale: float) -> str:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    seconds = int(duration[:-1]) * units[duration[-1]]
    return f"{max(1, round(seconds * scale))}s" if scale != 1.0 else duration


def edge_records() -> list[Record]:
    records = [Record(f"pdfsmaller:edge_requests:rate{w}", f"sum(rate({_EDGE}[{w}]))") for w in ("1m", "5m")]
    records += [
        Record(f"pdfsmaller:edge_5xx:ratio_rate{w}", f"sum(rate({_EDGE_5XX}[{w}])) / sum(rate({_EDGE}[{w}]))")
        for w in ERROR_RATIO_WINDOWS
    ]
    records.append(
        Record(
            "pdfsmaller:edge_latency_seconds:p95_5m",
            f"histogram_quantile(0.95, sum by (le) (rate({_EDGE_TIME}[5m]))) / 1000",
        )
    )
    records.append(Record("pdfsmaller:gateway_requests:rate5m", f"sum by (grpc_method) (rate({_GATEWAY}[5m]))"))
    return records


def system_records() -> list[Record]:
    return [
        # df's Use%: used / (used + available); one series per service and folder (objects, work).
        Record(
            "pdfsmaller:volume_usage:ratio",
            "max by (service, volume) (pdfsmaller_volume_used_bytes"
            " / (pdfsmaller_volume_used_bytes + pdfsmaller_volume_available_bytes))",
        ),
        # Every jobs replica reports the same global count: max, never sum.
        Record("pdfsmaller:jobs_queued:max", 'max(jobs_queue_depth{state="QUEUED"})'),
        Record("pdfsmaller:jobs_oldest_queued_seconds:max", "max(pdfsmaller_jobs_oldest_queued_seconds)"),
        Record(
            "pdfsmaller:jobs_db_failures:rate1m",
            "sum(rate(pdfsmaller_jobs_db_pool_connect_failures_total[1m]))"
            " + sum(rate(pdfsmaller_jobs_db_pool_request_errors_total[1m]))",
        ),
    ]


def system_alerts() -> list[Alert]:
    return [
        Alert(
            "DatabaseConnectionFailures",
            "pdfsmaller:jobs_db_failures:rate1m > 0",
            "1m",
            "critical",
            "The jobs service cannot reach PostgreSQL",
            "Connections to PostgreSQL have failed, or the pool gave up on requests, for a minute: "
            "jobs cannot be created, leased or finished.",
        ),
        Alert(
            "QueueDepthCritical",
            "pdfsmaller:jobs_queued:max > 1000",
            "0s",
            "critical",
            "More than 1000 jobs are queued",
            "{{ $value }} jobs wait for a worker: the compressors are down, stuck or far too few.",
        ),
        Alert(
            "DiskUsageCritical",
            "pdfsmaller:volume_usage:ratio > 0.9",
            "0s",
            "critical",
            "A data folder's disk is over 90% full",
            "{{ $labels.service }}'s {{ $labels.volume }} folder is on a filesystem "
            "{{ $value | humanizePercentage }} full: writes fail when it fills.",
        ),
        Alert(
            "DiskUsageHigh",
            "pdfsmaller:volume_usage:ratio > 0.8",
            "0s",
            "warning",
            "A data folder's disk is over 80% full",
            "{{ $labels.service }}'s {{ $labels.volume }} folder is on a filesystem "
            "{{ $value | humanizePercentage }} full.",
        ),
    ]


def all_alerts() -> list[Alert]:
    return edge_alerts() + system_alerts()


def _burn(long: str, short: str, factor: float) -> str:
    threshold = round(factor * ERROR_BUDGET, 6)
    return (
        f"(pdfsmaller:edge_5xx:ratio_rate{long} > {threshold} and pdfsmaller:edge_5xx:ratio_rate{short} > {threshold})"
    )


def edge_alerts() -> list[Alert]:
    return [
        Alert(
            "ServiceUnavailable",
            "pdfsmaller:edge_5xx:ratio_rate1m > 0.05",
            "2m",
            "critical",
            "More than 5% of API requests fail with a server error",
            "{{ $value | humanizePercentage }} of the requests at the edge answered 5xx for 2 minutes.",
        ),
        Alert(
            "HighErrorRate",
            "pdfsmaller:edge_5xx:ratio_rate5m > 0.01",
            "5m",
            "warning",
            "More than 1% of API requests fail with a server error",
            "{{ $value | humanizePercentage }} of the requests at the edge answered 5xx over 5 minutes.",
        ),
        Alert(
            "HighLatency",
            "pdfsmaller:edge_latency_seconds:p95_5m > 2",
            "5m",
            "warning",
            "95th-percentile API response time above 2 s",
            "p95 response time at the edge is {{ $value | humanizeDuration }} (uploads and downloads included).",
        ),
        Alert(
            "ErrorBudgetBurnFast",
            f"{_burn('1h', '5m', 14.4)} or {_burn('6h', '30m', 6)}",
            "2m",
            "critical",
            f"The API burns its {AVAILABILITY_SLO:.1%} availability budget fast",
            "At this rate the 30-day error budget is gone within 2 to 5 days (SRE workbook: 2% of the budget "
            "in an hour, or 5% in six hours).",
        ),
        Alert(
            "ErrorBudgetBurnSlow",
            f"{_burn('1d', '2h', 3)} or {_burn('3d', '6h', 1)}",
            "1h",
            "warning",
            f"The API burns its {AVAILABILITY_SLO:.1%} availability budget steadily",
            "A slow leak of server errors: at this rate the 30-day error budget is gone before the month ends.",
        ),
    ]


def _groups(for_scale: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rules = [
        {"name": "pdfsmaller-edge", "rules": [r.rule() for r in edge_records()]},
        {"name": "pdfsmaller-system", "rules": [r.rule() for r in system_records()]},
    ]
    alerts = [
        {"name": "pdfsmaller-edge-alerts", "rules": [a.rule(for_scale) for a in edge_alerts()]},
        {"name": "pdfsmaller-system-alerts", "rules": [a.rule(for_scale) for a in system_alerts()]},
    ]
    return rules, alerts


def _yaml(document: dict[str, Any]) -> str:
    header = "# Generated by `python -m deploy.monitoring.rules` from deploy/monitoring/rules.py: edit that.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=1000)


def render(for_scale: float = 1.0) -> dict[str, str]:
    """File name -> YAML text of the rules (`for_scale` < 1: shorter `for:` for live tests)."""
    rules, alerts = _groups(for_scale)
    return {"rules.yaml": _yaml({"groups": rules}), "alerts.yaml": _yaml({"groups": alerts})}


def render_component() -> dict[str, str]:
    """The Kubernetes component's generated files: a PrometheusRule and the ConfigMap's two rule files."""
    rules, alerts = _groups(1.0)
    prometheus_rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "pdf-smaller",
            "labels": {"app.kubernetes.io/part-of": "pdf-smaller", "prometheus": "pdf-smaller"},
        },
        "spec": {"groups": rules + alerts},
    }
    return {"prometheusrule.yaml": _yaml(prometheus_rule), **render()}


def outputs() -> dict[Path, str]:
    """Every generated file, by path."""
    files = {OUTPUT_DIR / name: text for name, text in render().items()}
    files.update({COMPONENT_DIR / name: text for name, text in render_component().items()})
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.monitoring.rules", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed file differs")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale (run python -m deploy.monitoring.rules): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
