"""TimescaleDB on either edition: rollups and retention.

The Apache-licensed build (what Debian's source package gives) has hypertables and `time_bucket`
but no continuous aggregates, compression or policies. There the project keeps its rollups itself
(incremental upserts of the buckets that new rows touched) and drops old chunks with `drop_chunks`.
Where the extension reports the community licence, the same relations are created as continuous
aggregates with native refresh, compression and retention policies. Queries read the same names
and columns on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg

Edition = Literal["apache", "community"]


@dataclass(frozen=True)
class Rollup:
    """A 1-minute rollup of a raw hypertable, grouped by source."""

    name: str
    raw_table: str
    bucket: str
    columns: str  # aggregate expressions with their aliases
    column_types: str  # the same columns as a table definition (Apache edition)


ROLLUPS: tuple[Rollup, ...] = (
    Rollup(
        name="wifi_ap_1m",
        raw_table="wifi_ap_readings",
        bucket="1 minute",
        columns=(
            "avg(clients)::float8 AS clients_avg, max(clients) AS clients_max, "
            "avg(up::int)::float8 AS up_ratio, max(logins) AS logins_max, count(*) AS samples"
        ),
        column_types=(
            "clients_avg float8 NOT NULL, clients_max integer NOT NULL, up_ratio float8 NOT NULL, "
            "logins_max integer, samples bigint NOT NULL"
        ),
    ),
)
ROLLUP_BY_NAME = {r.name: r for r in ROLLUPS}
RAW_TABLES = ("wifi_ap_readings", "telemetry", "events", "dead_letters")
# Typed streams (migration 0003): same retention as the other raw tables.
STREAM_TABLES = (
    "wifi_logins",
    "dossier_events",
    "payments",
    "field_reports",
    "press_items",
    "budget_status",
    "stream_records",
)
RAW_TABLES += STREAM_TABLES


def detect_edition(conn: psycopg.Connection) -> Edition:
    """'community' where the extension runs under the Timescale licence, else 'apache'."""
    row = conn.execute("SHOW timescaledb.license").fetchone()
    return "community" if row and row[0] == "timescale" else "apache"


def rollup_ddl(r: Rollup, edition: Edition, *, rollup_days: int) -> list[str]:
    """Statements that create rollup `r` on the given edition (idempotent)."""
    select = (
        f"SELECT time_bucket('{r.bucket}', time) AS bucket, source_id, org_unit_id, {r.columns} "
        f"FROM {r.raw_table} GROUP BY 1, 2, 3"
    )
    if edition == "community":
        return [
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {r.name} "
            f"WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS {select} "
            "WITH NO DATA",
            f"SELECT add_continuous_aggregate_policy('{r.name}', "
            "start_offset => INTERVAL '7 days', end_offset => INTERVAL '1 minute', "
            "schedule_interval => INTERVAL '1 minute', "
            "if_not_exists => true)",
            f"ALTER MATERIALIZED VIEW {r.name} SET (timescaledb.compress = true)",
            f"SELECT add_compression_policy('{r.name}', compress_after => INTERVAL '30 days', "
            "if_not_exists => true)",
            f"SELECT add_retention_policy('{r.name}', drop_after => INTERVAL '{rollup_days} days', "
            "if_not_exists => true)",
        ]
    return [
        f"CREATE TABLE IF NOT EXISTS {r.name} (bucket timestamptz NOT NULL, "
        f"source_id text NOT NULL, org_unit_id text NOT NULL, {r.column_types}, "
        "PRIMARY KEY (source_id, bucket))",
        f"SELECT create_hypertable('{r.name}', by_range('bucket', INTERVAL '30 days'), "
        "if_not_exists => true)",
    ]


def retention_ddl(edition: Edition, *, raw_days: int) -> list[str]:
    """Native retention and compression policies for the raw tables (community edition only)."""
    if edition == "apache":
        return []
    out = []
    for table in RAW_TABLES:
        out.append(
            f"SELECT add_retention_policy('{table}', drop_after => INTERVAL '{raw_days} days', "
            "if_not_exists => true)"
        )
    for table, segment in (("wifi_ap_readings", "source_id"), ("telemetry", "source_id, metric")):
        out.append(
            f"ALTER TABLE {table} SET (timescaledb.compress, "
            f"timescaledb.compress_segmentby = '{segment}')"
        )
        out.append(
            f"SELECT add_compression_policy('{table}', compress_after => INTERVAL '7 days', "
            "if_not_exists => true)"
        )
    return out


def ensure_storage(conn: psycopg.Connection, *, raw_days: int, rollup_days: int) -> Edition:
    """Create rollups and (community edition) native policies. Idempotent."""
    edition = detect_edition(conn)
    with conn.transaction():
        for r in ROLLUPS:
            for stmt in rollup_ddl(r, edition, rollup_days=rollup_days):
                conn.execute(stmt)  # type: ignore[arg-type]
        for stmt in retention_ddl(edition, raw_days=raw_days):
            conn.execute(stmt)  # type: ignore[arg-type]
    return edition


def mark_dirty_sql(r: Rollup) -> str:
    """SQL run by ingest in the batch's transaction: record the buckets the staged rows touch."""
    return (
        f"INSERT INTO rollup_dirty (rollup, bucket, source_id) "
        f"SELECT DISTINCT '{r.name}', time_bucket('{r.bucket}', time), source_id FROM {{stage}} "
        "ON CONFLICT DO NOTHING"
    )


