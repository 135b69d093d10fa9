"""Apply the versioned SQL migrations in ``core/migrations`` once each, recorded with a checksum.

A migration that was edited after it was applied is refused: history is append-only, a change goes
into a new file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import psycopg

from core.errors import IOCError

LOCK_KEY = 0x10C_5E7  # advisory lock so two `ioc setup` never migrate at once


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    out = []
    for entry in resources.files("core.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            out.append(Migration(version, rest.removesuffix(".sql"), entry.read_text("utf-8")))
    return sorted(out, key=lambda m: m.version)


def apply_migrations(conn: psycopg.Connection) -> list[str]:
    """Apply pending migrations; return the versions applied now (empty when up to date)."""
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                 version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
        for m in available():
            if m.version in done:
                if done[m.version] != m.checksum:
                    raise IOCError(
                        f"migration {m.version}_{m.name}.sql changed after it was applied: "
                        "put the change in a new migration file"
                    )
                continue
            conn.execute(m.sql)  # type: ignore[arg-type]
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (m.version, m.name, m.checksum),
            )
            applied_now.append(m.version)
    return applied_now


def check_schema(conn: psycopg.Connection) -> None:
    """Raise a one-line IOCError when the database lacks migrations (services call this first)."""
    row = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
    done = set()
    if row and row[0]:
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    conn.commit()
    missing = [m.version for m in available() if m.version not in done]
    if missing:
        raise IOCError(
            f"the database is missing migration(s) {', '.join(missing)}: run `ioc setup` first"
        )
