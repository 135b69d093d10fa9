"""`/api/v1/cameras/*`: cameras and zones in scope, and their events (when the camera pipeline's
`camera_events` table exists; an empty page otherwise)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import Staff, State
from api.errors import AUTH_ERRORS, NOT_FOUND, ApiError
from api.pagination import CursorQ, LimitQ, Page, decode_cursor, page_of

router = APIRouter(prefix="/api/v1/cameras", tags=["cameras"])


class ZoneOut(BaseModel):
    id: str
    name: str
    kind: str
    points: list[tuple[float, float]]


class CameraOut(BaseModel):
    id: str = Field(examples=["cam-cau-sesan"])
    org_unit: str
    name: str
    lat: float | None
    lon: float | None
    zones: list[ZoneOut]
    status: dict[str, Any] | None = Field(description="Latest status from the camera pipeline")


class CameraEventOut(BaseModel):
    id: str
    camera: str
    org_unit: str
    rule: str = Field(examples=["intrusion"])
    zone: str | None
    label: str
    start_at: datetime
    end_at: datetime | None
    peak_count: int
    score: float
    snapshot: str | None = Field(description="Snapshot reference kept by the camera pipeline")
    detail: dict[str, Any]


@router.get("", response_model=list[CameraOut], responses=AUTH_ERRORS)
async def cameras(c: Staff, state: State) -> list[CameraOut]:
    """Cameras of the caller's scope with their analysis zones (stream URLs are not exposed)."""
    assert state.redis is not None
    raw = await state.redis.hgetall(state.keys("camera", "status"))
    status = {k.decode(): orjson.loads(v) for k, v in raw.items()}
    return [
        CameraOut(
            id=cam.id,
            org_unit=cam.org_unit,
            name=cam.name,
            lat=cam.lat,
            lon=cam.lon,
            zones=[ZoneOut(id=z.id, name=z.name, kind=z.kind, points=z.points) for z in cam.zones],
            status=status.get(cam.id),
        )
        for cam in state.site.cameras
        if cam.org_unit in c.scope
    ]


@router.get("/events", response_model=Page[CameraEventOut], responses=AUTH_ERRORS)
async def camera_events(
    c: Staff,
    state: State,
    camera: Annotated[str | None, Query(max_length=64)] = None,
    rule: Annotated[str | None, Query(max_length=32)] = None,
    limit: int = LimitQ,
    cursor: str | None = CursorQ,
) -> Page[CameraEventOut]:
    """Camera events in scope, newest first."""
    if camera is not None:
        cam = next((x for x in state.site.cameras if x.id == camera), None)
        if cam is None or cam.org_unit not in c.scope:
            raise ApiError(404, "not_found", f"no camera '{camera}' in your scope")
    if not await state.has_table("camera_events"):
        return Page[CameraEventOut](items=[], next_cursor=None)
    after = decode_cursor(cursor, 2)
    sql = """SELECT id, camera_id, org_unit_id, rule, zone, label, start_at, end_at, peak_count,
                    best_score, snapshot, detail
             FROM camera_events WHERE org_unit_id = ANY(%(scope)s)"""
    params: dict[str, Any] = {"scope": sorted(c.scope), "limit": limit + 1}
    if camera:
        sql += " AND camera_id = %(camera)s"
        params["camera"] = camera
    if rule:
        sql += " AND rule = %(rule)s"
        params["rule"] = rule
    if after:
        sql += " AND (start_at, id) < (%(at)s::timestamptz, %(id)s)"
        params.update(at=after[0], id=after[1])
    sql += " ORDER BY start_at DESC, id DESC LIMIT %(limit)s"
    assert state.pool is not None
    async with state.pool.connection() as conn:
        rows = await (await conn.execute(sql, params)).fetchall()  # type: ignore[arg-type]
    items = [
        CameraEventOut(
            id=r[0],
            camera=r[1],
            org_unit=r[2],
            rule=r[3],
            zone=r[4],
            label=r[5],
            start_at=r[6],
            end_at=r[7],
            peak_count=r[8],
            score=r[9],
            snapshot=r[10],
            detail=r[11] or {},
        )
        for r in rows
    ]
    return page_of(items, limit, lambda e: [e.start_at.isoformat(), e.id])


@router.get("/{camera_id}", response_model=CameraOut, responses=AUTH_ERRORS | NOT_FOUND)
async def camera(camera_id: str, c: Staff, state: State) -> CameraOut:
    for cam in await cameras(c, state):
        if cam.id == camera_id:
            return cam
    raise ApiError(404, "not_found", f"no camera '{camera_id[:64]}' in your scope")
