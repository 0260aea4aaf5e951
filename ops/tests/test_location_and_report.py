"""The backup location over the storage backends, and what a subcommand prints."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from libs.errors import InvalidArgument, NotFound
from ops.location import BackupLocation
from ops.report import Failed, OpsError, Reporter
from services.storage.backends.local import LocalBackend


def test_a_folder_location_round_trips_files_and_lists_keys(tmp_path: Path) -> None:
    location = BackupLocation(LocalBackend(tmp_path / "backups"), prefix="site-a")
    source = tmp_path / "base.tar.gz"
    source.write_bytes(b"x" * 3_000_000)
    meta = location.put_file("database/full/20261201t120000z/base.tar.gz", source)
    location.put_json("database/full/20261201t120000z/manifest.json", {"lsn": "0/3000028"})
    assert meta.size_bytes == 3_000_000
    assert sorted(location.keys("database/")) == [
        "database/full/20261201t120000z/base.tar.gz",
        "database/full/20261201t120000z/manifest.json",
    ]
    copy = tmp_path / "copy.tar.gz"
    assert location.get_file("database/full/20261201t120000z/base.tar.gz", copy).sha256 == meta.sha256
    assert copy.read_bytes() == source.read_bytes()
    assert location.get_json("database/full/20261201t120000z/manifest.json") == {"lsn": "0/3000028"}
    location.delete("database/full/20261201t120000z/base.tar.gz")
    with pytest.raises(NotFound):
        location.stat("database/full/20261201t120000z/base.tar.gz")


def test_a_key_outside_the_storage_rules_is_refused(tmp_path: Path) -> None:
    location = BackupLocation.folder(tmp_path)
    with pytest.raises(InvalidArgument):
        location.put_bytes("../escape", b"no")
    with pytest.raises(InvalidArgument):
        location.put_bytes("Upper/Case", b"no")


def test_steps_print_one_line_each_and_a_failure_exits_1() -> None:
    out = io.StringIO()
    report = Reporter(out=out, err=io.StringIO())
    with report.step("first"):
        pass
    report.result("backup_id", "b1")
    with pytest.raises(Failed), report.step("second"):
        raise OpsError("the database does not answer")
    assert report.finish() == 1
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("first ... ok (")
    assert lines[1].startswith("second ... FAILED (")
    assert lines[1].endswith("s): the database does not answer")
    assert lines[2] == "backup_id: b1"


def test_json_mode_prints_one_document() -> None:
    out = io.StringIO()
    report = Reporter(as_json=True, out=out, err=io.StringIO())
    with report.step("only"):
        pass
    report.result("jobs", 3)
    assert report.finish() == 0
    document = json.loads(out.getvalue())
    assert document["ok"] is True
    assert document["results"] == {"jobs": 3}
    assert [step["name"] for step in document["steps"]] == ["only"]
