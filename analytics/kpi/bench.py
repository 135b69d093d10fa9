"""`ioc bench kpi`: KPI refresh for N WiFi sources × D days of 1-minute data, and the latency of
the dashboard's KPI queries, each against a measured ceiling on the same database.

It builds a throwaway database, backfills the 1-minute rollup table (wifi_ap_1m) with the
simulator's office-hours load curve in SQL (COPY-speed, one statement per day), builds the KPI
parts once, then times refresh cycles that each add one new minute for every source, exactly
what the live job does. Ceilings: for the refresh, a bare aggregate over the same hour of rows
(the least work that reads the new data); for queries, a `SELECT 1` round trip.
"""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import psycopg

from analytics.kpi.store import ensure_kpi_storage, refresh_cycle, register_measures
from core.migrate import apply_migrations
from core.settings import Settings
from core.site import Site, Source
from core.sitesync import sync_site
from core.timescale import ensure_storage


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def bench_kpi(
    settings: Settings, site: Site, *, sources: int = 1000, days: int = 30, cycles: int = 5,
    queries: int = 200, keep: bool = False,
) -> dict:  # fmt: skip
    owner = settings.database_url.get_secret_value()
    name = f"ioc_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(owner, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(owner)._replace(path=f"/{name}"))
    units = [u.id for u in site.org_units if u.kind in ("commune", "agency")]
    aps = [
        Source(
            id=f"bench-ap-{i:04d}", kind="wifi_ap", org_unit=units[i % len(units)], name=f"AP {i}"
        )
        for i in range(sources)
    ]
    big = site.model_copy(update={"sources": [*site.sources, *aps]})
    out: dict = {"sources": sources, "days": days, "rows": sources * days * 1440}
    try:
        with psycopg.connect(url) as conn:
            apply_migrations(conn)
            ensure_storage(conn, raw_days=3650, rollup_days=3650)
            sync_site(conn, big)
            now = datetime.now(UTC).replace(second=0, microsecond=0)
            start = now - timedelta(days=days)
            t0 = time.perf_counter()
            for d in range(days):  # one statement per day of data
                a = start + timedelta(days=d)
                conn.execute(
                    """INSERT INTO wifi_ap_1m (bucket, source_id, org_unit_id, clients_avg,
                           clients_max, up_ratio, logins_max, samples)
                       SELECT m, s.id, s.org_unit_id,
                              60 * greatest(0.02, exp(-(((extract(hour FROM m AT TIME ZONE
                                'Asia/Ho_Chi_Minh') + extract(minute FROM m) / 60.0 - 9.5)
                                / 1.6) ^ 2))),
                              60, CASE WHEN random() < 0.002 THEN 0 ELSE 1 END, 0, 6
                       FROM sources s, generate_series(%s::timestamptz, %s::timestamptz
                            - INTERVAL '1 minute', INTERVAL '1 minute') AS m
                       WHERE s.id LIKE 'bench-ap-%%'""",
                    (a, a + timedelta(days=1)),
                )
                conn.commit()
            out["backfill_s"] = round(time.perf_counter() - t0, 1)
            ensure_kpi_storage(conn)
            t0 = time.perf_counter()
            register_measures(conn, big)
            first = refresh_cycle(conn, big, now)
            out["initial_build_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            out["initial_hours"] = first.hours
            refresh, ceiling = [], []
            for i in range(cycles):
                minute = now + timedelta(minutes=i)
                conn.execute(
                    "INSERT INTO wifi_ap_1m (bucket, source_id, org_unit_id, clients_avg, "
                    "clients_max, up_ratio, logins_max, samples) SELECT %s, id, org_unit_id, "
                    "30, 40, 1, 0, 6 FROM sources WHERE id LIKE 'bench-ap-%%' "
                    "ON CONFLICT DO NOTHING",
                    (minute,),
                )
                conn.commit()
                t1 = time.perf_counter()
                refresh_cycle(conn, big, minute + timedelta(seconds=30))
                refresh.append((time.perf_counter() - t1) * 1000)
                hour = minute.replace(minute=0)
                t1 = time.perf_counter()
                conn.execute(
                    "SELECT org_unit_id, count(*), sum(samples) FROM wifi_ap_1m "
                    "WHERE bucket >= %s AND bucket < %s GROUP BY 1",
                    (hour, hour + timedelta(hours=1)),
                ).fetchall()
                ceiling.append((time.perf_counter() - t1) * 1000)
            out["refresh_ms"] = round(statistics.median(refresh), 1)
            out["refresh_ms_all"] = [round(x, 1) for x in refresh]
            out["refresh_ceiling_ms"] = round(statistics.median(ceiling), 2)
            out["refresh_ratio_to_ceiling"] = round(
                out["refresh_ms"] / out["refresh_ceiling_ms"], 1
            )
            out.update(_queries(conn, big, now, queries))
    finally:
        if not keep:
            with psycopg.connect(owner, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    out["target_refresh_ms"], out["target_query_p95_ms"] = 1000, 50
    return out


def _queries(conn: psycopg.Connection, site: Site, now: datetime, n: int) -> dict:
    """The dashboard's KPI reads: current values of a unit's subtree, a 30-day trend, and the
    hourly series of the last 7 days from the parts."""
    subtree = list(site.subtree("iahdrai"))
    meas = conn.execute("SELECT measure FROM kpi_measures WHERE input = 'wifi' LIMIT 1").fetchone()
    qs = [
        ('SELECT kpi_id, org_unit_id, "window", value, target, status, forecast, detail '
         "FROM kpi_current WHERE org_unit_id = ANY(%s)", (subtree,)),
        ('SELECT time, value, status FROM kpi_values WHERE kpi_id = %s AND org_unit_id = %s '
         'AND "window" = %s AND time > %s ORDER BY time',
         ("wifi_uptime", "iahdrai", "today", now - timedelta(days=30))),
        ("SELECT bucket, sum(n), sum(total) FROM kpi_rollup WHERE measure = %s "
         "AND org_unit_id = ANY(%s) AND bucket > %s GROUP BY 1 ORDER BY 1",
         (meas[0] if meas else "", subtree, now - timedelta(days=7))),
    ]  # fmt: skip
    times, base = [], []
    for i in range(n):
        sql, args = qs[i % len(qs)]
        t = time.perf_counter()
        conn.execute(sql, args).fetchall()  # type: ignore[arg-type]
        times.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        conn.execute("SELECT 1").fetchall()
        base.append((time.perf_counter() - t) * 1000)
    conn.commit()
    return {
        "query_p95_ms": round(_p95(times), 2),
        "query_median_ms": round(statistics.median(times), 2),
        "query_ceiling_ms": round(statistics.median(base), 3),
        "query_ratio_to_ceiling": round(statistics.median(times) / statistics.median(base), 1),
        "queries": n,
    }
