"""Backups and restore of the IOC database, without superuser rights.

A backup is one consistent snapshot (a REPEATABLE READ transaction) written as a folder: every
table's rows in PostgreSQL's binary COPY format, gzip-compressed, and a ``manifest.json`` with
the schema's migration versions and checksums, row counts and a SHA-256 of each file. Restore
creates a fresh database, applies the same migrations (so hypertables, indexes and rollups are
made by the project's own code on whichever TimescaleDB edition runs there), verifies every
checksum, and copies the rows back; hypertables make their chunks as rows arrive. A physical
TimescaleDB dump needs superuser rights for its catalog, which the IOC's role does not have.

`ioc backup` writes ``<var>/backups/ioc-<UTC time>/`` and prunes backups past the retention;
`ioc backup --every H` repeats; `ioc restore DIR [--replace]`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from core.errors import IOCError
from core.migrate import apply_migrations, available
from core.settings import Settings
from core.timescale import ensure_storage

PREFIX = "ioc-"
FORMAT = 1


@dataclass(frozen=True)
class BackupResult:
    path: Path
    rows: int
    bytes: int
    seconds: float
    pruned: list[Path]


def backup_dir(settings: Settings) -> Path:
    return settings.var_dir / "backups"


def _tables(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
        "AND table_type = 'BASE TABLE' AND table_name <> 'schema_migrations' ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def _dependency_order(conn: psycopg.Connection, tables: list[str]) -> list[str]:
    """Tables ordered so that every table comes after those its foreign keys point to."""
    deps: dict[str, set[str]] = {t: set() for t in tables}
    for child, parent in conn.execute(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c "
        "JOIN pg_namespace n ON n.oid = c.connamespace AND n.nspname = 'public' "
        "WHERE c.contype = 'f'"
    ).fetchall():
        if child in deps and parent in deps and child != parent:
            deps[child].add(parent)
    out: list[str] = []
    while deps:
        ready = sorted(t for t, d in deps.items() if not d - set(out))
        if not ready:  # a cycle: keep the rest in name order (deferrable constraints)
            ready = sorted(deps)
        for t in ready:
            out.append(t)
            del deps[t]
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prune(directory: Path, keep_days: float, now: datetime) -> list[Path]:
    """Remove backups older than `keep_days`, always keeping the newest one."""
    backups = sorted(p for p in directory.glob(f"{PREFIX}*") if (p / "manifest.json").exists())
    horizon = now - timedelta(days=keep_days)
    old = [p for p in backups[:-1] if datetime.fromtimestamp(p.stat().st_mtime, UTC) < horizon]
    for p in old:
        shutil.rmtree(p)
    return old


def backup(
    settings: Settings,
    *,
    keep_days: float = 14,
    directory: Path | None = None,
    now: datetime | None = None,
) -> BackupResult:
    directory = directory or backup_dir(settings)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = now or datetime.now(UTC)
    final = directory / f"{PREFIX}{now.strftime('%Y%m%dT%H%M%S%fZ')}"
    work = final.with_name(final.name + ".partial")
    work.mkdir(mode=0o700)
    t0 = time.monotonic()
    manifest: dict = {"format": FORMAT, "created_at": now.isoformat(), "tables": {}}
    total_rows = 0
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        manifest["snapshot_at"] = conn.execute("SELECT now()").fetchone()[0].isoformat()
        manifest["migrations"] = dict(
            conn.execute("SELECT version, checksum FROM schema_migrations ORDER BY 1").fetchall()
        )
        for table in _tables(conn):
            path = work / f"{table}.copy.gz"
            with gzip.open(path, "wb", compresslevel=6) as out, conn.cursor() as cur:
                with cur.copy(
                    sql.SQL("COPY (SELECT * FROM {}) TO STDOUT (FORMAT BINARY)").format(
                        sql.Identifier(table)
                    )
                ) as copy:
                    for block in copy:
                        out.write(block)
                rows = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                ).fetchone()[0]
            manifest["tables"][table] = {"rows": rows, "sha256": _sha256(path)}
            total_rows += rows
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
    work.rename(final)  # a backup is either complete or absent
    size = sum(p.stat().st_size for p in final.iterdir())
    return BackupResult(
        final, total_rows, size, time.monotonic() - t0, prune(directory, keep_days, now)
    )


def _url_for(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def restore(
    settings: Settings, source: Path, *, target_db: str | None = None, replace: bool = False
) -> tuple[str, int, float]:
    """Restore a backup folder into a new database; return (database, rows, seconds)."""
    manifest_path = source / "manifest.json"
    if not manifest_path.is_file():
        raise IOCError(f"{source} is not an IOC backup (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise IOCError(f"{source}: backup format {manifest.get('format')} is not supported")
    known = {m.version: m.checksum for m in available()}
    for version, checksum in manifest["migrations"].items():
        if known.get(version) != checksum:
            raise IOCError(
                f"{source}: made by a schema this code does not have (migration "
                f"{version}); restore it with the matching release"
            )
    for table, meta in manifest["tables"].items():
        if _sha256(source / f"{table}.copy.gz") != meta["sha256"]:
            raise IOCError(f"{source}: {table}.copy.gz is damaged (checksum mismatch)")
    url = settings.database_url.get_secret_value()
    live_db = urlsplit(url).path.lstrip("/")
    target = target_db or f"{live_db}_restore_{int(time.time())}"
    t0 = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
    rows = 0
    with psycopg.connect(_url_for(url, target)) as conn:
        apply_migrations(conn)
        ensure_storage(
            conn, raw_days=settings.retention_raw_days, rollup_days=settings.retention_rollup_days
        )
        with conn.transaction():
            conn.execute("SET CONSTRAINTS ALL DEFERRED")
            # The rows are restored as they were. The append-only guards (plain tables) are off
            # while they load; hypertables cannot switch triggers off, so their derived marks
            # (dirty KPI hours, dossier state) fire and may already hold a row the backup also
            # has: each table goes through a staging copy and ON CONFLICT DO NOTHING.
            hypertables = {
                r[0]
                for r in conn.execute(
                    "SELECT hypertable_name FROM timescaledb_information.hypertables"
                )
            }
            triggers = [
                (t, g)
                for t, g in conn.execute(
                    "SELECT c.relname, t.tgname FROM pg_trigger t "
                    "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace AND n.nspname = 'public' "
                    "WHERE NOT t.tgisinternal AND t.tgenabled <> 'D'"
                ).fetchall()
                if t not in hypertables
            ]
            for table, trigger in triggers:
                conn.execute(
                    sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(
                        sql.Identifier(table), sql.Identifier(trigger)
                    )
                )
            for table in _tables(conn):
                has_rows = conn.execute(
                    sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
                ).fetchone()[0]
                if has_rows:  # seeded by a migration: the backup's rows replace them
                    conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(sql.Identifier(table)))
            for table in _dependency_order(conn, list(manifest["tables"])):
                meta = manifest["tables"][table]
                t = sql.Identifier(table)
                conn.execute(
                    sql.SQL("CREATE TEMP TABLE _restore (LIKE {}) ON COMMIT DROP").format(t)
                )
                with (
                    gzip.open(source / f"{table}.copy.gz", "rb") as f,
                    conn.cursor() as cur,
                    cur.copy("COPY _restore FROM STDIN (FORMAT BINARY)") as copy,
                ):
                    for block in iter(lambda f=f: f.read(1 << 20), b""):
                        copy.write(block)
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} OVERRIDING SYSTEM VALUE SELECT * FROM _restore "
                        "ON CONFLICT DO NOTHING"
                    ).format(t)
                )
                conn.execute("DROP TABLE _restore")
                rows += meta["rows"]
            for table, trigger in triggers:
                conn.execute(
                    sql.SQL("ALTER TABLE {} ENABLE TRIGGER {}").format(
                        sql.Identifier(table), sql.Identifier(trigger)
                    )
                )
            # sequences continue after the restored ids
            for seq, table, column in conn.execute(
                "SELECT s.relname, t.relname, a.attname FROM pg_class s "
                "JOIN pg_depend d ON d.objid = s.oid AND d.deptype = 'a' "
                "JOIN pg_class t ON t.oid = d.refobjid "
                "JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public' "
                "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid "
                "WHERE s.relkind = 'S'"
            ).fetchall():
                conn.execute(
                    sql.SQL(
                        "SELECT setval({}, COALESCE((SELECT max({}) FROM {}), 0) + 1, false)"
                    ).format(sql.Literal(seq), sql.Identifier(column), sql.Identifier(table))
                )
    if replace:
        with psycopg.connect(_url_for(url, "postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(live_db))
            )
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(target), sql.Identifier(live_db)
                )
            )
        target = live_db
    return target, rows, time.monotonic() - t0
