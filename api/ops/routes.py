"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from api.deps import AppState, State, caller_for, oauth2
from api.errors import ApiError

router = APIRouter(tags=["operations"])


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """The process is alive (says nothing else, so it needs no token)."""
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
async def readyz(state: State) -> JSONResponse:
    """Ready when Redis and PostgreSQL answer and the live hub is following the bus."""
    try:
        assert state.redis is not None and state.pool is not None
        await state.redis.ping()
        async with state.pool.connection() as conn:
            await conn.execute("SELECT 1")
        ok = state.hub is not None and state.hub.running
    except Exception:
        ok = False
    return JSONResponse({"status": "ready" if ok else "not ready"}, 200 if ok else 503)


def _metrics_auth(state: AppState, token: str | None) -> None:
    mt = state.settings.metrics_token
    if mt is not None and token and hmac.compare_digest(token, mt.get_secret_value()):
        return
    c = caller_for(state, token)
    if c.role not in ("admin", "operator"):
        raise ApiError(403, "forbidden", f"role '{c.role}' may not read metrics")


@router.get("/metrics", include_in_schema=False)
async def metrics(state: State, token: Annotated[str | None, Depends(oauth2)]) -> Response:
    """Prometheus text format. Bearer: IOC_METRICS_TOKEN (for the scraper) or an admin/operator
    access token."""
    _metrics_auth(state, token)
    assert state.redis is not None
    body = await state.metrics.render(state.redis, state.keys)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
