"""`python -m services.jobs`: the jobs service (job state, work queue, events, retention)."""

from libs.logs import setup_logging
from libs.telemetry import init_telemetry
from services.jobs.app import JobsApp
from services.jobs.settings import JobsSettings


def main() -> None:
    settings = JobsSettings.from_env()
    setup_logging("jobs")
    init_telemetry("jobs")
    JobsApp(settings).serve_until_signal()


if __name__ == "__main__":
    main()
