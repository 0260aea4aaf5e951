"""A private Prometheus for `make run` and the tests: scrapes every service and Envoy, loads the rules.

Uses Debian's `prometheus` binary when installed (`make test` installs it when root and missing, as it
does clamd; `make run` starts it only when it is there). The scrape configuration is written from the
targets the stack knows (each service's reported metrics port, Envoy's admin `/stats/prometheus`), and
the rule files of deploy/monitoring/prometheus/ are loaded when they exist. Port 0 lets Prometheus bind
a free port itself, read back from its log (no pick-then-bind race).

    with PrometheusServer(Path(".data/prometheus"), {"jobs": ["127.0.0.1:9102"]}) as url:
        ...  # url == "http://127.0.0.1:PORT"
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from devtools.servers.processes import local_get, log_tail, stop_process
from libs.ports import PortInUse

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = PROJECT_ROOT / "deploy" / "monitoring" / "prometheus"
_LISTENING = re.compile(r'msg="Listening on" address=(\S+)')
_BIND_FAILED = re.compile(r"listen tcp (\S+): bind: address already in use")


class PrometheusServerError(RuntimeError):
    """Prometheus could not be started."""


@dataclass(frozen=True)
class ScrapeTarget:
    """One scrape job: a name, its host:port targets and the path of their metrics."""

    job: str
    targets: Sequence[str]
    metrics_path: str = "/metrics"


def committed_rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yaml"))


def find_binary() -> Path | None:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").is_file() else None)
    return Path(found) if found else None


def scrape_config(targets: Sequence[ScrapeTarget], rule_files: Sequence[Path], scrape_interval: str) -> dict[str, Any]:
    """The prometheus.yml for these targets (JSON is YAML, so no YAML library is needed)."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": target.job,
                "metrics_path": target.metrics_path,
                "static_configs": [{"targets": list(target.targets), "labels": {"service": target.job}}],
            }
            for target in targets
        ],
    }


@dataclass
class PrometheusServer:
    data_dir: Path
    targets: Sequence[ScrapeTarget]
    listen: str = "127.0.0.1:0"
    scrape_interval: str = "5s"
    rule_files: Sequence[Path] = field(default_factory=committed_rule_files)
    binary: Path | None = None
    start_timeout: float = 30.0
    address: str = ""
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @staticmethod
    def available() -> bool:
        return find_binary() is not None

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "prometheus.yml"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "prometheus.log"

    def start(self) -> str:
        """Start and wait until it is ready; returns its base URL."""
        binary = self.binary or find_binary()
        if binary is None:
            raise PrometheusServerError("prometheus is not installed (Debian: apt-get install prometheus)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(scrape_config(self.targets, self.rule_files, self.scrape_interval)))
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                [
                    str(binary),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.data_dir / 'data'}",
                    f"--web.listen-address={self.listen}",
                    "--storage.tsdb.retention.time=7d",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(offset)
        except BaseException:
            self.stop()
            raise
        log.info("Prometheus ready on %s (%d scrape jobs)", self.url, len(self.targets))
        return self.url

    def _wait_ready(self, log_offset: int) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            tail = log_tail(self.log_path, log_offset, limit=50_000)
            if self._process.poll() is not None:
                taken = _BIND_FAILED.search(tail)
                if taken:
                    raise PortInUse("prometheus", taken.group(1))
                raise PrometheusServerError(f"prometheus exited with {self._process.returncode}; see {self.log_path}")
            listening = _LISTENING.search(tail)
            if listening and not self.address:
                self.address = listening.group(1)
            if self.address and local_get(self.url + "/-/ready") is not None:
                return
            time.sleep(0.1)
        raise PrometheusServerError(f"prometheus not ready within {self.start_timeout:.0f}s; see {self.log_path}")

    def page(self, name: str) -> str:
        """The URL of a web UI page ("alerts", "rules") that answers: Debian's build ships only the
        classic UI, under /classic/ (its /alerts is a 404)."""
        for path in (f"/{name}", f"/classic/{name}"):
            if local_get(self.url + path) is not None:
                return self.url + path
        return f"{self.url}/{name}"

    def targets_url(self) -> str:
        """Where to see the targets' health: the UI's page, or the API where the only UI is Debian's
        classic one, whose targets page lists nothing."""
        return self.page("targets") if local_get(self.url + "/targets") is not None else f"{self.url}/api/v1/targets"

    def api(self, path: str) -> Any:
        """The `data` of a Prometheus HTTP API answer (e.g. "/api/v1/targets"); raises when it fails."""
        body = local_get(self.url + path)
        if body is None:
            raise PrometheusServerError(f"{path} did not answer")
        answer = json.loads(body)
        if answer.get("status") != "success":
            raise PrometheusServerError(f"{path}: {answer.get('error', answer)}")
        return answer["data"]

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process(process, "prometheus", timeout=10)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def stack_targets(services: Mapping[str, int | None], envoy_admin: str | None) -> list[ScrapeTarget]:
    """One scrape job per service with a metrics port, and Envoy's admin stats when it runs."""
    targets = [ScrapeTarget(name, [f"127.0.0.1:{port}"]) for name, port in services.items() if port]
    if envoy_admin:
        targets.append(ScrapeTarget("envoy", [envoy_admin], metrics_path="/stats/prometheus"))
    return targets
