"""What every route needs: the process state (settings, site, Redis, database pool, live hub) and
the caller, checked for role and org-unit scope. There is no anonymous access anywhere."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import redis.asyncio as aredis
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from psycopg_pool import AsyncConnectionPool

from api.auth.service import InvalidToken, Principal, Role, read_token
from api.errors import ApiError
from core import bus
from core.settings import Settings
from core.site import Site

if TYPE_CHECKING:
    from api.live.hub import Hub
    from api.ops.metrics import Metrics


def _metrics() -> Metrics:
    from api.ops.metrics import Metrics

    return Metrics()


oauth2 = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token",
    auto_error=False,
    scopes={},
    description="OAuth2 password flow: POST username and password, use the access token.",
)


@dataclass
class AppState:
    settings: Settings
    site: Site
    keys: bus.Keys
    redis: aredis.Redis | None = None
    pool: AsyncConnectionPool | None = None
    hub: Hub | None = None
    metrics: Metrics = field(default_factory=lambda: _metrics())
    _tables: dict[str, bool] = field(default_factory=dict)

    @property
    def secret(self) -> str:
        return self.settings.jwt_secret.get_secret_value()

    async def has_table(self, name: str) -> bool:
        """Whether an optional table (another issue's migration) exists; cached once true."""
        if self._tables.get(name):
            return True
        async with self.pool.connection() as conn:  # type: ignore[union-attr]
            row = await (await conn.execute("SELECT to_regclass(%s)", (name,))).fetchone()
        self._tables[name] = bool(row and row[0])
        return self._tables[name]


def get_state(request: Request) -> AppState:
    return request.app.state.ioc


State = Annotated[AppState, Depends(get_state)]


@dataclass(frozen=True)
class Caller:
    """The authenticated caller and the set of org units they may see."""

    principal: Principal
    scope: frozenset[str]

    @property
    def role(self) -> Role:
        return self.principal.role

    @property
    def username(self) -> str:
        return self.principal.username

    @property
    def org_unit(self) -> str:
        return self.principal.org_unit

    def check_unit(self, unit: str) -> str:
        if unit not in self.scope:
            raise ApiError(403, "out_of_scope", f"org unit '{unit}' is outside your scope")
        return unit


def caller_for(state: AppState, token: str | None) -> Caller:
    """Authenticate a token; shared by REST and the websocket."""
    if not token:
        raise ApiError(401, "unauthenticated", "a bearer token is required")
    try:
        p = read_token(state.secret, token)
    except InvalidToken:
        raise ApiError(401, "invalid_token", "the token is invalid or expired") from None
    if p.org_unit not in state.site.units:
        raise ApiError(403, "forbidden", "your org unit is not in this site")
    return Caller(p, frozenset(state.site.subtree(p.org_unit)))


async def current_caller(state: State, token: Annotated[str | None, Depends(oauth2)]) -> Caller:
    return caller_for(state, token)


CurrentCaller = Annotated[Caller, Depends(current_caller)]


def require(*roles: Role) -> Callable[..., Any]:
    """A dependency that admits only the given roles."""

    async def check(c: CurrentCaller) -> Caller:
        if c.role not in roles:
            raise ApiError(403, "forbidden", f"role '{c.role}' may not do this")
        return c

    return check


READERS: tuple[Role, ...] = ("admin", "operator", "leader")
Staff = Annotated[Caller, Depends(require(*READERS))]
Admin = Annotated[Caller, Depends(require("admin"))]
Anyone = CurrentCaller
