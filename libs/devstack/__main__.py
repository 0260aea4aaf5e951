"""`make run`: the whole system on 127.0.0.1 with embedded defaults; Ctrl-C stops it."""

import argparse
import logging
import signal
import threading
from pathlib import Path

from libs.devstack.stack import PROJECT_ROOT, Stack

BANNER = """
pdf-smaller is running.
  REST + gRPC (Envoy):  {url}
  upload page:          {url}/
  health:               curl {url}/v1/health
  upload:               curl --data-binary @file.pdf -H 'Content-Type: application/pdf' \\
                          '{url}/v1/jobs?filename=file.pdf'
  grpcurl:              .venv/bin/grpcurl -plaintext 127.0.0.1:{port} list
  data (kept):          {data}
  logs:                 {data}/logs/
Press Ctrl-C to stop.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT / ".data", help="where jobs and files are kept")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devstack %(levelname)s %(message)s")
    stop_requested = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop_requested.set())
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.set())
    stack = Stack(data_dir=args.data_dir.resolve())
    try:
        stack.start()
        for note in stack.notes:
            logging.warning(note)
        print(BANNER.format(url=stack.url, port=stack.ports.envoy, data=stack.data_dir), flush=True)
        while not stop_requested.wait(1.0):
            stack.check_alive()
    finally:
        logging.info("stopping")
        stack.stop()


if __name__ == "__main__":
    main()
