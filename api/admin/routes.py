"""`/api/v1/admin/users`: administrators manage the accounts of their own subtree. Sources,
cameras and zones are declared in the site file (`ioc setup` loads it), not edited here."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

import psycopg
from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth.service import Role, hash_password, revoke_user
from api.deps import Admin, Caller, State
from api.errors import AUTH_ERRORS, NOT_FOUND, ApiError, _resp
from api.pagination import CursorQ, LimitQ, Page, decode_cursor, page_of

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])
USERNAME = r"^[a-z0-9][a-z0-9._-]{1,62}$"
UserPath = Annotated[str, Path(pattern=USERNAME)]


class UserOut(BaseModel):
    username: str = Field(examples=["cb-iadal"])
    display_name: str = Field(examples=["Cán bộ xã Ia Đal"])
    role: Role
    org_unit: str = Field(examples=["iahdrai-iadal"])
    active: bool
    created_at: datetime


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(pattern=USERNAME, examples=["cb-iadal"])
    display_name: str = Field("", max_length=200)
    role: Role
    org_unit: str = Field(max_length=64, examples=["iahdrai-iadal"])
    password: str = Field(min_length=10, max_length=256)


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(None, max_length=200)
    role: Role | None = None
    org_unit: str | None = Field(None, max_length=64)
    password: str | None = Field(None, min_length=10, max_length=256)
    active: bool | None = None


_COLS = "username, display_name, role, org_unit_id, active, created_at"


def _out(r: tuple) -> UserOut:
    return UserOut(
        username=r[0], display_name=r[1], role=r[2], org_unit=r[3], active=r[4], created_at=r[5]
    )


async def _get(conn, c: Caller, username: str) -> tuple:
    row = await (
        await conn.execute(f"SELECT {_COLS}, id FROM users WHERE username = %s", (username,))
    ).fetchone()
    if row is None or row[3] not in c.scope:
        raise ApiError(404, "not_found", f"no user '{username}' in your scope")
    return row


@router.get("/users", response_model=Page[UserOut], responses=AUTH_ERRORS)
async def list_users(
    c: Admin, state: State, limit: int = LimitQ, cursor: str | None = CursorQ
) -> Page[UserOut]:
    """Accounts bound to an org unit of the administrator's subtree, by username."""
    after = decode_cursor(cursor, 1)
    assert state.pool is not None
    async with state.pool.connection() as conn:
        rows = await (
            await conn.execute(
                f"""SELECT {_COLS} FROM users WHERE org_unit_id = ANY(%s) AND username > %s
                    ORDER BY username LIMIT %s""",  # type: ignore[arg-type]
                (sorted(c.scope), after[0] if after else "", limit + 1),
            )
        ).fetchall()
    return page_of([_out(r) for r in rows], limit, lambda u: [u.username])


@router.post(
    "/users",
    response_model=UserOut,
    status_code=201,
    responses=AUTH_ERRORS | {409: _resp(409, "conflict", "user 'cb-iadal' already exists")},
)
async def create_user(body: UserIn, c: Admin, state: State) -> UserOut:
    """Create an account in the administrator's subtree."""
    c.check_unit(body.org_unit)
    pw = await asyncio.to_thread(hash_password, body.password)
    assert state.pool is not None
    async with state.pool.connection() as conn:
        try:
            row = await (
                await conn.execute(
                    f"""INSERT INTO users (username, display_name, password_hash, role,
                        org_unit_id) VALUES (%s, %s, %s, %s, %s) RETURNING {_COLS}""",  # type: ignore[arg-type]
                    (body.username, body.display_name, pw, body.role, body.org_unit),
                )
            ).fetchone()
        except psycopg.errors.UniqueViolation:
            raise ApiError(409, "conflict", f"user '{body.username}' already exists") from None
    assert row is not None
    return _out(row)


@router.get("/users/{username}", response_model=UserOut, responses=AUTH_ERRORS | NOT_FOUND)
async def get_user(username: UserPath, c: Admin, state: State) -> UserOut:
    assert state.pool is not None
    async with state.pool.connection() as conn:
        return _out(await _get(conn, c, username))


@router.patch("/users/{username}", response_model=UserOut, responses=AUTH_ERRORS | NOT_FOUND)
async def update_user(username: UserPath, body: UserPatch, c: Admin, state: State) -> UserOut:
    """Change role, unit, name, password or active flag. Changing role, unit or password, or
    deactivating, revokes the account's refresh tokens (its sessions end within minutes)."""
    if body.org_unit is not None:
        c.check_unit(body.org_unit)
    assert state.pool is not None
    async with state.pool.connection() as conn:
        row = await _get(conn, c, username)
        sets, params = [], []
        for col, val in (
            ("display_name", body.display_name),
            ("role", body.role),
            ("org_unit_id", body.org_unit),
            ("active", body.active),
        ):
            if val is not None:
                sets.append(f"{col} = %s")
                params.append(val)
        if body.password is not None:
            sets.append("password_hash = %s")
            params.append(await asyncio.to_thread(hash_password, body.password))
        if sets:
            row = await (
                await conn.execute(
                    f"UPDATE users SET {', '.join(sets)} WHERE id = %s RETURNING {_COLS}, id",  # type: ignore[arg-type]
                    (*params, row[6]),
                )
            ).fetchone()
            assert row is not None
        if body.role or body.org_unit or body.password or body.active is False:
            await revoke_user(conn, row[6])
    return _out(row)


@router.delete("/users/{username}", status_code=204, responses=AUTH_ERRORS | NOT_FOUND)
async def deactivate_user(username: UserPath, c: Admin, state: State) -> Response:
    """Deactivate an account (kept for the audit trail) and revoke its refresh tokens."""
    if username == c.username:
        raise ApiError(409, "conflict", "you cannot deactivate your own account")
    assert state.pool is not None
    async with state.pool.connection() as conn:
        row = await _get(conn, c, username)
        await conn.execute("UPDATE users SET active = false WHERE id = %s", (row[6],))
        await revoke_user(conn, row[6])
    return Response(status_code=204)
