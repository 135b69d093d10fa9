"""`/api/v1/org-units`: the caller's unit and its subtree (what they may see)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import Anyone, State
from api.errors import AUTH_ERRORS, NOT_FOUND, ApiError

router = APIRouter(prefix="/api/v1", tags=["org units"])


class OrgUnitOut(BaseModel):
    id: str = Field(examples=["iahdrai-iadal"])
    parent: str | None = Field(description="Null at the top of the caller's scope")
    kind: str = Field(examples=["commune"])
    name: str = Field(examples=["Xã Ia Đal"])
    name_en: str | None = Field(examples=["Ia Dal commune"])
    lat: float | None
    lon: float | None


@router.get("/org-units", response_model=list[OrgUnitOut], responses=AUTH_ERRORS)
async def org_units(c: Anyone, state: State) -> list[OrgUnitOut]:
    """The caller's org unit and everything below it (a bounded list: the site's tree)."""
    return [
        OrgUnitOut(
            id=u.id,
            parent=u.parent if u.parent in c.scope else None,
            kind=u.kind,
            name=u.name,
            name_en=u.name_en,
            lat=u.lat,
            lon=u.lon,
        )
        for u in state.site.org_units
        if u.id in c.scope
    ]


@router.get("/org-units/{unit_id}", response_model=OrgUnitOut, responses=AUTH_ERRORS | NOT_FOUND)
async def org_unit(unit_id: str, c: Anyone, state: State) -> OrgUnitOut:
    """One org unit of the caller's scope (404 outside it: other units are not revealed)."""
    u = state.site.units.get(unit_id)
    if u is None or u.id not in c.scope:
        raise ApiError(404, "not_found", f"no org unit '{unit_id[:64]}' in your scope")
    return OrgUnitOut(
        id=u.id,
        parent=u.parent if u.parent in c.scope else None,
        kind=u.kind,
        name=u.name,
        name_en=u.name_en,
        lat=u.lat,
        lon=u.lon,
    )
