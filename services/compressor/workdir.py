"""The compressor's work folder: one folder per job in hand, and a sweep of those a killed worker left.

    with job_folder(work_dir, job_id) as folder:    # job-<id8>-<random>/, locked while the job runs
        ...
    swept = sweep_stale(work_dir)                    # at start: folders nobody holds, removed

A worker killed with SIGKILL (out of memory, a node drained hard) never runs its clean-up, and its
copies of the input and output stay in WORK_DIR, which on a long-lived volume fills up. Each job's
folder holds an flock on its `.in-use` file for as long as the job runs; the kernel drops the lock
when the process dies. So a folder whose lock can be taken is nobody's, even with several
compressors sharing one WORK_DIR, and a sibling's running job is never touched. A folder without
the file is spared for a minute: it may be one created this instant.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "job-"
LOCK_FILE = ".in-use"
# A folder without its lock file younger than this may be one being created.
UNLOCKED_GRACE_SECONDS = 60.0
# Entries of WORK_DIR looked at per sweep (bounded: it is a shared folder, /tmp by default).
MAX_ENTRIES = 100_000
# Files counted per folder for the bytes freed: a figure for the log, not a limit on the removal.
_MAX_FILES_COUNTED = 10_000


@dataclass(frozen=True)
class Swept:
    folders: int
    bytes: int


@contextlib.contextmanager
def job_folder(work_dir: Path, job_id: str) -> Iterator[Path]:
    """A private folder for one job, locked as in use until the job is done, then removed."""
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}{job_id[:8]}-", dir=work_dir) as name:
        folder = Path(name)
        with (folder / LOCK_FILE).open("wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield folder


def _size(folder: Path) -> int:
    total = 0
    files = (Path(root) / name for root, _dirs, names in os.walk(folder) for name in names)
    for path in itertools.islice(files, _MAX_FILES_COUNTED):
        with contextlib.suppress(OSError):
            total += path.lstat().st_size
    return total


def _is_stale(folder: Path, now: float) -> bool:
    try:
        lock = (folder / LOCK_FILE).open("rb")
    except FileNotFoundError:
        try:
            return now - folder.stat().st_mtime > UNLOCKED_GRACE_SECONDS
        except FileNotFoundError:
            return False
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a running job holds it
        return True


def sweep_stale(work_dir: Path) -> Swept:
    """Remove the job folders no running job holds; what it removed, for the log and the metrics."""
    folders = freed = 0
    now = time.time()
    try:
        with os.scandir(work_dir) as entries:
            candidates = [
                Path(entry.path)
                for entry in itertools.islice(entries, MAX_ENTRIES)
                if entry.name.startswith(PREFIX) and entry.is_dir(follow_symlinks=False)
            ]
    except FileNotFoundError:
        return Swept(0, 0)
    for folder in candidates:
        if not _is_stale(folder, now):
            continue
        size = _size(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            folders += 1
            freed += size
    if folders:
        fields = {"folders": folders, "bytes": freed, "work_dir": str(work_dir)}
        log.info("removed %d job folders left by killed workers (%d bytes)", folders, freed, extra={"fields": fields})
    return Swept(folders, freed)
