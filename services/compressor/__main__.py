"""Run a compressor worker process: `python -m services.compressor`."""

import signal
import threading

from libs.logs import setup_logging
from libs.telemetry import init_telemetry
from services.compressor.app import build
from services.compressor.settings import CompressorSettings

if __name__ == "__main__":
    settings = CompressorSettings.from_env()
    setup_logging("compressor")
    init_telemetry("compressor")
    process = build(settings).start()
    stop_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.set())
    signal.signal(signal.SIGINT, lambda *_: stop_requested.set())
    stop_requested.wait()
    process.shutdown()
