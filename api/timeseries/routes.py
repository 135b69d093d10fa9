"""`/api/v1/timeseries/*`: bucketed series over the stored readings, cut to the caller's scope."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import Staff, State
from api.errors import AUTH_ERRORS, ApiError, _resp
from api.timeseries.service import Bucket, resolve_range, wifi_series

router = APIRouter(prefix="/api/v1/timeseries", tags=["time series"])


class WifiPoint(BaseModel):
    t: datetime = Field(description="Bucket start (UTC)")
    clients_avg: float = Field(description="Average connected users, summed over access points")
    clients_max: int
    sources: int = Field(description="Access points that reported in the bucket")


class WifiSeries(BaseModel):
    unit: str
    source: str | None
    bucket: Bucket
    from_: datetime = Field(alias="from")
    to: datetime
    table: str = Field(description="wifi_ap_readings (raw) or wifi_ap_1m (rollup)")
    points: list[WifiPoint]

    model_config = {"populate_by_name": True}


@router.get(
    "/wifi",
    response_model=WifiSeries,
    response_model_by_alias=True,
    responses=AUTH_ERRORS | {403: _resp(403, "out_of_scope", "org unit outside your scope")},
)
async def wifi(
    c: Staff,
    state: State,
    from_: Annotated[
        datetime | None, Query(alias="from", description="Start (ISO 8601); default to − 1 h")
    ] = None,
    to: Annotated[datetime | None, Query(description="End (ISO 8601); default now")] = None,
    bucket: Annotated[Bucket, Query(description="Bucket width")] = Bucket.m1,
    unit: Annotated[
        str | None, Query(max_length=64, description="Org unit (default: yours); its subtree")
    ] = None,
    source: Annotated[str | None, Query(max_length=64, description="One access point")] = None,
) -> WifiSeries:
    """Public-WiFi connected users over time for an org unit's subtree or one access point.
    Fine 1-minute buckets over at most six hours read the raw readings; anything else reads the
    1-minute rollup. At most 2,000 buckets per query."""
    unit = c.check_unit(unit or c.org_unit)
    start, end, size = resolve_range(from_, to, bucket)
    units = sorted(state.site.subtree(unit))
    if source is not None:
        src = state.site.source_by_id.get(source)
        if src is None or src.org_unit not in units:
            raise ApiError(404, "not_found", f"no source '{source}' under '{unit}'")
    assert state.pool is not None
    async with state.pool.connection() as conn:
        table, rows = await wifi_series(conn, units, source, start, end, size)
    return WifiSeries(
        unit=unit,
        source=source,
        bucket=bucket,
        from_=start,
        to=end,
        table=table,
        points=[WifiPoint(t=t, clients_avg=a, clients_max=m, sources=n) for t, a, m, n in rows],
    )
