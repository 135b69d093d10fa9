"""`/api/v1/incidents`: the incident list in scope and lifecycle actions.

Incidents are kept by the KPI/incident engine (issue 5, migration 0004: `incidents`,
`incident_events`, `audit_log`). Where that table is not installed the list is empty and actions
answer 404. Actions apply the engine's own `transition()` (one code path for every client), are
deduplicated by the client's `action_id` (phones resend after a flaky network), and are
published on the `incidents` bus stream so every screen sees them within a moment.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
import psycopg
from fastapi import APIRouter, Path, Query
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Admin, Anyone, AppState, Caller, Staff, State
from api.errors import AUTH_ERRORS, NOT_FOUND, ApiError, _resp
from api.pagination import CursorQ, LimitQ, Page, decode_cursor, page_of
from core import bus

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"])
Action = Literal["acknowledge", "assign", "start", "progress", "resolve", "close", "reopen"]
ACTION_ROLES: dict[str, tuple[str, ...]] = {
    "acknowledge": ("admin", "operator", "leader", "field"),
    "assign": ("admin", "operator"),
    "start": ("admin", "operator", "field"),
    "progress": ("admin", "operator", "field"),
    "resolve": ("admin", "operator", "field"),
    "close": ("admin", "operator"),
    "reopen": ("admin", "operator"),
}
DEDUP_TTL_S = 7 * 86400
_COLS = (
    "id, severity, status, title, org_unit_id, lat, lon, opened_at, ack_due_at, resolve_due_at, "
    "assigned_to, evidence, domain"
)


class IncidentOut(BaseModel):
    id: str = Field(examples=["42"])
    severity: str = Field(examples=["critical"])
    status: str = Field(examples=["open"])
    title: str = Field(examples=["Mực nước sông Sê San vượt ngưỡng"])
    org_unit: str
    lat: float | None
    lon: float | None
    opened_at: datetime | None
    ack_due_at: datetime | None
    resolve_due_at: datetime | None
    assignee: str | None
    domain: str | None = None
    evidence: list[Any] = []


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Action
    action_id: uuid.UUID = Field(description="Chosen by the client; a resend is applied once")
    note: str = Field("", max_length=1000)
    assignee: str | None = Field(None, max_length=64)
    photo: str | None = Field(
        None, max_length=2_000_000, pattern=r"^data:image/(jpeg|png|webp);base64,"
    )
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    at: datetime | None = Field(None, description="When the action was taken on the device")


class ActionOut(BaseModel):
    incident: IncidentOut
    duplicate: bool = False


def _out(r: dict[str, Any]) -> IncidentOut:
    return IncidentOut(
        id=str(r["id"]),
        severity=r["severity"],
        status=r["status"],
        title=r["title"],
        org_unit=r["org_unit_id"],
        lat=r.get("lat"),
        lon=r.get("lon"),
        opened_at=r.get("opened_at"),
        ack_due_at=r.get("ack_due_at"),
        resolve_due_at=r.get("resolve_due_at"),
        assignee=r.get("assigned_to"),
        domain=r.get("domain"),
        evidence=r.get("evidence") or [],
    )


@router.get("", response_model=Page[IncidentOut], responses=AUTH_ERRORS)
async def incidents(
    c: Anyone,
    state: State,
    status: Annotated[
        Literal["open", "all"], Query(description="open: not resolved/closed")
    ] = "open",
    limit: int = LimitQ,
    cursor: str | None = CursorQ,
) -> Page[IncidentOut]:
    """Incidents of the caller's scope, newest first (field staff: those assigned to them).
    Empty where the incident engine is not installed."""
    if not await state.has_table("incidents"):
        return Page[IncidentOut](items=[], next_cursor=None)
    after = decode_cursor(cursor, 1)
    sql = f"SELECT {_COLS} FROM incidents WHERE org_unit_id = ANY(%(scope)s)"
    params: dict[str, Any] = {"scope": sorted(c.scope), "limit": limit + 1}
    if status == "open":
        sql += " AND status NOT IN ('resolved', 'closed')"
    if c.role == "field":
        sql += " AND assigned_to = %(me)s"
        params["me"] = c.username
    if after:
        sql += " AND id < %(after)s"
        params["after"] = int(after[0])
    sql += " ORDER BY id DESC LIMIT %(limit)s"
    assert state.pool is not None
    async with state.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)  # never on the pooled connection itself
        rows = await (await cur.execute(sql, params)).fetchall()  # type: ignore[arg-type]
    return page_of([_out(r) for r in rows], limit, lambda i: [int(i.id)])


async def open_incidents(state: AppState) -> list[dict[str, Any]] | None:
    """Open incidents from the engine's table for websocket snapshots (None when not installed);
    the hub cuts them to each client's scope or assignments."""
    if not await state.has_table("incidents"):
        return None
    assert state.pool is not None
    async with state.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        rows = await (
            await cur.execute(
                f"SELECT {_COLS} FROM incidents WHERE status NOT IN ('resolved', 'closed') "  # type: ignore[arg-type]
                "ORDER BY id DESC LIMIT 2000"
            )
        ).fetchall()
    return [_out(r).model_dump(mode="json") for r in rows]


