"""The alert and recording rules: current with their source, valid for Prometheus, every alert unit-tested
at its threshold, and every runbook link pointing at a section that exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.monitoring import rules

ROOT = Path(__file__).resolve().parents[3]
TESTS_DIR = rules.OUTPUT_DIR / "tests"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus) is not installed")


def test_the_committed_files_are_rendered_from_the_source() -> None:
    for path, text in rules.outputs().items():
        assert path.read_text() == text, f"{path} is stale: python -m deploy.monitoring.rules"


def test_the_prometheus_rule_holds_the_same_groups_as_the_files() -> None:
    component = yaml.safe_load(rules.render_component()["prometheusrule.yaml"])
    files = [group for text in rules.render().values() for group in yaml.safe_load(text)["groups"]]
    assert component["kind"] == "PrometheusRule"
    assert component["spec"]["groups"] == files


@needs_promtool
def test_prometheus_accepts_the_rules() -> None:
    files = [str(rules.OUTPUT_DIR / name) for name in rules.render()]
    result = subprocess.run([str(PROMTOOL), "check", "rules", *files], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_alert_unit_test_passes() -> None:
    tests = sorted(TESTS_DIR.glob("*.test.yaml"))
    assert tests
    # One promtool per file, all at once: each runs on one core, and the longest takes a quarter of their sum.
    runs = {
        path.name: subprocess.Popen(
            [str(PROMTOOL), "test", "rules", path.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=TESTS_DIR,
        )
        for path in tests
    }
    failed = {}
    for name, run in runs.items():
        output, _ = run.communicate(timeout=600)
        if run.returncode != 0:
            failed[name] = output
    assert failed == {}


# (unit test file, text of a threshold in the rendered rules, a wrong one, the alert whose test must fail)
WRONG_THRESHOLDS = [
    ("edge.test.yaml", "ratio_rate1m > 0.05", "ratio_rate1m > 0.07", "ServiceUnavailable"),
    ("resources.test.yaml", "memory_usage:ratio > 0.95", "memory_usage:ratio > 0.97", "MemoryUsageCritical"),
    ("product.test.yaml", "oldest_queued_seconds:max > 600", "oldest_queued_seconds:max > 580", "QueueBacklog"),
    ("backups.test.yaml", "wal_archive_age_seconds:max > 300", "wal_archive_age_seconds:max > 270", "WalArchiveStale"),
    ("backups.test.yaml", "_streaming[5m])) < 0.5", "_streaming[5m])) < 0.3", "WalReceiverNotStreaming"),
]


@needs_promtool
@pytest.mark.parametrize(
    ("test_file", "right", "wrong", "alert"), WRONG_THRESHOLDS, ids=[t[3] for t in WRONG_THRESHOLDS]
)
def test_a_wrong_threshold_fails_the_unit_tests(
    tmp_path: Path, test_file: str, right: str, wrong: str, alert: str
) -> None:
    """The unit tests can fail: the same tests against rules with one threshold moved."""
    (tmp_path / "tests").mkdir()
    rendered = rules.render()
    assert sum(text.count(right) for text in rendered.values()) == 1
    for name, text in rendered.items():
        (tmp_path / name).write_text(text.replace(right, wrong))
    shutil.copy(TESTS_DIR / test_file, tmp_path / "tests")
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", test_file],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path / "tests",
    )
    assert result.returncode != 0
    assert f"alertname: {alert}" in result.stdout + result.stderr


def _alert_cases() -> tuple[set[str], set[str]]:
    """Alert names some unit test expects firing, and those some unit test expects silent."""
    firing, silent = set(), set()
    for path in TESTS_DIR.glob("*.test.yaml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case["exp_alerts"] else silent).add(case["alertname"])
    return firing, silent


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    names = {alert.name for alert in rules.all_alerts()}
    firing, silent = _alert_cases()
    assert names - firing == set(), "alerts no unit test sees firing"
    assert names - silent == set(), "alerts no unit test sees silent (just below the threshold or before for:)"


def test_every_alert_is_labelled_and_explained() -> None:
    for alert in rules.all_alerts():
        rule = alert.rule()
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]


def test_every_runbook_link_points_at_a_section_of_the_runbook() -> None:
    headings = re.findall(r"^#+ (\S+)", (ROOT / rules.RUNBOOK).read_text(), re.MULTILINE)
    anchors = {heading.lower() for heading in headings}
    for alert in rules.all_alerts():
        assert alert.rule()["annotations"]["runbook_url"] == f"docs/runbook.md#{alert.anchor}"
        assert alert.anchor in anchors, f"docs/runbook.md has no section '{alert.name}'"


def test_the_operations_guide_lists_every_alert_with_its_severity() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    rows = dict(re.findall(r"^\| (\w+) \| (critical|warning|info) \|", guide, re.MULTILINE))
    assert rows == {alert.name: alert.severity for alert in rules.all_alerts()}


def test_shorter_for_durations_for_live_tests() -> None:
    fast = yaml.safe_load(rules.render(for_scale=0.01)["alerts.yaml"])
    durations = {rule["alert"]: rule.get("for") for group in fast["groups"] for rule in group["rules"]}
    assert durations["ServiceUnavailable"] == "1s"
    assert durations["ErrorBudgetBurnSlow"] == "36s"
    assert durations["QueueDepthCritical"] is None  # fires at once: nothing to shorten
    live = yaml.safe_load(rules.render(for_scale=1 / 60)["alerts.yaml"])  # the stack tests' scale
    durations = {rule["alert"]: rule.get("for") for group in live["groups"] for rule in group["rules"]}
    assert durations["NoCompressorWorkers"] == "5s"
    assert durations["ScannerDependencyDown"] == "1s"
