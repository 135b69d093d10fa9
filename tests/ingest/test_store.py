"""The writer on the real TimescaleDB: a batch is stored once however often it is written, the
optimistic COPY falls back to ON CONFLICT on redelivery, rollup buckets are marked."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from ingest.decode import WifiApReading
from ingest.store import BatchWriter, DeadLetter


def readings(run: str, n: int, t0: datetime) -> list[WifiApReading]:
    return [
        WifiApReading(t0 + timedelta(seconds=i), "wifi-ap-iadom", "iahdrai-iadom", f"{run}-{i}",
                      True, i, None, None, None)
        for i in range(n)
    ]  # fmt: skip


def test_redelivered_rows_are_stored_once(isettings, idb):
    run = uuid.uuid4().hex[:6]
    t0 = datetime(2025, 6, 1, 3, 0, tzinfo=UTC)
    with psycopg.connect(isettings.database_url.get_secret_value()) as conn:
        w = BatchWriter(conn, "apache")
        first = w.write(readings(run, 300, t0), [])
        assert (first.inserted, first.duplicates) == (300, 0)
        # half of them again (a redelivery after commit-before-ack), plus new ones and a reject
        again = readings(run, 450, t0)[150:]
        dead = [DeadLetter("mqtt", "t", "wifi-ap-iadom", "malformed JSON", b"{", "malformed_json")]
        second = w.write(again + again[:10], dead)
        assert (second.inserted, second.duplicates, second.rejected) == (150, 160, 1)
    got = idb.execute(
        "SELECT count(*), count(DISTINCT msg_id) FROM wifi_ap_readings WHERE msg_id LIKE %s",
        (f"{run}-%",),
    ).fetchone()
    assert got == (450, 450)
    buckets = idb.execute(
        "SELECT count(*) FROM rollup_dirty WHERE rollup = 'wifi_ap_1m' AND source_id = "
        "'wifi-ap-iadom' AND bucket >= %s AND bucket < %s",
        (t0, t0 + timedelta(minutes=8)),
    ).fetchone()[0]
    assert buckets == 8  # 450 s of readings touch minutes 0..7
