"""`make run`'s defaults, so every subcommand works against the development stack with no arguments.

They mirror devtools/stack (which the image does not carry): the data folder `.data/` of the
project, PostgreSQL on 127.0.0.1:5433 (database `pdfsmaller`, user `postgres`), Envoy on 8080, both
shifted by PDFSMALLER_PORT_OFFSET as make run shifts them.
Production passes --database-url (or DATABASE_URL), the storage settings and a backup location.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("PDFSMALLER_DATA_DIR", str(PROJECT_ROOT / ".data")))
BACKUP_DIR = DATA_DIR / "backups"
OBJECTS_DIR = DATA_DIR / "objects"
PGDATA = DATA_DIR / "postgres" / "pgdata"
# `PDFSMALLER_PORT_OFFSET=1000 make run` moves every port of the stack (devtools/stack/stack.py Ports).
PORT_OFFSET_SETTING = "PDFSMALLER_PORT_OFFSET"


def _port(default: int) -> int:
    offset = os.environ.get(PORT_OFFSET_SETTING, "0").strip() or "0"
    return default + (int(offset) if offset.isdigit() else 0)


# How long backups are kept, database and files alike (the guide's 30 days; --retention-days).
BACKUP_RETENTION_DAYS = 30

DATABASE_URL = f"postgresql://postgres@127.0.0.1:{_port(5433)}/pdfsmaller"
EDGE_URL = f"http://127.0.0.1:{_port(8080)}"


def database_url() -> str:
    return os.environ.get("DATABASE_URL", DATABASE_URL)
