"""`pdfsmaller-ops rollout-guard`: watch a rolling update, undo it on a high edge error ratio or a missed deadline.

    kubectl -n pdf-smaller apply -k deploy/k8s/overlays/production
    pdfsmaller-ops rollout-guard gateway --namespace pdf-smaller --prometheus-url http://prometheus.monitoring:9090

While `kubectl rollout status` follows the Deployment, and for --bake seconds after it completes, the
edge's 5xx ratio (the monitoring rules' recording rule, deploy/monitoring/rules.py) is read from
Prometheus every --interval seconds. Above --threshold (1%) for --samples answers in a row, or when
the rollout misses its progressDeadlineSeconds, the guard runs `kubectl rollout undo` once and exits 1.
One spike is not a trend: a sample under the threshold starts the count again.

A sample Prometheus does not answer is reported and counts neither way: a monitoring outage is no
evidence against a release, so it never undoes one; but a rollout the guard never saw an answer for
exits 1 ("unguarded"), without undoing, so a pipeline stops for a person to look.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from ops.report import OpsError, Reporter

# The recording rule of deploy/monitoring/rules.py (edge_records): 5xx over all answers at Envoy's public
# listener, 1-minute rate. The image carries no deploy/, so the name is repeated here; ops/tests checks it.
ERROR_RATIO_RECORD = "pdfsmaller:edge_5xx:ratio_rate1m"
QUERY_TIMEOUT_SECONDS = 10.0
KUBECTL_TIMEOUT_SECONDS = 60.0
# What `kubectl rollout status` prints when the rollout has failed (not when kubectl itself failed).
ROLLOUT_FAILED_MARKS = ("exceeded its progress deadline", "timed out waiting")


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "rollout-guard",
        help="watch a rolling update, undo it on a high edge error ratio or a missed progress deadline",
        description=__doc__.split("\n", 1)[0],
    )
    parser.add_argument("deployment", help="the Deployment being rolled (e.g. gateway, or gateway-green)")
    parser.add_argument("--prometheus-url", required=True, type=_http_url, help="Prometheus' base URL (its HTTP API)")
    parser.add_argument(
        "--namespace", "-n", default="pdf-smaller", help="the Deployment's namespace (default pdf-smaller)"
    )
    parser.add_argument("--kubectl", default="kubectl", help="the kubectl executable (default: kubectl on PATH)")
    parser.add_argument(
        "--query",
        default=ERROR_RATIO_RECORD,
        help=f"the ratio to watch (default the recording rule {ERROR_RATIO_RECORD})",
    )
    parser.add_argument("--threshold", type=_ratio, default=0.01, help="undo above this ratio (default 0.01: 1%%)")
    parser.add_argument("--samples", type=_count, default=3, help="... for this many samples in a row (default 3)")
    parser.add_argument("--interval", type=_positive_seconds, default=20.0, help="seconds between samples (default 20)")
    parser.add_argument(
        "--bake", type=_seconds, default=300.0, help="seconds to keep watching once the rollout completes (default 300)"
    )
    parser.add_argument(
        "--timeout", type=_seconds, default=1800.0, help="seconds the rollout may take in all (default 1800)"
    )
    parser.set_defaults(run=run)


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError("must be 0 or more seconds")
    return value


def _http_url(value: str) -> str:
    """Only http(s): urlopen would also read file: and ftp: URLs."""
    if urllib.parse.urlsplit(value).scheme not in ("http", "https"):
        raise argparse.ArgumentTypeError("must be an http:// or https:// URL")
    return value


class PrometheusUnavailable(Exception):
    """A query got no usable answer (connection refused, timeout, HTTP error, an error status)."""


@dataclass(frozen=True)
class Prometheus:
    base_url: str
    timeout: float = QUERY_TIMEOUT_SECONDS

    def ratio(self, query: str) -> float | None:
        """The query's current value (the largest, if several series); None when there is no traffic to divide."""
        url = f"{self.base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
        try:
            # An http(s) URL (_http_url checks the argument).
            with urllib.request.urlopen(url, timeout=self.timeout) as answer:  # noqa: S310  # nosec B310
                document = json.loads(answer.read(1024 * 1024))
        except (OSError, ValueError) as error:  # URLError and HTTPError are OSErrors
            raise PrometheusUnavailable(f"{type(error).__name__}: {error}") from error
        if document.get("status") != "success" or document.get("data", {}).get("resultType") != "vector":
            raise PrometheusUnavailable(f"unexpected answer: {json.dumps(document)[:200]}")
        try:
            values = [float(series["value"][1]) for series in document["data"]["result"]]
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise PrometheusUnavailable(f"unexpected answer: {json.dumps(document)[:200]}") from error
        values = [v for v in values if not math.isnan(v)]  # 0/0: no requests in the window
        return max(values) if values else None


