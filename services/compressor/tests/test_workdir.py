"""The work folder's sweep: what a SIGKILLed worker left goes, a running job's folder stays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.compressor.workdir import LOCK_FILE, UNLOCKED_GRACE_SECONDS, job_folder, sweep_stale

HOLD_A_JOB = """
import sys, time
from pathlib import Path
from services.compressor.workdir import job_folder
with job_folder(Path(sys.argv[1]), "0123456789abcdef") as folder:
    (folder / "input.pdf").write_bytes(b"x" * 5000)
    print(folder, flush=True)
    time.sleep(120)
"""


def test_a_killed_worker_s_folder_is_swept_and_a_running_one_is_not(tmp_path: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_JOB, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    try:
        assert worker.stdout is not None
        folder = Path(worker.stdout.readline().strip())
        assert folder.parent == tmp_path
        assert (folder / LOCK_FILE).is_file()
        assert sweep_stale(tmp_path).folders == 0  # its job is running
        assert folder.is_dir()
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    finally:
        worker.kill()
    swept = sweep_stale(tmp_path)
    assert (swept.folders, swept.bytes) == (1, 5000)
    assert not folder.exists()


def test_a_folder_without_its_lock_file_is_spared_while_young_and_others_are_never_touched(tmp_path: Path) -> None:
    young, old = tmp_path / "job-aaaaaaaa-young", tmp_path / "job-bbbbbbbb-old"
    other = tmp_path / "not-a-job-folder"
    for folder in (young, old, other):
        folder.mkdir()
    long_ago = time.time() - UNLOCKED_GRACE_SECONDS - 10
    os.utime(old, (long_ago, long_ago))
    os.utime(other, (long_ago, long_ago))
    assert sweep_stale(tmp_path).folders == 1
    assert young.is_dir()
    assert other.is_dir()
    assert not old.exists()


def test_a_job_folder_is_removed_when_its_job_ends(tmp_path: Path) -> None:
    with job_folder(tmp_path, "fedcba9876543210") as folder:
        assert folder.name.startswith("job-fedcba98-")
        assert sweep_stale(tmp_path).folders == 0
    assert list(tmp_path.iterdir()) == []