def refresh_rollups(conn: psycopg.Connection, edition: Edition, *, limit: int = 50_000) -> int:
    """Recompute the buckets that new rows touched; return how many buckets were rewritten.

    Apache edition: take dirty buckets (SKIP LOCKED, so two workers never do the same one),
    recompute each from the raw rows, upsert. Community edition: the native policy refreshes;
    here we only ask for an immediate refresh of the recent window so callers see fresh data.
    """
    if edition == "community":
        for r in ROLLUPS:
            conn.execute(
                f"CALL refresh_continuous_aggregate('{r.name}', now() - INTERVAL '1 day', NULL)"
            )  # type: ignore[arg-type]
        return 0
    total = 0
    for r in ROLLUPS:
        with conn.transaction():
            rows = conn.execute(
                "DELETE FROM rollup_dirty WHERE ctid IN (SELECT ctid FROM rollup_dirty "
                "WHERE rollup = %s LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING bucket, source_id",
                (r.name, limit),
            ).fetchall()
            if not rows:
                continue
            buckets = [b for b, _ in rows]
            sources = [s for _, s in rows]
            conn.execute(
                f"""INSERT INTO {r.name}
                    SELECT time_bucket('{r.bucket}', t.time) AS bucket, t.source_id,
                           (array_agg(t.org_unit_id ORDER BY t.time DESC))[1], {r.columns}
                    FROM unnest(%s::timestamptz[], %s::text[]) AS d(bucket, source_id)
                    JOIN {r.raw_table} t ON t.source_id = d.source_id
                     AND t.time >= d.bucket AND t.time < d.bucket + INTERVAL '{r.bucket}'
                    GROUP BY 1, 2
                    ON CONFLICT (source_id, bucket) DO UPDATE SET
                    {", ".join(f"{c} = EXCLUDED.{c}" for c in _column_names(r))},
                    org_unit_id = EXCLUDED.org_unit_id""",  # type: ignore[arg-type]
                (buckets, sources),
            )
            total += len(rows)
    return total


def _column_names(r: Rollup) -> list[str]:
    return [part.strip().split()[0] for part in r.column_types.split(",")]


def apply_retention(
    conn: psycopg.Connection,
    edition: Edition,
    *,
    raw_days: int,
    rollup_days: int,
    now: datetime | None = None,
) -> dict[str, int]:
    """Apache edition: drop chunks older than the retention; return chunks dropped per table."""
    if edition == "community":
        return {}
    dropped: dict[str, int] = {}
    horizon = "now()" if now is None else "%(now)s::timestamptz"
    params = {"now": now}
    for table, days in [(t, raw_days) for t in RAW_TABLES] + [
        (r.name, rollup_days) for r in ROLLUPS
    ]:
        rows = conn.execute(
            f"SELECT drop_chunks('{table}', older_than => {horizon} - INTERVAL '{days} days')",  # type: ignore[arg-type]
            params,
        ).fetchall()
        dropped[table] = len(rows)
    conn.commit()
    return dropped
