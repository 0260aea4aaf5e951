"""Apply the jobs schema migrations: `python -m services.jobs.migrate` (reads DATABASE_URL)."""

from __future__ import annotations

import sys

from libs.logs import setup_logging
from libs.settings import EnvReader, SettingsError
from services.jobs.db import migrate


def main() -> int:
    setup_logging("jobs-migrate")
    env = EnvReader()
    database_url = env.str("DATABASE_URL")
    try:
        env.done()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    applied = migrate(database_url)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
