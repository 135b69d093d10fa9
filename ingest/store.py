"""Writing a batch: binary COPY into a staging table, then one INSERT … ON CONFLICT DO NOTHING
into the hypertable, so a redelivered message (same source, message id and time) is stored once.
Rejects of the same batch go to the dead-letter table in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from core.timescale import ROLLUP_BY_NAME, Edition, mark_dirty_sql
from ingest.decode import WifiApReading

WIFI_COLUMNS = (
    "time",
    "source_id",
    "org_unit_id",
    "msg_id",
    "up",
    "clients",
    "rx_bytes",
    "tx_bytes",
    "logins",
)
WIFI_TYPES = ("timestamptz", "text", "text", "text", "bool", "int4", "int8", "int8", "int4")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    transport: str
    topic: str | None
    source_id: str | None
    reason: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class BatchResult:
    inserted: int
    duplicates: int
    rejected: int


class BatchWriter:
    """Owns one connection and its staging table; `write` commits one batch atomically."""

    def __init__(self, conn: psycopg.Connection, edition: Edition) -> None:
        self.conn = conn
        self.edition = edition
        cols = ", ".join(WIFI_COLUMNS)
        self._copy_sql = f"COPY _stage_wifi ({cols}) FROM STDIN (FORMAT BINARY)"
        self._insert_sql = (
            f"INSERT INTO wifi_ap_readings ({cols}) SELECT {cols} FROM _stage_wifi "
            "ON CONFLICT DO NOTHING"
        )
        self._dirty_sql = mark_dirty_sql(ROLLUP_BY_NAME["wifi_ap_1m"]).format(stage="_stage_wifi")
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS _stage_wifi "
            "(LIKE wifi_ap_readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        conn.commit()

    def write(self, readings: Sequence[WifiApReading], dead: Sequence[DeadLetter]) -> BatchResult:
        inserted = 0
        with self.conn.transaction(), self.conn.cursor() as cur:
            if readings:
                with cur.copy(self._copy_sql) as copy:
                    copy.set_types(WIFI_TYPES)
                    for r in readings:
                        copy.write_row(
                            (
                                r.time,
                                r.source_id,
                                r.org_unit_id,
                                r.msg_id,
                                r.up,
                                r.clients,
                                r.rx_bytes,
                                r.tx_bytes,
                                r.logins,
                            )
                        )
                cur.execute(self._insert_sql)
                inserted = cur.rowcount
                if self.edition == "apache" and inserted:
                    cur.execute(self._dirty_sql)
            if dead:
                with cur.copy(
                    "COPY dead_letters (transport, topic, source_id, reason, payload) FROM STDIN"
                ) as copy:
                    for d in dead:
                        copy.write_row((d.transport, d.topic, d.source_id, d.reason, d.payload))
        return BatchResult(inserted, len(readings) - inserted, len(dead))
