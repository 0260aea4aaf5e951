"""Run the public gateway: `python -m services.gateway`."""

from libs.grpc_server import serve_until_signal
from libs.logs import setup_logging
from libs.telemetry import init_telemetry
from services.gateway.app import build_server_spec
from services.gateway.settings import GatewaySettings

if __name__ == "__main__":
    settings = GatewaySettings.from_env()
    setup_logging("gateway")
    init_telemetry("gateway")
    serve_until_signal(build_server_spec(settings))
