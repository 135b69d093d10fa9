"""`/api/v1/auth/*` and `/api/v1/me`: OAuth2 password flow, refresh rotation, logout."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm

from api.auth import service
from api.auth.models import MeOut, RefreshIn, TokenOut
from api.deps import Anyone, AppState, State
from api.errors import AUTH_ERRORS, ApiError, _resp

router = APIRouter(prefix="/api/v1", tags=["auth"])


def _tokens(state: AppState, p: service.Principal, refresh: str) -> TokenOut:
    s = state.settings
    return TokenOut(
        access_token=service.issue_token(state.secret, p, s.access_token_minutes),
        expires_in=s.access_token_minutes * 60,
        refresh_token=refresh,
        refresh_expires_in=s.refresh_token_days * 86400,
    )


@router.post(
    "/auth/token",
    response_model=TokenOut,
    responses={
        401: _resp(401, "bad_credentials", "wrong username or password"),
        429: _resp(429, "too_many_attempts", "too many failed logins: try again later"),
    },
)
async def login(
    request: Request, state: State, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> TokenOut:
    """OAuth2 password flow. Five failures for one user and address within five minutes block
    further attempts (even with the right password) until the window passes."""
    redis = state.redis
    assert redis is not None and state.pool is not None
    client_ip = request.client.host if request.client else "-"
    fail_key = state.keys("login_fail", form.username[:64], client_ip)
    if int(await redis.get(fail_key) or 0) >= service.MAX_FAILED_LOGINS:
        raise ApiError(429, "too_many_attempts", "too many failed logins: try again later")
    async with state.pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT id, password_hash, role, org_unit_id FROM users "
                "WHERE username = %s AND active",
                (form.username[:64],),
            )
        ).fetchone()
        ok = await asyncio.to_thread(
            service.verify_password, row[1] if row else None, form.password[:256]
        )
        if not ok or row is None:
            await redis.incr(fail_key)
            await redis.expire(fail_key, service.FAILED_WINDOW_S)
            raise ApiError(401, "bad_credentials", "wrong username or password")
        await redis.delete(fail_key)
        refresh = await service.new_refresh_token(conn, row[0], state.settings.refresh_token_days)
    return _tokens(state, service.Principal(form.username, row[2], row[3]), refresh)


@router.post(
    "/auth/refresh",
    response_model=TokenOut,
    responses={
        401: _resp(401, "token_reused", "refresh token already used: all sessions revoked"),
        422: AUTH_ERRORS[422],
    },
)
async def refresh(body: RefreshIn, state: State) -> TokenOut:
    """Spend a refresh token for a new access token and the next refresh token. A refresh token
    works once: a second use revokes its whole family (every token since that login)."""
    assert state.pool is not None
    async with state.pool.connection() as conn:
        outcome, p, new, _uid = await service.rotate_refresh_token(
            conn, body.refresh_token, state.settings.refresh_token_days
        )
    if outcome == service.RefreshOutcome.REUSED:
        raise ApiError(401, "token_reused", "refresh token already used: all sessions revoked")
    if outcome != service.RefreshOutcome.OK or p is None or new is None:
        raise ApiError(401, "invalid_token", "the refresh token is invalid or expired")
    return _tokens(state, p, new)


@router.post("/auth/logout", status_code=204, responses={422: AUTH_ERRORS[422]})
async def logout(body: RefreshIn, state: State) -> Response:
    """Revoke the refresh token's family (this login on this device). Access tokens expire by
    themselves within minutes."""
    assert state.pool is not None
    async with state.pool.connection() as conn:
        await service.revoke_token_family(conn, body.refresh_token)
    return Response(status_code=204)


@router.get("/me", response_model=MeOut, responses={401: AUTH_ERRORS[401]})
async def me(c: Anyone, state: State) -> MeOut:
    """Who the token belongs to and which org units it may see."""
    assert state.pool is not None
    async with state.pool.connection() as conn:
        row = await (
            await conn.execute("SELECT display_name FROM users WHERE username = %s", (c.username,))
        ).fetchone()
    return MeOut(
        username=c.username,
        role=c.role,
        org_unit=c.org_unit,
        display_name=row[0] if row else "",
        scope=sorted(c.scope),
    )