def _apply(state: AppState, c: Caller, incident_id: int, body: ActionIn) -> dict[str, Any]:
    """Run the engine's transition in a worker thread (it is synchronous psycopg)."""
    from analytics.ops import incidents as engine  # issue 5's engine, present once merged

    now = datetime.now(UTC)
    evidence = None
    if body.photo or body.lat is not None:
        evidence = {
            "kind": "field",
            "photo": body.photo,
            "lat": body.lat,
            "lon": body.lon,
            "note": body.note,
            "taken_at": body.at.isoformat() if body.at else None,
        }
    with psycopg.connect(state.settings.database_url.get_secret_value()) as conn:
        if body.action == "progress":
            cur = conn.execute("SELECT status FROM incidents WHERE id = %s", (incident_id,))
            row = cur.fetchone()
            if row and row[0] in ("acknowledged", "assigned"):
                engine.transition(
                    conn, incident_id, "start", c.username, now, note=body.note, evidence=evidence
                )
            else:
                _note(engine, conn, incident_id, c.username, now, body.note)
            cur = conn.cursor(row_factory=dict_row)
            return cur.execute("SELECT * FROM incidents WHERE id = %s", (incident_id,)).fetchone()
        engine.transition(
            conn,
            incident_id,
            body.action,
            c.username,
            now,
            note=body.note,
            assignee=body.assignee,
            reassign=True,
            evidence=evidence,
        )
        cur = conn.cursor(row_factory=dict_row)  # re-read: evidence is added after the update
        return cur.execute("SELECT * FROM incidents WHERE id = %s", (incident_id,)).fetchone()


