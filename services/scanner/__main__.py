"""Run the scanner service: `python -m services.scanner`."""

from libs.service import run
from services.scanner.app import build
from services.scanner.settings import ScannerSettings

if __name__ == "__main__":
    run("scanner", ScannerSettings.from_env, build)
