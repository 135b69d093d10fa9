"""Accounts, passwords and tokens.

Passwords are hashed with Argon2id (argon2-cffi). Logins issue short-lived HS256 JWT access tokens
with audience and issuer checked on every call. Failed logins are throttled per username and
client address in Redis. Every request and websocket needs a token: there is no anonymous access.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError, VerifyMismatchError

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
    except (VerifyMismatchError, VerificationError):
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
