"""Writing a batch: binary COPY into a staging table per target table, then one
INSERT … ON CONFLICT DO NOTHING into the hypertable, so a redelivered message (same source,
message id and time) is stored once. Rejects of the same batch go to the dead-letter table in
the same transaction, so a batch is committed — and acknowledged — as a whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import psycopg

from core.timescale import ROLLUP_BY_NAME, Edition
from ingest.decode import Accepted
from ingest.streams import TABLES, WIFI, Table

WIFI_COLUMNS = WIFI.all_columns
WIFI_TYPES = WIFI.all_types
_TABLES = {t.name: t for t in TABLES}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    transport: str
    topic: str | None
    source_id: str | None
    reason: str
    payload: bytes
    code: str = "invalid"


@dataclass(frozen=True, slots=True)
class BatchResult:
    inserted: int
    duplicates: int
    rejected: int
    by_table: dict[str, int] = field(default_factory=dict)


class BatchWriter:
    """Owns one connection and its staging tables; `write` commits one batch atomically."""

    def __init__(self, conn: psycopg.Connection, edition: Edition) -> None:
        self.conn = conn
        self.edition = edition
        self._staged: set[str] = set()
        # End any implicit transaction (e.g. from detect_edition): a batch must be a top-level
        # transaction that commits, never a savepoint inside one that is never committed.
        conn.commit()
        self._ensure_stage(WIFI)

    def _ensure_stage(self, t: Table) -> None:
        if t.name in self._staged:
            return
        with self.conn.transaction():
            self.conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS _stage_{t.name} "  # type: ignore[arg-type]
                f"(LIKE {t.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
        self._staged.add(t.name)

    def write(self, records: Sequence[Accepted], dead: Sequence[DeadLetter]) -> BatchResult:
        groups: dict[str, list[Accepted]] = {}
        for r in records:
            groups.setdefault(r.table.name, []).append(r)
        for name in groups:
            self._ensure_stage(_TABLES[name])
        inserted = staged = 0
        by_table: dict[str, int] = {}
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.conn.commit()
        with self.conn.transaction(), self.conn.cursor() as cur:
            for name, group in groups.items():
                t = _TABLES[name]
                n_rows, n_new = self._write_table(cur, t, (row for r in group for row in r.rows()))
                staged += n_rows
                inserted += n_new
                by_table[name] = n_new
            if dead:
                with cur.copy(
                    "COPY dead_letters (transport, topic, source_id, reason, payload, code) "
                    "FROM STDIN"
                ) as copy:
                    for d in dead:
                        copy.write_row(
                            (d.transport, d.topic, d.source_id, d.reason, d.payload, d.code)
                        )
        return BatchResult(inserted, staged - inserted, len(dead), by_table)

    def _write_table(self, cur: psycopg.Cursor, t: Table, rows: Iterable[tuple]) -> tuple[int, int]:
        """Optimistic: COPY straight into the hypertable inside a savepoint (the common case, no
        redelivered message, costs one COPY); on a unique violation roll the savepoint back and
        go through staging with ON CONFLICT DO NOTHING. Either way the unique index decides."""
        batch = list(rows)
        if not batch:
            return 0, 0
        cols = ", ".join(t.all_columns)
        try:
            with self.conn.transaction():
                self._copy(cur, t.name, t, batch)
            new = len(batch)
        except psycopg.errors.UniqueViolation:
            self._copy(cur, f"_stage_{t.name}", t, batch)
            cur.execute(
                f"INSERT INTO {t.name} ({cols}) SELECT {cols} FROM _stage_{t.name} "  # type: ignore[arg-type]
                "ON CONFLICT DO NOTHING"
            )
            new = cur.rowcount
        if t.rollup and self.edition == "apache" and new:
            self._mark_dirty(cur, t, batch)
        return len(batch), new

    @staticmethod
    def _copy(cur: psycopg.Cursor, target: str, t: Table, batch: list[tuple]) -> None:
        cols = ", ".join(t.all_columns)
        with cur.copy(f"COPY {target} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:  # type: ignore[arg-type]
            copy.set_types(t.all_types)
            for row in batch:
                copy.write_row(row)

    @staticmethod
    def _mark_dirty(cur: psycopg.Cursor, t: Table, batch: list[tuple]) -> None:
        """Record the 1-minute buckets (per source) the rows touch, for the rollup job."""
        r = ROLLUP_BY_NAME[t.rollup or ""]
        if r.bucket != "1 minute":  # pragma: no cover - every rollup is per minute today
            raise ValueError(f"rollup {r.name}: only 1-minute buckets are marked here")
        touched = {(row[0].replace(second=0, microsecond=0), row[1]) for row in batch}
        cur.execute(
            "INSERT INTO rollup_dirty (rollup, bucket, source_id) "
            "SELECT %s, b, s FROM unnest(%s::timestamptz[], %s::text[]) AS d(b, s) "
            "ON CONFLICT DO NOTHING",
            (r.name, [b for b, _ in touched], [s_ for _, s_ in touched]),
        )
