"""PostgreSQL access through psycopg 3, with one-line errors when the server is not there."""

from __future__ import annotations

import psycopg

from core.errors import ServiceUnreachable
from core.settings import Settings

START_HINT = "start it with `bash deploy/bootstrap.sh setup`"


def connect(settings: Settings, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection as the owner role; raise ServiceUnreachable with a hint."""
    try:
        return psycopg.connect(
            settings.database_url.get_secret_value(), autocommit=autocommit, connect_timeout=5
        )
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no answer"
        raise ServiceUnreachable(
            f"PostgreSQL is not reachable at {settings.database_host} ({reason}): {START_HINT}"
        ) from None


async def aconnect(settings: Settings, *, autocommit: bool = False) -> psycopg.AsyncConnection:
    try:
        return await psycopg.AsyncConnection.connect(
            settings.database_url.get_secret_value(), autocommit=autocommit, connect_timeout=5
        )
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no answer"
        raise ServiceUnreachable(
            f"PostgreSQL is not reachable at {settings.database_host} ({reason}): {START_HINT}"
        ) from None
