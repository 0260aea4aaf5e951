"""Run the public gateway: `python -m services.gateway`."""

from libs.service import run
from services.gateway.app import build
from services.gateway.settings import GatewaySettings

if __name__ == "__main__":
    run("gateway", GatewaySettings.from_env, build)
