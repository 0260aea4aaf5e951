"""Run a compressor worker process: `python -m services.compressor`."""

from libs.service import run
from services.compressor.app import build
from services.compressor.settings import CompressorSettings

if __name__ == "__main__":
    run("compressor", CompressorSettings.from_env, build)
