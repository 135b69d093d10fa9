"""Backups: a restore drill that measures data lost (RPO) and time to recover (RTO) while data
flows; a damaged backup is refused with one line."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest

from core.backup import backup, restore
from core.errors import IOCError
from tests.conftest import _with_db


def test_restore_drill_measures_rpo_and_rto(migrated, tmp_path):
    url = migrated.database_url.get_secret_value()
    stop = threading.Event()
    committed: list[datetime] = []

    def writer() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                t = datetime.now(UTC)
                conn.execute(
                    "INSERT INTO wifi_ap_readings (time, source_id, org_unit_id, msg_id, up, "
                    "clients) VALUES (%s, 'drill-ap', 'iahdrai-iatoi', %s, true, %s)",
                    (t, f"drill-{i}", i),
                )
                committed.append(t)
                i += 1
                time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.5)
    result = backup(migrated, directory=tmp_path)
    time.sleep(0.5)
    stop.set()
    thread.join()
    disaster_at = committed[-1]  # the last write before the "disaster"

    target = f"{url.rsplit('/', 1)[1]}_drill"
    db_name, rows, rto = restore(migrated, result.path, target_db=target)
    try:
        with psycopg.connect(_with_db(url, db_name)) as conn:
            newest, n = conn.execute(
                "SELECT max(time), count(*) FROM wifi_ap_readings WHERE source_id = 'drill-ap'"
            ).fetchone()
            # the snapshot is consistent: ids are a gap-free prefix of what was written
            ids = sorted(
                int(r[0].split("-")[1])
                for r in conn.execute(
                    "SELECT msg_id FROM wifi_ap_readings WHERE source_id = 'drill-ap'"
                )
            )
            assert ids == list(range(n))
            chunks = conn.execute(
                "SELECT count(*) FROM timescaledb_information.chunks "
                "WHERE hypertable_name = 'wifi_ap_readings'"
            ).fetchone()[0]
            assert chunks >= 1
            units = conn.execute("SELECT count(*) FROM org_units").fetchone()[0]
            assert units == 11
        rpo = (disaster_at - newest).total_seconds()
        print(f"restore drill: RPO {rpo:.2f}s (since the backup), RTO {rto:.2f}s, {rows} rows")
        assert 0 < n < len(committed)
        assert rpo >= 0.4  # what was written after the backup is what a restore loses
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def test_a_damaged_backup_is_refused(migrated, tmp_path):
    result = backup(migrated, directory=tmp_path)
    part = result.path / "wifi_ap_readings.copy.gz"
    part.write_bytes(part.read_bytes()[:-5] + b"xxxxx")
    with pytest.raises(IOCError, match=r"wifi_ap_readings\.copy\.gz is damaged"):
        restore(migrated, result.path, target_db="never_made")


def test_old_backups_are_pruned_but_the_newest_kept(migrated, tmp_path):
    import os

    first = backup(migrated, directory=tmp_path).path
    old = time.time() - 30 * 86400
    os.utime(first, (old, old))
    second = backup(migrated, directory=tmp_path, keep_days=14)
    assert second.pruned == [first]
    assert not first.exists() and second.path.exists()
