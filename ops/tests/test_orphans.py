"""`pdfsmaller-ops sweep-orphans` against a real PostgreSQL (jobs through the repository) and a folder store."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ops.cli import main
from ops.locks import RunLock
from ops.orphans import job_id_of
from ops.tests.database_servers import complete_stored_job, create_stored_job
from services.jobs.db import migrate, open_pool
from services.jobs.repository import JobRepository
from services.storage.backends.local import OBJECT_SUFFIX, LocalBackend

pytestmark = pytest.mark.integration

HOUR_AND_A_BIT = 3700


def _age(store: LocalBackend, key: str, age_seconds: float) -> None:
    written = time.time() - age_seconds
    os.utime(store.root / (key + OBJECT_SUFFIX), (written, written))


def _put(store: LocalBackend, key: str, *, age_seconds: float) -> str:
    store.put(key, "application/pdf", [b"%PDF-1.7 " + key.encode()], 0)
    _age(store, key, age_seconds)
    return key


def _sweep(capsys: pytest.CaptureFixture[str], url: str, objects: Path, *extra: str) -> dict[str, Any]:
    capsys.readouterr()
    status = main(["--json", "sweep-orphans", "--database-url", url, "--storage-dir", str(objects), *extra])
    document = json.loads(capsys.readouterr().out)
    assert status == 0, document
    return dict(document["results"])


def test_only_old_objects_no_job_references_are_deleted_and_dry_run_deletes_nothing(
    fresh_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate(fresh_database_url)
    store = LocalBackend(tmp_path / "objects")
    job_id = uuid.uuid4()
    kept_input, kept_output = f"inputs/{job_id}.pdf", f"outputs/{job_id}-2.pdf"
    pool = open_pool(fresh_database_url, max_size=2)
    pool.wait(timeout=10)
    try:
        repo = JobRepository(pool, retention_hours=168)
        create_stored_job(repo, store, job_id, "t", kept_input, b"%PDF-1.7 in")
        complete_stored_job(repo, store, job_id, kept_output, b"%PDF-1.7 out")
    finally:
        pool.close()
    for key in (kept_input, kept_output):
        _age(store, key, HOUR_AND_A_BIT)
    orphans = {
        _put(store, f"inputs/{uuid.uuid4()}.pdf", age_seconds=HOUR_AND_A_BIT),  # a job the restore lost
        _put(store, f"outputs/{job_id}-1.pdf", age_seconds=HOUR_AND_A_BIT),  # an earlier attempt's output
    }
    young = _put(store, f"inputs/{uuid.uuid4()}.pdf", age_seconds=60)  # an upload creating its job now
    odd = _put(store, "inputs/not-a-job-key.pdf", age_seconds=HOUR_AND_A_BIT)
    everything = {kept_input, kept_output, young, odd, *orphans}

    dry = _sweep(capsys, fresh_database_url, store.root, "--dry-run")
    assert (dry["orphans"], dry["orphans_deleted"], dry["objects_listed"]) == (2, 0, 6)
    assert set(store.keys("")) == everything

    swept = _sweep(capsys, fresh_database_url, store.root)
    assert swept == {
        "objects_listed": 6,
        "objects_recent": 1,
        "objects_unrecognised": 1,
        "objects_referenced": 2,
        "orphans": 2,
        "orphans_deleted": 2,
    }
    assert set(store.keys("")) == everything - orphans
    # The young one goes once it is old enough and still unreferenced.
    assert _sweep(capsys, fresh_database_url, store.root, "--older-than-minutes", "0")["orphans_deleted"] == 1


def test_a_sweep_beside_a_running_one_fails_at_its_lock_step_and_deletes_nothing(
    fresh_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate(fresh_database_url)
    store = LocalBackend(tmp_path / "objects")
    orphan = _put(store, f"inputs/{uuid.uuid4()}.pdf", age_seconds=HOUR_AND_A_BIT)
    with RunLock.take(fresh_database_url, "sweep-orphans"):  # as a running sweep holds it
        capsys.readouterr()
        status = main(
            ["--json", "sweep-orphans", "--database-url", fresh_database_url, "--storage-dir", str(store.root)]
        )
        document = json.loads(capsys.readouterr().out)
    assert status == 1
    failed = document["steps"][-1]
    assert failed["name"] == "take the sweep-orphans lock"
    assert "another `pdfsmaller-ops sweep-orphans` is running" in failed["error"]
    assert set(store.keys("")) == {orphan}
    assert _sweep(capsys, fresh_database_url, store.root)["orphans_deleted"] == 1


def test_job_keys_are_recognised_only_in_the_shapes_the_services_write() -> None:
    job_id = uuid.uuid4()
    assert job_id_of(f"inputs/{job_id}.pdf") == job_id
    assert job_id_of(f"outputs/{job_id}-12.pdf") == job_id
    for key in (f"inputs/{job_id}.pdf.tmp", f"outputs/{job_id}.pdf", f"inputs/x/{job_id}.pdf", "inputs/" + "g" * 36):
        assert job_id_of(key) is None, key
