"""Accounts, passwords, access tokens, rotating refresh tokens and login throttling.

Passwords are hashed with Argon2id (argon2-cffi). Logins issue short-lived HS256 JWT access tokens
(audience and issuer checked on every call) and an opaque refresh token stored only as a SHA-256.
Each refresh rotates it; presenting a token that was already rotated revokes its whole family
(the token was stolen or replayed). Failed logins are throttled per username and address.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from psycopg import AsyncConnection

Role = Literal["admin", "operator", "leader", "field"]
ROLES: tuple[Role, ...] = ("admin", "operator", "leader", "field")
ISSUER = "ioc"
AUDIENCE = "ioc-api"
ALGORITHM = "HS256"
MAX_FAILED_LOGINS = 5
FAILED_WINDOW_S = 300

_hasher = PasswordHasher()
# A real hash to verify against when the user does not exist, so timing does not reveal names.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class Principal:
    """Who is calling: their account, role and the org unit whose subtree they may see."""

    username: str
    role: Role
    org_unit: str


def issue_token(secret: str, p: Principal, minutes: int, now: float | None = None) -> str:
    now = time.time() if now is None else now
    claims = {
        "sub": p.username,
        "role": p.role,
        "unit": p.org_unit,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(now),
        "exp": int(now + minutes * 60),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class InvalidToken(Exception):
    pass


def read_token(secret: str, token: str) -> Principal:
    """Decode and check a token (signature, algorithm, expiry, audience, issuer)."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    if claims.get("role") not in ROLES or not isinstance(claims.get("unit"), str):
        raise InvalidToken("token has no valid role or org unit")
    return Principal(claims["sub"], claims["role"], claims["unit"])


# ---------------------------------------------------------------------- refresh tokens
def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def new_refresh_token(
    conn: AsyncConnection, user_id: int, days: int, family: uuid.UUID | None = None
) -> str:
    """Create a refresh token (a new family on login, the same family on rotation)."""
    token = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO refresh_tokens (user_id, family, token_hash, expires_at) "
        "VALUES (%s, %s, %s, %s)",
        (
            user_id,
            family or uuid.uuid4(),
            token_digest(token),
            datetime.now(UTC) + timedelta(days=days),
        ),
    )
    return token


class RefreshOutcome:
    OK, UNKNOWN, REUSED, EXPIRED = "ok", "unknown", "reused", "expired"


async def rotate_refresh_token(
    conn: AsyncConnection, token: str, days: int
) -> tuple[str, Principal | None, str | None, int | None]:
    """Spend a refresh token. Returns (outcome, principal, new token, user id).

    A token seen a second time revokes every token of its family, so a thief and the rightful
    owner both have to log in again."""
    async with conn.transaction():
        row = await (
            await conn.execute(
                """SELECT t.id, t.family, t.used_at, t.revoked_at, t.expires_at,
                          u.id, u.username, u.role, u.org_unit_id, u.active
                   FROM refresh_tokens t JOIN users u ON u.id = t.user_id
                   WHERE t.token_hash = %s FOR UPDATE OF t""",
                (token_digest(token),),
            )
        ).fetchone()
        if row is None:
            return RefreshOutcome.UNKNOWN, None, None, None
        tid, family, used_at, revoked_at, expires_at, uid, username, role, unit, active = row
        if used_at is not None or revoked_at is not None:
            await revoke_family(conn, family)
            return RefreshOutcome.REUSED, None, None, uid
        if expires_at < datetime.now(UTC) or not active:
            return RefreshOutcome.EXPIRED, None, None, uid
        await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE id = %s", (tid,))
        new = await new_refresh_token(conn, uid, days, family)
        return RefreshOutcome.OK, Principal(username, role, unit), new, uid


async def revoke_family(conn: AsyncConnection, family: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family = %s AND revoked_at IS NULL",
        (family,),
    )


async def revoke_token_family(conn: AsyncConnection, token: str) -> bool:
    """Log out: revoke the family of the presented refresh token; False if unknown."""
    row = await (
        await conn.execute(
            "SELECT family FROM refresh_tokens WHERE token_hash = %s", (token_digest(token),)
        )
    ).fetchone()
    if row is None:
        return False
    await revoke_family(conn, row[0])
    return True


async def revoke_user(conn: AsyncConnection, user_id: int) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = %s AND revoked_at IS NULL",
        (user_id,),
    )