@dataclass(frozen=True)
class Kubectl:
    executable: str
    namespace: str

    def _argv(self, *args: str) -> list[str]:
        return [self.executable, "--namespace", self.namespace, *args]

    def watch_rollout(self, deployment: str, timeout: float, output: IO[str]) -> subprocess.Popen[str]:
        """`kubectl rollout status`, its output into `output` (a file: a pipe nobody reads could fill up)."""
        argv = self._argv(
            "rollout", "status", f"deployment/{deployment}", "--watch=true", f"--timeout={math.ceil(timeout)}s"
        )
        try:
            return subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, text=True)
        except OSError as error:
            raise OpsError(f"{self.executable} could not run: {error}") from error

    def undo(self, deployment: str) -> str:
        try:
            done = subprocess.run(
                self._argv("rollout", "undo", f"deployment/{deployment}"),
                capture_output=True,
                text=True,
                timeout=KUBECTL_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise OpsError(f"kubectl rollout undo deployment/{deployment} could not run: {error}") from error
        if done.returncode != 0:
            raise OpsError(
                f"kubectl rollout undo deployment/{deployment} failed: {_last_line(done.stderr or done.stdout)}"
            )
        return _last_line(done.stdout)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


@dataclass
class Streak:
    """Consecutive samples above the threshold; an answer under it starts the count again, no answer changes nothing."""

    threshold: float
    needed: int
    above: list[float] = field(default_factory=list)
    answered: int = 0
    unanswered: int = 0

    def add(self, value: float | None) -> None:
        self.answered += 1
        if value is not None and value > self.threshold:
            self.above.append(value)
        else:
            self.above.clear()

    def miss(self) -> None:
        self.unanswered += 1

    @property
    def breached(self) -> bool:
        return len(self.above) >= self.needed


@dataclass(frozen=True)
class Verdict:
    undo: bool
    reason: str = ""


@dataclass
class Guard:
    kubectl: Kubectl
    prometheus: Prometheus
    deployment: str
    query: str
    streak: Streak
    interval: float
    bake: float
    timeout: float
    progress: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def watch(self) -> Verdict:
        """Sample until the rollout has completed and baked, it fails, or the ratio stays high."""
        with tempfile.TemporaryFile("w+") as output:
            process = self.kubectl.watch_rollout(self.deployment, self.timeout, output)
            try:
                return self._watch(process, output)
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait()

    def _watch(self, process: subprocess.Popen[str], output: IO[str]) -> Verdict:
        completed_at: float | None = None
        # Bounded: kubectl gives up after --timeout, and baking lasts --bake; +2 for the first and last samples.
        for _ in range(math.ceil((self.timeout + self.bake) / self.interval) + 2):
            if completed_at is None:
                try:
                    code = process.wait(timeout=self.interval)
                except subprocess.TimeoutExpired:
                    code = None
                if code is not None:
                    output.seek(0)
                    printed = output.read()
                    if code != 0:
                        return self._failed_rollout(printed)
                    completed_at = self.clock()
                    self.progress(f"rollout complete: {_last_line(printed)}; watching for {self.bake:g} s more")
            else:
                self.sleep(self.interval)
            self._sample()
            if self.streak.breached:
                shown = ", ".join(f"{v:.2%}" for v in self.streak.above)
                above = f"above {self.streak.threshold:.2%} for {len(self.streak.above)} samples in a row"
                return Verdict(True, f"{self.query} {above} ({shown})")
            if completed_at is not None and self.clock() - completed_at >= self.bake:
                return Verdict(False)
        if completed_at is None:  # kubectl outlived its own --timeout: it is stuck, not the rollout
            raise OpsError(f"kubectl rollout status did not return within {self.timeout:g} s, nothing undone")
        return Verdict(False)

    def _failed_rollout(self, output: str) -> Verdict:
        line = _last_line(output)
        if any(mark in output for mark in ROLLOUT_FAILED_MARKS):
            return Verdict(True, f"the rollout did not complete: {line}")
        raise OpsError(f"kubectl rollout status failed, nothing undone: {line}")

    def _sample(self) -> None:
        try:
            value = self.prometheus.ratio(self.query)
        except PrometheusUnavailable as error:
            self.streak.miss()
            self.progress(f"error ratio unknown (Prometheus: {error}); not counted")
            return
        self.streak.add(value)
        shown = "no requests" if value is None else f"{value:.2%}"
        self.progress(
            f"error ratio {shown} ({len(self.streak.above)}/{self.streak.needed} above {self.streak.threshold:.2%})"
        )


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    kubectl = Kubectl(args.kubectl, args.namespace)
    streak = Streak(args.threshold, args.samples)
    guard = Guard(
        kubectl=kubectl,
        prometheus=Prometheus(args.prometheus_url),
        deployment=args.deployment,
        query=args.query,
        streak=streak,
        interval=args.interval,
        bake=args.bake,
        timeout=args.timeout,
        progress=reporter.progress,
    )
    target = f"deployment/{args.deployment}"
    with reporter.step(f"rollout of {target}"):
        verdict = guard.watch()
        reporter.result("samples", streak.answered)
        reporter.result("unanswered_samples", streak.unanswered)
        if verdict.undo:
            undone = kubectl.undo(args.deployment)
            reporter.result("undone", undone)
            raise OpsError(f"{verdict.reason}: rolled back with kubectl rollout undo {target} ({undone})")
    with reporter.step("error ratio watched"):
        if streak.answered == 0:
            raise OpsError(
                f"Prometheus answered none of {streak.unanswered} samples: the rollout went unguarded and was kept; "
                f"check {args.query} by hand"
            )
    return reporter.finish()
