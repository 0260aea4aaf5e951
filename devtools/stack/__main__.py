"""`make run`: the whole system on 127.0.0.1 with embedded defaults; Ctrl-C stops it."""

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from devtools.servers.clamd import ClamdServerError
from devtools.servers.postgres import PostgresError
from devtools.servers.prometheus import PrometheusServerError
from devtools.servers.redis import RedisServerError
from devtools.stack.stack import PORT_OFFSET_SETTING, PROJECT_ROOT, Ports, Stack
from libs.ports import PortInUse
from libs.settings import SettingsError

BANNER = """
pdf-smaller is running, in development mode: a caller without an API key is the anonymous tenant unless
  API_KEYS is set; clamd optional. (PDFSMALLER_ENV=production, as the Kubernetes base sets it, always
  requires an API key and refuses to start without clamd and OPERATOR_TOKENS.)
  REST + gRPC (Envoy):  {url}
  upload page:          {url}/
  health:               curl {url}/v1/health
  upload:               curl --data-binary @file.pdf -H 'Content-Type: application/pdf' \\
                          '{url}/v1/jobs?filename=file.pdf'
  grpcurl:              .venv/bin/grpcurl -plaintext {address} list
  operator API (jobs):  .venv/bin/grpcurl -plaintext -H "authorization: Bearer $(cat {data}/operator-token)" \\
                          {jobs} list     (docs/runbook.md has the commands)
  metrics (Prometheus): {prometheus}
  data (kept):          {data}
  logs:                 {data}/logs/
Press Ctrl-C to stop.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT / ".data", help="where jobs and files are kept")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devstack %(levelname)s %(message)s")
    try:
        ports = Ports.from_env(os.environ)
    except SettingsError as error:
        sys.exit(f"make run: {error}")
    stop_requested = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop_requested.set())
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.set())
    stack = Stack(data_dir=args.data_dir.resolve(), ports=ports, with_prometheus=True)
    try:
        stack.start()
        for note in stack.notes:
            logging.warning(note)
        address = stack.url.removeprefix("http://")
        prometheus = (
            f"{stack.prometheus.page('alerts')} (alerts), {stack.prometheus.targets_url()} (targets)"
            if stack.prometheus
            else "not installed (Debian: prometheus)"
        )
        jobs = stack.service("jobs").address
        banner = BANNER.format(url=stack.url, address=address, data=stack.data_dir, prometheus=prometheus, jobs=jobs)
        print(banner, flush=True)
        while not stop_requested.wait(1.0):
            stack.check_alive()
    except (PostgresError, RedisServerError, ClamdServerError, PrometheusServerError) as error:
        sys.exit(f"make run: {error}")
    except PortInUse as error:
        # One line that says what to do, instead of a traceback.
        sys.exit(
            f"make run: {error.what} cannot listen on {error.address}: another program holds that port. "
            f"Stop it, or move every port of the system: {PORT_OFFSET_SETTING}=1000 make run"
        )
    finally:
        logging.info("stopping")
        stack.stop()


if __name__ == "__main__":
    main()
