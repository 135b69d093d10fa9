"""The API application: REST under /api/v1, the live websocket at /ws, the dashboard at /."""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from fastapi.staticfiles import StaticFiles
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import (
    FAILED_WINDOW_S,
    MAX_FAILED_LOGINS,
    InvalidToken,
    Principal,
    issue_token,
    read_token,
    verify_password,
)
from api.live import Hub, LiveClient
from core import bus
from core.settings import Settings, get_settings
from core.site import Site, load_site
from dashboard import STATIC_DIR

log = logging.getLogger("ioc.api")
WS_POLICY_VIOLATION = 1008
WS_MAX_MESSAGE = 4096


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires")


class MeOut(BaseModel):
    username: str
    role: str
    org_unit: str


class OrgUnitOut(BaseModel):
    id: str
    parent: str | None
    kind: str
    name: str
    name_en: str | None
    lat: float | None
    lon: float | None


class KpiValueOut(BaseModel):
    kpi: str
    org_unit: str
    value: float
    ts: float


oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    site: Site = load_site(settings.site_file)
    keys = bus.Keys(settings.redis_prefix)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = await bus.aconnect(settings)
        pool = AsyncConnectionPool(
            settings.database_url.get_secret_value(), min_size=1, max_size=4, open=False
        )
        await pool.open(wait=True, timeout=10)
        hub = Hub(redis, keys)
        hub.start()
        state.update(redis=redis, pool=pool, hub=hub)
        try:
            yield
        finally:
            await hub.stop()
            await pool.close()
            await redis.aclose()

    app = FastAPI(
        title="IOC API — Trung tâm giám sát, điều hành thông minh",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/v1/openapi.json",
    )

    # ------------------------------------------------------------------ errors
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(
            {"error": {"code": exc.code, "message": exc.message}}, exc.status, headers=headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": {"code": code, "message": str(exc.detail)}}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return JSONResponse(
            {"error": {"code": "invalid_input", "message": f"{where}: {err['msg']}"}}, 422
        )

    # ------------------------------------------------------------------ auth
    async def principal(token: Annotated[str | None, Depends(oauth2)]) -> Principal:
        if not token:
            raise ApiError(401, "unauthenticated", "a bearer token is required")
        try:
            p = read_token(settings.jwt_secret.get_secret_value(), token)
        except InvalidToken:
            raise ApiError(401, "invalid_token", "the token is invalid or expired") from None
        if p.org_unit not in site.units:
            raise ApiError(403, "forbidden", "your org unit is not in this site")
        return p

    Caller = Annotated[Principal, Depends(principal)]

    @app.post("/api/v1/auth/token", response_model=TokenOut, tags=["auth"])
    async def login(
        request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]
    ) -> TokenOut:
        """OAuth2 password flow. Repeated failures for one user and address are throttled."""
        redis = state["redis"]
        client_ip = request.client.host if request.client else "-"
        fail_key = keys("login_fail", form.username[:64], client_ip)
        if int(await redis.get(fail_key) or 0) >= MAX_FAILED_LOGINS:
            raise ApiError(429, "too_many_attempts", "too many failed logins: try again later")
        async with state["pool"].connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT password_hash, role, org_unit_id FROM users "
                    "WHERE username = %s AND active",
                    (form.username,),
                )
            ).fetchone()
        ok = await asyncio.to_thread(verify_password, row[0] if row else None, form.password)
        if not ok or row is None:
            await redis.incr(fail_key)
            await redis.expire(fail_key, FAILED_WINDOW_S)
            raise ApiError(401, "bad_credentials", "wrong username or password")
        await redis.delete(fail_key)
        p = Principal(form.username, row[1], row[2])
        token = issue_token(
            settings.jwt_secret.get_secret_value(), p, settings.access_token_minutes
        )
        return TokenOut(access_token=token, expires_in=settings.access_token_minutes * 60)

    @app.get("/api/v1/me", response_model=MeOut, tags=["auth"])
    async def me(p: Caller) -> MeOut:
        return MeOut(username=p.username, role=p.role, org_unit=p.org_unit)

    # ------------------------------------------------------------------ data
    @app.get("/api/v1/org-units", response_model=list[OrgUnitOut], tags=["org units"])
    async def org_units(p: Caller) -> list[OrgUnitOut]:
        """The caller's org unit and everything below it."""
        scope = site.subtree(p.org_unit)
        return [
            OrgUnitOut(
                id=u.id,
                parent=u.parent if u.parent in scope else None,
                kind=u.kind,
                name=u.name,
                name_en=u.name_en,
                lat=u.lat,
                lon=u.lon,
            )
            for u in site.org_units
            if u.id in scope
        ]

    @app.get("/api/v1/kpis/{kpi_id}/live", response_model=list[KpiValueOut], tags=["kpis"])
    async def kpi_live(kpi_id: str, p: Caller) -> list[KpiValueOut]:
        """Latest value of a KPI for every org unit in the caller's scope."""
        if kpi_id not in {k.id for k in site.kpis}:
            raise ApiError(404, "not_found", f"unknown KPI '{kpi_id}'")
        scope = site.subtree(p.org_unit)
        raw = await state["redis"].hgetall(keys.kpi_latest)
        out = []
        for k, v in raw.items():
            kid, _, unit = k.decode().partition(":")
            if kid == kpi_id and unit in scope:
                d = orjson.loads(v)
                out.append(KpiValueOut(kpi=kid, org_unit=unit, value=d["value"], ts=d["ts"]))
        return sorted(out, key=lambda x: x.org_unit)

    @app.get("/healthz", tags=["operations"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], include_in_schema=False)
    async def readyz() -> JSONResponse:
        try:
            await state["redis"].ping()
            async with state["pool"].connection() as conn:
                await conn.execute("SELECT 1")
        except Exception:
            return JSONResponse({"status": "not ready"}, 503)
        return JSONResponse({"status": "ready"})

    # ------------------------------------------------------------------ websocket
    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        """Live updates. Authenticate with ?token=… or a first message {"op": "auth", "token": …};
        then {"op": "subscribe", "channels": ["kpi"]} gives a snapshot, then deltas with `seq`."""
        token = websocket.query_params.get("token")
        await websocket.accept()
        try:
            if token is None:
                first = await asyncio.wait_for(websocket.receive_text(), timeout=5)
                msg = _parse_ws(first)
                token = msg.get("token") if msg.get("op") == "auth" else None
            p = read_token(settings.jwt_secret.get_secret_value(), token or "")
            if p.org_unit not in site.units:
                raise InvalidToken("unknown org unit")
        except (InvalidToken, ValueError, TimeoutError, WebSocketDisconnect):
            with contextlib.suppress(Exception):
                await websocket.close(WS_POLICY_VIOLATION, "authentication required")
            return
        client = LiveClient(scope=frozenset(site.subtree(p.org_unit)))
        hub: Hub = state["hub"]
        hub.clients.add(client)
        sender = asyncio.create_task(_send_loop(websocket, client))
        try:
            await websocket.send_json(
                {"type": "hello", "user": p.username, "role": p.role, "org_unit": p.org_unit}
            )
            while True:
                text = await websocket.receive_text()
                try:
                    msg = _parse_ws(text)
                except ValueError as exc:
                    await client.queue.put(
                        {"type": "error", "code": "bad_message", "message": str(exc)}
                    )
                    continue
                if msg.get("op") == "subscribe":
                    channels = [c for c in msg.get("channels", []) if c in {"kpi"}]
                    client.channels.update(channels)
                    if "kpi" in channels:
                        await client.queue.put(await hub.kpi_snapshot(client.scope))
                elif msg.get("op") == "ping":
                    await client.queue.put({"type": "pong", "ts": time.time()})
                else:
                    await client.queue.put(
                        {"type": "error", "code": "unknown_op", "message": "ops: subscribe, ping"}
                    )
        except WebSocketDisconnect:
            pass
        finally:
            hub.clients.discard(client)
            sender.cancel()

    from api.intake import register_intake  # HTTP intake for service systems (issue 3)

    register_intake(app, settings, site)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    return app


def _parse_ws(text: str) -> dict[str, Any]:
    if len(text) > WS_MAX_MESSAGE:
        raise ValueError("message too large")
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValueError("message is not JSON") from None
    if not isinstance(msg, dict):
        raise ValueError("message must be a JSON object")
    return msg


async def _send_loop(websocket: WebSocket, client: LiveClient) -> None:
    try:
        while not client.dropped:
            msg = await client.queue.get()
            await asyncio.wait_for(websocket.send_text(orjson.dumps(msg).decode()), timeout=10)
        await websocket.close(1013, "client too slow")
    except Exception:
        with contextlib.suppress(Exception):
            await websocket.close(1011)
