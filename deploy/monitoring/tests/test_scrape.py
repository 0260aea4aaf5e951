"""deploy/monitoring/prometheus.yml: current with its source and valid for Prometheus."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from deploy.monitoring import scrape

PROMTOOL = shutil.which("promtool")


def test_the_committed_file_is_rendered_from_the_source() -> None:
    assert scrape.OUTPUT.read_text() == scrape.render(), "stale: python -m deploy.monitoring.scrape"
    assert scrape.main(["--check"]) == 0


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus) is not installed")
def test_prometheus_accepts_it_and_finds_the_rule_files() -> None:
    result = subprocess.run(
        [str(PROMTOOL), "check", "config", str(scrape.OUTPUT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout + result.stderr
