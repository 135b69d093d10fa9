"""TimescaleDB: migrations, hypertables, the project's rollups and retention (Apache edition),
and the native-policy statements used where the community edition runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.errors import IOCError
from core.migrate import apply_migrations
from core.timescale import (
    ROLLUP_BY_NAME,
    apply_retention,
    detect_edition,
    refresh_rollups,
    retention_ddl,
    rollup_ddl,
)
from ingest.decode import WifiApReading
from ingest.store import BatchWriter, DeadLetter


def reading(t: datetime, clients: int, msg: str, source: str = "wifi-ap-iadal", up: bool = True):
    return WifiApReading(t, source, "iahdrai-iadal", msg, up, clients, 0, 0, None)


def test_migrations_are_recorded_and_idempotent(db):
    assert apply_migrations(db) == []
    versions = [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions[0] == "0001"


def test_an_edited_migration_is_refused(db):
    db.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = '0001'")
    with pytest.raises(IOCError, match="changed after it was applied"):
        apply_migrations(db)
    db.rollback()


def test_hypertables_exist(db):
    names = {
        r[0] for r in db.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
    }
    assert {
        "wifi_ap_readings",
        "telemetry",
        "events",
        "kpi_values",
        "dead_letters",
        "wifi_ap_1m",
    } <= names


def test_this_machine_runs_the_apache_edition(db):
    assert detect_edition(db) == "apache"


def test_batch_is_stored_once_and_rejects_kept(db):
    w = BatchWriter(db, "apache")
    t = datetime(2026, 5, 4, 1, 0, 5, tzinfo=UTC)
    res = w.write(
        [reading(t, 3, "dup-1"), reading(t, 3, "dup-1")],
        [DeadLetter("mqtt", "x/y", None, "malformed JSON", b"{")],
    )
    assert (res.inserted, res.duplicates, res.rejected) == (1, 1, 1)
    res = w.write([reading(t, 3, "dup-1")], [])  # redelivered later
    assert (res.inserted, res.duplicates) == (0, 1)
    n = db.execute("SELECT count(*) FROM wifi_ap_readings WHERE msg_id = 'dup-1'").fetchone()[0]
    assert n == 1
    assert (
        db.execute("SELECT reason FROM dead_letters WHERE topic = 'x/y'").fetchone()[0]
        == "malformed JSON"
    )


def test_rollup_is_incremental_and_takes_late_data(db):
    refresh_rollups(db, "apache")  # settle whatever earlier tests left dirty
    w = BatchWriter(db, "apache")
    src = "test-rollup-ap"  # a source no other test writes
    m0 = datetime(2026, 5, 4, 2, 0, tzinfo=UTC)
    w.write(
        [
            WifiApReading(
                m0 + timedelta(seconds=s), src, "iahdrai-iadom", f"r{s}", True, c, 0, 0, None
            )
            for s, c in ((0, 10), (20, 20), (40, 30), (65, 7))
        ],
        [],
    )
    assert refresh_rollups(db, "apache") >= 2
    rows = db.execute(
        "SELECT bucket, clients_avg, clients_max, samples FROM wifi_ap_1m WHERE source_id = %s "
        "ORDER BY bucket",
        (src,),
    ).fetchall()
    assert rows == [(m0, 20.0, 30, 3), (m0 + timedelta(minutes=1), 7.0, 7, 1)]
    # Nothing new: nothing recomputed.
    assert refresh_rollups(db, "apache") == 0
    # A late reading for the first minute re-dirties only that bucket.
    w.write(
        [
            WifiApReading(
                m0 + timedelta(seconds=50), src, "iahdrai-iadom", "late", True, 60, 0, 0, None
            )
        ],
        [],
    )
    assert refresh_rollups(db, "apache") == 1
    avg, mx, n = db.execute(
        "SELECT clients_avg, clients_max, samples FROM wifi_ap_1m "
        "WHERE source_id = %s AND bucket = %s",
        (src, m0),
    ).fetchone()
    assert (avg, mx, n) == (30.0, 60, 4)


def test_retention_drops_old_chunks_only(db):
    w = BatchWriter(db, "apache")
    now = datetime(2026, 6, 1, tzinfo=UTC)
    old, recent = now - timedelta(days=120), now - timedelta(days=2)
    w.write([reading(old, 1, "old"), reading(recent, 2, "recent")], [])
    dropped = apply_retention(db, "apache", raw_days=90, rollup_days=730, now=now)
    assert dropped["wifi_ap_readings"] >= 1
    left = {
        r[0]
        for r in db.execute("SELECT msg_id FROM wifi_ap_readings WHERE msg_id IN ('old', 'recent')")
    }
    assert left == {"recent"}


def test_community_edition_uses_native_features():
    stmts = " ".join(rollup_ddl(ROLLUP_BY_NAME["wifi_ap_1m"], "community", rollup_days=730))
    assert "timescaledb.continuous" in stmts
    assert "add_continuous_aggregate_policy" in stmts
    assert "add_retention_policy('wifi_ap_1m', drop_after => INTERVAL '730 days'" in stmts
    raw = " ".join(retention_ddl("community", raw_days=90))
    assert "add_retention_policy('wifi_ap_readings', drop_after => INTERVAL '90 days'" in raw
    assert "add_compression_policy" in raw
    # The Apache edition gets no policy calls at all (they do not exist there).
    assert retention_ddl("apache", raw_days=90) == []
    assert "policy" not in " ".join(
        rollup_ddl(ROLLUP_BY_NAME["wifi_ap_1m"], "apache", rollup_days=1)
    )


def test_apache_edition_really_lacks_continuous_aggregates(db):
    """Why the project keeps its own jobs here: the native statement is refused by this server."""
    import psycopg

    stmt = rollup_ddl(ROLLUP_BY_NAME["wifi_ap_1m"], "community", rollup_days=730)[0]
    stmt = stmt.replace("IF NOT EXISTS wifi_ap_1m", "IF NOT EXISTS wifi_ap_1m_native")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="license"):
        db.execute(stmt)
    db.rollback()