def _note(
    engine: Any, conn: psycopg.Connection, incident_id: int, actor: str, now: datetime, note: str
) -> None:
    """A progress note on an incident already in progress: timeline and audit, no transition."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO incident_events (incident_id, at, actor, action, note) "
            "VALUES (%s, %s, %s, 'progress', %s)",
            (incident_id, now, actor, note),
        )
        engine.audit(conn, actor, "incident", incident_id, "progress", None, {"note": note}, now)


@router.post(
    "/{incident_id}/actions",
    response_model=ActionOut,
    responses=AUTH_ERRORS
    | NOT_FOUND
    | {409: _resp(409, "conflict", "cannot acknowledge an incident that is resolved")},
)
async def act(
    incident_id: Annotated[int, Path(ge=1, le=2**62)], body: ActionIn, c: Anyone, state: State
) -> ActionOut:
    """Acknowledge, assign, start, add a progress note, resolve (with photo and GPS), close or
    reopen. Field staff act only on incidents assigned to them. A repeated `action_id` returns
    the incident without applying anything again."""
    if c.role not in ACTION_ROLES[body.action]:
        raise ApiError(403, "forbidden", f"role '{c.role}' may not {body.action}")
    if not await state.has_table("incidents"):
        raise ApiError(404, "not_found", "incident tracking is not installed here")
    assert state.pool is not None and state.redis is not None
    async with state.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        row = await (
            await cur.execute(f"SELECT {_COLS} FROM incidents WHERE id = %s", (incident_id,))  # type: ignore[arg-type]
        ).fetchone()
    if row is None or row["org_unit_id"] not in c.scope:
        raise ApiError(404, "not_found", f"no incident {incident_id} in your scope")
    if c.role == "field" and row["assigned_to"] != c.username and body.action != "acknowledge":
        raise ApiError(403, "forbidden", "this incident is not assigned to you")
    key = state.keys("incident_action", str(body.action_id))
    if not await state.redis.set(key, str(incident_id), nx=True, ex=DEDUP_TTL_S):
        return ActionOut(incident=_out(row), duplicate=True)
    try:
        after = await asyncio.to_thread(_apply, state, c, incident_id, body)
    except Exception as exc:
        await state.redis.delete(key)
        if exc.__class__.__name__ == "IncidentConflict":
            raise ApiError(409, "conflict", str(exc)[:300]) from None
        if exc.__class__.__name__ == "IOCError":
            raise ApiError(422, "invalid_input", str(exc)[:300]) from None
        raise
    out = _out(after)
    await state.redis.xadd(
        state.keys("stream", "incidents"),
        {
            "m": orjson.dumps(
                {
                    "incident": out.model_dump(mode="json"),
                    "previous_assignee": row["assigned_to"],
                    "action": body.action,
                    "by": c.username,
                }
            )
        },
        maxlen=bus.STREAM_MAXLEN,
        approximate=True,
    )
    return ActionOut(incident=out)


# ---------------------------------------------------------------------- silences and audit
silences_router = APIRouter(prefix="/api/v1", tags=["incidents"])


class SilenceOut(BaseModel):
    id: int
    rule_id: str | None
    org_unit: str | None
    source_id: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    entity: str = Field(examples=["incident"])
    entity_id: str
    action: str = Field(examples=["acknowledge"])
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@silences_router.get("/silences", response_model=Page[SilenceOut], responses=AUTH_ERRORS)
async def silences(
    c: Staff, state: State, limit: int = LimitQ, cursor: str | None = CursorQ
) -> Page[SilenceOut]:
    """Silences and maintenance windows that apply inside the caller's scope (site-wide ones
    included), newest first. Empty where the incident engine is not installed."""
    if not await state.has_table("silences"):
        return Page[SilenceOut](items=[], next_cursor=None)
    after = decode_cursor(cursor, 1)
    assert state.pool is not None
    async with state.pool.connection() as conn:
        rows = await (
            await conn.execute(
                """SELECT id, rule_id, org_unit_id, source_id, starts_at, ends_at, reason,
                          created_by FROM silences
                   WHERE (org_unit_id IS NULL OR org_unit_id = ANY(%s)) AND id < %s
                   ORDER BY id DESC LIMIT %s""",
                (sorted(c.scope), int(after[0]) if after else 2**62, limit + 1),
            )
        ).fetchall()
    items = [
        SilenceOut(
            id=r[0],
            rule_id=r[1],
            org_unit=r[2],
            source_id=r[3],
            starts_at=r[4],
            ends_at=r[5],
            reason=r[6],
            created_by=r[7],
        )
        for r in rows
    ]
    return page_of(items, limit, lambda x: [x.id])


@silences_router.get("/audit", response_model=Page[AuditOut], responses=AUTH_ERRORS)
async def audit_log(
    c: Admin,
    state: State,
    entity: Annotated[str | None, Query(max_length=32)] = None,
    entity_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: int = LimitQ,
    cursor: str | None = CursorQ,
) -> Page[AuditOut]:
    """The append-only audit trail, newest first (administrators; incident entries are cut to
    the administrator's scope). Empty where the incident engine is not installed."""
    if not await state.has_table("audit_log"):
        return Page[AuditOut](items=[], next_cursor=None)
    after = decode_cursor(cursor, 1)
    sql = """SELECT a.id, a.at, a.actor, a.entity, a.entity_id, a.action, a.before, a.after
             FROM audit_log a LEFT JOIN incidents i
               ON a.entity = 'incident' AND i.id::text = a.entity_id
             WHERE (a.entity <> 'incident' OR i.org_unit_id = ANY(%(scope)s))
               AND a.id < %(after)s"""
    params: dict[str, Any] = {
        "scope": sorted(c.scope),
        "after": int(after[0]) if after else 2**62,
        "limit": limit + 1,
    }
    if entity:
        sql += " AND a.entity = %(entity)s"
        params["entity"] = entity
    if entity_id:
        sql += " AND a.entity_id = %(entity_id)s"
        params["entity_id"] = entity_id
    sql += " ORDER BY a.id DESC LIMIT %(limit)s"
    assert state.pool is not None
    async with state.pool.connection() as conn:
        rows = await (await conn.execute(sql, params)).fetchall()  # type: ignore[arg-type]
    items = [
        AuditOut(
            id=r[0],
            at=r[1],
            actor=r[2],
            entity=r[3],
            entity_id=r[4],
            action=r[5],
            before=r[6],
            after=r[7],
        )
        for r in rows
    ]
    return page_of(items, limit, lambda x: [x.id])
