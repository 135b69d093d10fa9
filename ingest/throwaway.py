"""Throwaway Mosquitto and PostgreSQL instances for fault tests and benchmarks.

Each lives in a temporary directory on a free port, with the project's own broker configuration
(core.broker: no anonymous access, per-device passwords, ACL, persistence) or a fresh ``initdb``
cluster with TimescaleDB preloaded, so stopping or killing one disturbs nobody else.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from core import broker
from core.errors import IOCError
from core.migrate import apply_migrations
from core.settings import Settings
from core.site import Site
from core.sitesync import sync_site
from core.timescale import ensure_storage

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tempdir(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o755)  # the broker may drop privileges to the `mosquitto` user
    return d


class Broker:
    """The project's Mosquitto configuration, on a free port in a temp dir."""

    def __init__(self, settings: Settings, site: Site) -> None:
        self.dir = _tempdir("ioc-mqtt-")
        update: dict[str, object] = {
            "mqtt_port": free_port(),
            "var_dir": self.dir,
            "mqtt_host": "127.0.0.1",
        }
        if "mqtt_tls_port" in Settings.model_fields:  # builds whose broker also listens on TLS
            update["mqtt_tls_port"] = free_port()
        self.settings = settings.model_copy(update=update)
        self.site = site

    def start(self) -> Broker:
        broker.start(self.settings, self.site)
        return self

    def stop(self) -> None:
        broker.stop(self.settings)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise IOCError("PostgreSQL server binaries not found under /usr/lib/postgresql")
    return found[-1].parent


class Postgres:
    """A fresh cluster (initdb) with TimescaleDB preloaded; runs as `postgres` when we are root."""

    def __init__(self) -> None:
        self.dir = _tempdir("ioc-pg-")
        self.data = self.dir / "data"
        self.port = free_port()
        self.bin = _pg_bin()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def init(self) -> Postgres:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        with (self.data / "postgresql.conf").open("a") as f:
            f.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\n"
                "shared_preload_libraries = 'timescaledb'\ntimescaledb.telemetry_level = off\n"
                "fsync = on\nmax_connections = 50\n"
            )
        return self

    def start(self) -> None:
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def with_db(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def create_database(owner_url: str, site: Site, name: str | None = None) -> str:
    """Create a database, migrate it, create rollups and load the site; return its URL."""
    name = name or f"ioc_t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = with_db(owner_url, name)
    with psycopg.connect(url) as conn:
        apply_migrations(conn)
        ensure_storage(conn, raw_days=3650, rollup_days=3650)
        sync_site(conn, site)
    return url


def drop_database(owner_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with contextlib.suppress(psycopg.Error), psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker.port_open("127.0.0.1", port):
            return
        time.sleep(0.05)
    raise IOCError(f"nothing listens on port {port}")
