"""`/api/v1/sources`: the site's sources in the caller's scope, with live health."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import Staff, State
from api.errors import AUTH_ERRORS, NOT_FOUND, ApiError
from api.pagination import CursorQ, LimitQ, Page, decode_cursor, page_of
from api.sources.service import health_of, last_seen, site_sources

router = APIRouter(prefix="/api/v1/sources", tags=["sources"])


class SourceOut(BaseModel):
    id: str = Field(examples=["wifi-ap-iadal"])
    kind: str = Field(examples=["wifi_ap"])
    org_unit: str
    name: str
    lat: float | None
    lon: float | None
    expected_interval_s: float
    last_seen: float | None = Field(description="Epoch seconds of the latest message")
    age_s: float | None
    health: Literal["online", "late", "offline", "unknown"]


async def _with_health(state, items: list[dict]) -> list[SourceOut]:
    seen = await last_seen(state.redis, state.keys, state.site)
    now = time.time()
    return [
        SourceOut(
            **s,
            last_seen=seen.get(s["id"]),
            age_s=round(now - seen[s["id"]], 1) if s["id"] in seen else None,
            health=health_of(seen.get(s["id"]), s["expected_interval_s"], now),
        )
        for s in items
    ]


@router.get("", response_model=Page[SourceOut], responses=AUTH_ERRORS)
async def sources(
    c: Staff,
    state: State,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    unit: Annotated[str | None, Query(max_length=64, description="Subtree of this unit")] = None,
    limit: int = LimitQ,
    cursor: str | None = CursorQ,
) -> Page[SourceOut]:
    """Sources (cameras included) with health: online, late (missed its interval), offline
    (silent for three intervals) or unknown (never heard from)."""
    scope = c.scope if unit is None else state.site.subtree(c.check_unit(unit))
    after = decode_cursor(cursor, 1)
    items = [
        s
        for s in site_sources(state.site)
        if s["org_unit"] in scope
        and (kind is None or s["kind"] == kind)
        and (after is None or s["id"] > after[0])
    ][: limit + 1]
    return page_of(await _with_health(state, items), limit, lambda s: [s.id])


@router.get("/{source_id}", response_model=SourceOut, responses=AUTH_ERRORS | NOT_FOUND)
async def source(source_id: str, c: Staff, state: State) -> SourceOut:
    for s in site_sources(state.site):
        if s["id"] == source_id and s["org_unit"] in c.scope:
            return (await _with_health(state, [s]))[0]
    raise ApiError(404, "not_found", f"no source '{source_id[:64]}' in your scope")
