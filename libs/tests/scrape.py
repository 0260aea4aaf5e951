"""Reading a running service's /metrics as Prometheus would, for the tests of every service."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

# Sample name -> its labels (sorted name/value pairs) -> value.
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(metrics_port: int | None, host: str = "127.0.0.1") -> Samples:
    assert metrics_port is not None, "the service was started without /metrics"
    with urllib.request.urlopen(f"http://{host}:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples
