"""Run the storage service: python -m services.storage"""

from libs.grpc_server import serve_until_signal
from libs.logs import setup_logging
from libs.telemetry import init_telemetry
from services.storage.app import server_spec
from services.storage.settings import StorageSettings

settings = StorageSettings.from_env()
setup_logging("storage", settings.log_level)
init_telemetry("storage")
serve_until_signal(server_spec(settings))
