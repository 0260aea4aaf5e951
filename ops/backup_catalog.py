"""What the backup location holds: one manifest per database backup, the chains they form, retention.

    database/base/<id>/base.tar.gz        a pg_basebackup (full or incremental), plain format packed
    database/base/<id>/backup_manifest    its PostgreSQL manifest (what the next --incremental starts from)
    database/base/<id>/manifest.json      our record of it (BackupRecord), written last: no record, no backup
    database/logical/<id>/database.dump   a pg_dump -Fc, with its manifest.json
    database/wal/<segment>.gz             archived WAL (archive-wal), what point-in-time recovery replays

An incremental backup names its parent; restoring it needs the whole chain down to a full backup.
Retention never deletes the newest full backup, the newest backup of each kind, nor any backup a
kept incremental still needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from libs.errors import NotFound
from ops.location import BackupLocation
from ops.report import OpsError

BASE_PREFIX = "database/base/"
LOGICAL_PREFIX = "database/logical/"
WAL_PREFIX = "database/wal/"
MANIFEST_NAME = "manifest.json"
FULL = "full"
INCREMENTAL = "incremental"
LOGICAL = "logical"
PHYSICAL_KINDS = frozenset({FULL, INCREMENTAL})
FORMAT_VERSION = 1
# Keys listed before the location is deemed not a backup location (every listing loop stops there).
MAX_KEYS = 1_000_000
# A chain longer than this is a loop in the records (a day of incrementals every 6 h is 4).
MAX_CHAIN = 1000
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def lsn_value(lsn: str) -> int:
    """An LSN such as "0/3000028" as a number, to compare."""
    match = _LSN.match(lsn.strip())
    if match is None:
        raise OpsError(f"not an LSN: {lsn!r} (expected the form 0/3000028)")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


@dataclass(frozen=True)
class StoredFile:
    key: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class BackupRecord:
    id: str
    kind: str
    start_time: datetime
    end_time: datetime
    postgres_version: str
    database: str
    superuser: str
    database_size_bytes: int
    job_count: int | None
    files: dict[str, StoredFile]
    parent_id: str | None = None
    start_lsn: str | None = None
    end_lsn: str | None = None
    timeline: int | None = None
    start_wal_file: str | None = None
    system_identifier: str | None = None
    data_size_bytes: int = 0
    verified: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return (LOGICAL_PREFIX if self.kind == LOGICAL else BASE_PREFIX) + self.id + "/"

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["start_time"] = self.start_time.isoformat()
        document["end_time"] = self.end_time.isoformat()
        document["format_version"] = FORMAT_VERSION
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> BackupRecord:
        fields = {key: value for key, value in document.items() if key in cls.__dataclass_fields__}
        fields["start_time"] = datetime.fromisoformat(document["start_time"])
        fields["end_time"] = datetime.fromisoformat(document["end_time"])
        fields["files"] = {role: StoredFile(**stored) for role, stored in document["files"].items()}
        return cls(**fields)


class BackupCatalog:
    """The records of a backup location."""

    def __init__(self, location: BackupLocation) -> None:
        self.location = location

    def _manifest_keys(self) -> list[str]:
        keys = []
        for count, key in enumerate(self.location.keys("database/"), 1):
            if count > MAX_KEYS:
                raise OpsError(f"more than {MAX_KEYS} keys under database/ in {self.location.description}")
            if key.startswith((BASE_PREFIX, LOGICAL_PREFIX)) and key.endswith("/" + MANIFEST_NAME):
                keys.append(key)
        return keys

    def records(self) -> list[BackupRecord]:
        """Every recorded backup, oldest first (by end time)."""
        records = []
        for key in self._manifest_keys():
            try:
                records.append(BackupRecord.from_json(self.location.get_json(key)))
            except NotFound:
                continue  # deleted meanwhile (a concurrent retention run)
            except (KeyError, TypeError, ValueError) as error:
                raise OpsError(f"{key} in {self.location.description} is not a backup record: {error}") from error
        return sorted(records, key=lambda record: (record.end_time, record.id))

    def save(self, record: BackupRecord) -> None:
        self.location.put_json(record.prefix + MANIFEST_NAME, record.to_json())

    def delete(self, record: BackupRecord) -> None:
        """The record first, so a backup half deleted is never listed as one."""
        self.location.delete(record.prefix + MANIFEST_NAME)
        for stored in record.files.values():
            self.location.delete(stored.key)

    def wal_keys(self) -> list[str]:
        keys = []
        for count, key in enumerate(self.location.keys(WAL_PREFIX), 1):
            if count > MAX_KEYS:
                raise OpsError(f"more than {MAX_KEYS} WAL segments in {self.location.description}")
            keys.append(key)
        return keys


def chain_of(record: BackupRecord, by_id: dict[str, BackupRecord]) -> list[BackupRecord]:
    """The backups a restore of `record` needs, full backup first; OpsError when a parent is missing."""
    chain = [record]
    while chain[-1].kind == INCREMENTAL:
        parent_id = chain[-1].parent_id or ""
        if parent_id not in by_id:
            raise OpsError(f"backup {chain[-1].id} needs {parent_id or 'a parent'}, which is not in the location")
        if len(chain) >= MAX_CHAIN:
            raise OpsError(f"the chain of backup {record.id} is longer than {MAX_CHAIN}: a loop in the records?")
        chain.append(by_id[parent_id])
    return list(reversed(chain))


def newest_restorable(
    records: Iterable[BackupRecord], *, before_time: datetime | None = None, before_lsn: int | None = None
) -> list[BackupRecord]:
    """The chain of the newest physical backup that ended before the target, full backup first."""
    physical = [record for record in records if record.kind in PHYSICAL_KINDS and record.verified]
    by_id = {record.id: record for record in physical}
    candidates = [
        record
        for record in physical
        if (before_time is None or record.end_time <= before_time)
        and (before_lsn is None or (record.end_lsn is not None and lsn_value(record.end_lsn) <= before_lsn))
    ]
    problems = []
    for record in reversed(candidates):
        try:
            return chain_of(record, by_id)
        except OpsError as error:
            problems.append(str(error))
    target = "the target" if before_time or before_lsn is not None else "now"
    raise OpsError("no complete database backup ending before " + target + "".join(f"; {p}" for p in problems[:3]))


def newest_logical(records: Iterable[BackupRecord], *, before_time: datetime | None = None) -> BackupRecord:
    """The newest logical backup (pg_dump) that ended before the target."""
    matching = [
        record
        for record in records
        if record.kind == LOGICAL and record.verified and (before_time is None or record.end_time <= before_time)
    ]
    if not matching:
        raise OpsError("no logical backup (backup --logical) ending before " + ("the target" if before_time else "now"))
    return matching[-1]


def _newest(records: list[BackupRecord], kinds: frozenset[str]) -> BackupRecord | None:
    matching = [record for record in records if record.kind in kinds and record.verified]
    return matching[-1] if matching else None


def backups_to_prune(records: list[BackupRecord], now: datetime, retention: timedelta) -> list[BackupRecord]:
    """The backups older than `retention` that nothing kept needs (records oldest first)."""
    by_id = {record.id: record for record in records}
    keep = {record.id for record in records if record.end_time >= now - retention}
    for protected in (
        _newest(records, frozenset({FULL})),
        _newest(records, PHYSICAL_KINDS),
        _newest(records, frozenset({LOGICAL})),
    ):
        if protected is not None:
            keep.add(protected.id)
    for record_id in list(keep):
        keep.update(_ancestors(by_id[record_id], by_id))
    return [record for record in records if record.id not in keep]


def _ancestors(record: BackupRecord, by_id: dict[str, BackupRecord]) -> set[str]:
    """The ids of the parents of `record` that exist (all of them for a complete chain)."""
    ancestors: set[str] = set()
    parent_id = record.parent_id
    while parent_id in by_id and parent_id not in ancestors and len(ancestors) < MAX_CHAIN:
        ancestors.add(parent_id)
        parent_id = by_id[parent_id].parent_id
    return ancestors


def wal_to_prune(wal_keys: list[str], kept: list[BackupRecord]) -> list[str]:
    """Archived WAL segments older than the start of the oldest kept physical backup (history files stay)."""
    starts = [record.start_wal_file for record in kept if record.kind in PHYSICAL_KINDS and record.start_wal_file]
    if not starts:
        return []
    oldest = min(start.lower()[8:24] for start in starts)  # log and segment number, across timelines
    prunable = []
    for key in wal_keys:
        name = key.removeprefix(WAL_PREFIX).split(".", 1)[0]
        if len(name) == 24 and not key.endswith(".history.gz") and name[8:24] < oldest:
            prunable.append(key)
    return prunable
