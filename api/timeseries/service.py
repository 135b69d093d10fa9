"""Time ranges and bucketing for the time-series queries, as pure functions, and the SQL over the
WiFi readings (raw hypertable for short fine-grained windows, the 1-minute rollup otherwise)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum

from psycopg import AsyncConnection

from api.errors import ApiError

MAX_POINTS = 2000
MAX_RANGE = timedelta(days=800)
RAW_MAX_RANGE = timedelta(hours=6)


class Bucket(StrEnum):
    m1 = "1m"
    m5 = "5m"
    m15 = "15m"
    h1 = "1h"
    h6 = "6h"
    d1 = "1d"


BUCKET_SIZE = {
    Bucket.m1: timedelta(minutes=1),
    Bucket.m5: timedelta(minutes=5),
    Bucket.m15: timedelta(minutes=15),
    Bucket.h1: timedelta(hours=1),
    Bucket.h6: timedelta(hours=6),
    Bucket.d1: timedelta(days=1),
}


def resolve_range(
    start: datetime | None, end: datetime | None, bucket: Bucket, now: datetime | None = None
) -> tuple[datetime, datetime, timedelta]:
    """Fill defaults (the last hour) and refuse ranges that are reversed, huge or too fine."""
    now = now or datetime.now(UTC)
    end = _aware(end) if end else now
    start = _aware(start) if start else end - timedelta(hours=1)
    if start >= end:
        raise ApiError(422, "invalid_input", "`from` must be before `to`")
    if end - start > MAX_RANGE:
        raise ApiError(422, "invalid_input", f"the range may span at most {MAX_RANGE.days} days")
    size = BUCKET_SIZE[bucket]
    if (end - start) / size > MAX_POINTS:
        raise ApiError(
            422, "too_many_points", f"more than {MAX_POINTS} buckets of {bucket.value}: widen it"
        )
    return start, end, size


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


async def wifi_series(
    conn: AsyncConnection,
    units: list[str],
    source: str | None,
    start: datetime,
    end: datetime,
    size: timedelta,
) -> tuple[str, list[tuple[datetime, float, int, int]]]:
    """Connected users per bucket summed over the access points of `units` (or one source):
    (table used, [(bucket start, clients avg, clients max, sources reporting)])."""
    raw = size == BUCKET_SIZE[Bucket.m1] and end - start <= RAW_MAX_RANGE
    if raw:
        table = "wifi_ap_readings"
        inner = """SELECT time_bucket(%(size)s, time) AS t, source_id,
                          avg(clients)::float8 AS c_avg, max(clients) AS c_max
                   FROM wifi_ap_readings
                   WHERE time >= %(start)s AND time < %(end)s AND org_unit_id = ANY(%(units)s)
                     {src} GROUP BY 1, 2"""
    else:
        table = "wifi_ap_1m"
        inner = """SELECT time_bucket(%(size)s, bucket) AS t, source_id,
                          (sum(clients_avg * samples) / sum(samples))::float8 AS c_avg,
                          max(clients_max) AS c_max
                   FROM wifi_ap_1m
                   WHERE bucket >= %(start)s AND bucket < %(end)s AND org_unit_id = ANY(%(units)s)
                     {src} GROUP BY 1, 2"""
    inner = inner.format(src="AND source_id = %(source)s" if source else "")
    sql = f"""SELECT t, sum(c_avg)::float8, sum(c_max)::int, count(*)::int
              FROM ({inner}) s GROUP BY t ORDER BY t"""
    cur = await conn.execute(
        sql,  # type: ignore[arg-type]
        {"size": size, "start": start, "end": end, "units": units, "source": source},
    )
    return table, await cur.fetchall()
