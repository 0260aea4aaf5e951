"""Run the storage service: `python -m services.storage`."""

from libs.service import run
from services.storage.app import build
from services.storage.settings import StorageSettings

if __name__ == "__main__":
    run("storage", StorageSettings.from_env, build)
