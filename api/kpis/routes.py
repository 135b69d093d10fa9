"""`/api/v1/kpis/*`: KPI definitions with targets, live values, status, forecast and history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import orjson
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import Anyone, AppState, State
from api.errors import AUTH_ERRORS, NOT_FOUND, ApiError
from api.kpis.service import end_of_year, forecast, status, target_for
from api.timeseries.service import Bucket, resolve_range
from core.site import KpiTarget

router = APIRouter(prefix="/api/v1/kpis", tags=["kpis"])


class KpiOut(BaseModel):
    id: str = Field(examples=["online_rate"])
    name: str = Field(examples=["Tỷ lệ hồ sơ trực tuyến toàn trình"])
    name_en: str | None
    unit: str = Field(examples=["%"])
    direction: str = Field(examples=["higher"])
    org_unit: str
    target: float | None = Field(examples=[85])
    value: float | None = Field(description="Latest value (null when none yet)")
    ts: float | None = Field(description="When the latest value was computed (epoch s)")
    status: str = Field(description="ok, warn, bad or none (no target / no value)")
    forecast: float | None = Field(description="Trend of the last 7 days extrapolated")
    forecast_at: datetime | None


class KpiValueOut(BaseModel):
    kpi: str
    org_unit: str
    value: float
    ts: float


class KpiPoint(BaseModel):
    t: datetime
    value: float


class KpiHistory(BaseModel):
    kpi: str
    unit: str
    bucket: Bucket
    points: list[KpiPoint]


def _kpi(state: AppState, kpi_id: str) -> KpiTarget:
    for k in state.site.kpis:
        if k.id == kpi_id:
            return k
    raise ApiError(404, "not_found", f"unknown KPI '{kpi_id[:64]}'")


async def _latest(state: AppState) -> dict[tuple[str, str], dict]:
    assert state.redis is not None
    raw = await state.redis.hgetall(state.keys.kpi_latest)
    out = {}
    for k, v in raw.items():
        kid, _, unit = k.decode().partition(":")
        out[(kid, unit)] = orjson.loads(v)
    return out


@router.get("", response_model=list[KpiOut], responses=AUTH_ERRORS)
async def kpis(
    c: Anyone,
    state: State,
    unit: Annotated[str | None, Query(max_length=64, description="Default: your unit")] = None,
) -> list[KpiOut]:
    """Every KPI of the site for one org unit: the plan's target for this year, the latest value,
    status against the target and a forecast from the last 7 days' trend (year end when the KPI
    has a target, the next hour otherwise)."""
    unit = c.check_unit(unit or c.org_unit)
    latest = await _latest(state)
    now = datetime.now(UTC)
    assert state.pool is not None
    async with state.pool.connection() as conn:
        rows = await (
            await conn.execute(
                """SELECT kpi_id, time_bucket('1 hour', time) AS t, avg(value)
                   FROM kpi_values WHERE org_unit_id = %s AND time > now() - interval '7 days'
                   GROUP BY 1, 2 ORDER BY 2""",
                (unit,),
            )
        ).fetchall()
    hist: dict[str, list[tuple[float, float]]] = {}
    for kid, t, v in rows:
        hist.setdefault(kid, []).append((t.timestamp(), float(v)))
    out = []
    for k in state.site.kpis:
        cur = latest.get((k.id, unit))
        target = target_for(k, now.year)
        at = end_of_year(now) if target is not None else now + timedelta(hours=1)
        value = cur["value"] if cur else None
        points = hist.get(k.id, [])
        if cur:
            points = [*points, (cur["ts"], float(cur["value"]))]
        fc = forecast(points, at.timestamp())
        out.append(
            KpiOut(
                id=k.id,
                name=k.name,
                name_en=k.name_en,
                unit=k.unit,
                direction=k.direction,
                org_unit=unit,
                target=target,
                value=value,
                ts=cur["ts"] if cur else None,
                status=status(value, target, k.direction),
                forecast=None if fc is None else round(fc, 3),
                forecast_at=at if fc is not None else None,
            )
        )
    return out


@router.get("/{kpi_id}/live", response_model=list[KpiValueOut], responses=AUTH_ERRORS | NOT_FOUND)
async def kpi_live(kpi_id: str, c: Anyone, state: State) -> list[KpiValueOut]:
    """Latest value of a KPI for every org unit in the caller's scope (drill-down by commune
    and agency: join with /org-units on `org_unit`)."""
    _kpi(state, kpi_id)
    latest = await _latest(state)
    out = [
        KpiValueOut(kpi=kid, org_unit=unit, value=d["value"], ts=d["ts"])
        for (kid, unit), d in latest.items()
        if kid == kpi_id and unit in c.scope
    ]
    return sorted(out, key=lambda x: x.org_unit)


@router.get("/{kpi_id}/history", response_model=KpiHistory, responses=AUTH_ERRORS | NOT_FOUND)
async def kpi_history(
    kpi_id: str,
    c: Anyone,
    state: State,
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: datetime | None = None,
    bucket: Bucket = Bucket.h1,
    unit: Annotated[str | None, Query(max_length=64)] = None,
) -> KpiHistory:
    """The KPI's recorded values (kpi_values) averaged per bucket, for one org unit."""
    _kpi(state, kpi_id)
    unit = c.check_unit(unit or c.org_unit)
    if from_ is None and to is None:
        to = datetime.now(UTC)
        from_ = to - timedelta(days=1)
    start, end, size = resolve_range(from_, to, bucket)
    assert state.pool is not None
    async with state.pool.connection() as conn:
        rows = await (
            await conn.execute(
                """SELECT time_bucket(%s, time) AS t, avg(value)::float8 FROM kpi_values
                   WHERE kpi_id = %s AND org_unit_id = %s AND time >= %s AND time < %s
                   GROUP BY 1 ORDER BY 1""",
                (size, kpi_id, unit, start, end),
            )
        ).fetchall()
    return KpiHistory(
        kpi=kpi_id, unit=unit, bucket=bucket, points=[KpiPoint(t=t, value=v) for t, v in rows]
    )
