"""The API application: REST under /api/v1 (one router per domain), the live websocket at /ws,
operations endpoints, and the three screens (wall, tablet, phone) as static files."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Receive, Scope, Send

from api import errors
from api.admin.routes import router as admin_router
from api.auth.routes import router as auth_router
from api.cameras.routes import router as cameras_router
from api.deps import AppState
from api.incidents.routes import open_incidents, silences_router
from api.incidents.routes import router as incidents_router
from api.kpis.routes import router as kpis_router
from api.live.hub import Hub
from api.live.routes import router as live_router
from api.ops.routes import router as ops_router
from api.org_units.routes import router as org_units_router
from api.sources.routes import router as sources_router
from api.timeseries.routes import router as timeseries_router
from core import bus
from core.settings import Settings, get_settings
from core.site import load_site
from dashboard import STATIC_DIR

log = logging.getLogger("ioc.api")

DESCRIPTION = """
Live and historical data of the district's Intelligent Operations Center
(*Trung tâm giám sát, điều hành thông minh*).

**Authentication**: OAuth2 password flow at `/api/v1/auth/token` gives a short-lived access token
(send `Authorization: Bearer …`) and a single-use refresh token (`/api/v1/auth/refresh`).
Every call is checked for role (admin, operator, leader, field) and org-unit subtree.

**Errors** are `{"error": {"code": "...", "message": "..."}}` with stable codes.
**Pagination**: collections return `{"items": [...], "next_cursor": ...}`; pass the cursor back.
**Live**: websocket `/ws` (see the `live` description in the source docs).
"""


class _Timing:
    """Per-route request timing for Prometheus (pure ASGI: websockets pass straight through)."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def _send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or (
                "/static" if scope["path"].startswith("/static/") else "other"
            )
            self.state.metrics.http.labels(scope["method"], path, str(status[0])).observe(
                time.perf_counter() - t0
            )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    site = load_site(settings.site_file)
    state = AppState(settings=settings, site=site, keys=bus.Keys(settings.redis_prefix))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.redis = await bus.aconnect(settings)
        state.pool = AsyncConnectionPool(
            settings.database_url.get_secret_value(), min_size=1, max_size=4, open=False
        )
        await state.pool.open(wait=True, timeout=10)
        state.hub = Hub(
            state.redis,
            state.keys,
            site,
            on_entry=state.metrics.on_entry,
            open_incidents=lambda: open_incidents(state),
        )
        state.hub.start()
        try:
            yield
        finally:
            await state.hub.stop()
            await state.pool.close()
            await state.redis.aclose()

    app = FastAPI(
        title="IOC API — Trung tâm giám sát, điều hành thông minh",
        version="0.2.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    app.state.ioc = state
    errors.install(app)
    for r in (
        auth_router,
        org_units_router,
        kpis_router,
        sources_router,
        timeseries_router,
        cameras_router,
        incidents_router,
        silences_router,
        admin_router,
        ops_router,
        live_router,
    ):
        app.include_router(r)

    from api.intake import register_intake  # HTTP intake for service systems (issue 3)

    register_intake(app, settings, site)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def page(name: str):  # the screens: one HTML file each, same script bundle
        async def serve() -> FileResponse:
            return FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache"})

        return serve

    app.add_api_route("/", page("index.html"), include_in_schema=False)
    app.add_api_route("/wall", page("wall.html"), include_in_schema=False)
    app.add_api_route("/tablet", page("tablet.html"), include_in_schema=False)
    app.add_api_route("/phone", page("phone.html"), include_in_schema=False)
    app.add_api_route(
        "/favicon.ico", lambda: RedirectResponse("/static/favicon.svg"), include_in_schema=False
    )
    app.add_middleware(_Timing, state=state)
    return app
