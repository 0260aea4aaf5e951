"""Run the scanner service: python -m services.scanner"""

from libs.grpc_server import serve_until_signal
from libs.logs import setup_logging
from libs.telemetry import init_telemetry
from services.scanner.app import server_spec
from services.scanner.settings import ScannerSettings

settings = ScannerSettings.from_env()
setup_logging("scanner", settings.log_level)
init_telemetry("scanner")
serve_until_signal(server_spec(settings))
