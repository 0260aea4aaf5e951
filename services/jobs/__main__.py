"""Run the jobs service (job state, work queue, events, retention): `python -m services.jobs`."""

from libs.service import run
from services.jobs.app import build
from services.jobs.settings import JobsSettings

if __name__ == "__main__":
    run("jobs", JobsSettings.from_env, build)
