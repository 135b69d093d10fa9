"""Shared fixtures: each test run gets its own database, Redis key prefix and MQTT topic prefix,
on the real PostgreSQL/TimescaleDB, Redis and the project's Mosquitto, so runs never see each
other's data."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis

from core.migrate import apply_migrations
from core.settings import ROOT, Settings, load_settings
from core.site import Site, load_site
from core.sitesync import sync_site
from core.timescale import ensure_storage

SAMPLE_SITE = ROOT / "sites" / "iahdrai.yaml"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], object], timeout: float = 10.0, every: float = 0.05) -> object:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def database_url(base_settings: Settings, run_id: str) -> Iterator[str]:
    owner = base_settings.database_url.get_secret_value()
    name = f"ioc_t_{run_id}"
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(owner, name)
    yield url
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def settings(base_settings: Settings, database_url: str, run_id: str) -> Iterator[Settings]:
    s = base_settings.model_copy(
        update={
            "database_url": type(base_settings.database_url)(database_url),
            "redis_prefix": f"ioct-{run_id}",
            "topic_prefix": f"ioct-{run_id}",
            "site_file": SAMPLE_SITE,
        }
    )
    yield s
    r = redis.Redis.from_url(s.redis_url)
    keys = list(r.scan_iter(f"{s.redis_prefix}:*", count=1000))
    if keys:
        r.delete(*keys)


@pytest.fixture(scope="session")
def ingest_client_id(settings: Settings) -> Iterator[str]:
    """One stable ingest client id per run; its persistent broker session is removed at the end."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from core.broker import INGEST_USER, account_password

    client_id = f"{settings.redis_prefix}-ingest"
    yield client_id
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(INGEST_USER, account_password(settings, INGEST_USER))
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    with contextlib.suppress(OSError):
        c.connect(settings.mqtt_host, settings.mqtt_port, clean_start=True, properties=props)
        c.loop(1)
        c.disconnect()


@pytest.fixture(scope="session")
def site() -> Site:
    return load_site(SAMPLE_SITE)


@pytest.fixture(scope="session")
def migrated(settings: Settings, site: Site) -> Settings:
    """The run's database with migrations, rollups and the sample site loaded."""
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        apply_migrations(conn)
        ensure_storage(conn, raw_days=90, rollup_days=730)
        sync_site(conn, site)
    return settings


@pytest.fixture
def db(migrated: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(migrated.database_url.get_secret_value()) as conn:
        yield conn


@pytest.fixture
def rds(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


@pytest.fixture
def env_for(settings: Settings) -> Callable[..., dict[str, str]]:
    """Environment for an `ioc` child process bound to this run's database and prefixes."""

    def make(**extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
        env.update(
            IOC_DATABASE_URL=settings.database_url.get_secret_value(),
            IOC_REDIS_PREFIX=settings.redis_prefix,
            IOC_TOPIC_PREFIX=settings.topic_prefix,
            IOC_SITE_FILE=str(settings.site_file),
        )
        env.update(extra)
        return env

    return make


class Background:
    """Run a service's blocking `run()` in a thread and stop it at the end of the test."""

    def __init__(self, join_s: float = 10) -> None:
        self.items: list[tuple[object, threading.Thread]] = []
        self.join_s = join_s

    def start(self, service: object, **kwargs: object) -> object:
        t = threading.Thread(target=service.run, kwargs=kwargs, daemon=True)  # type: ignore[attr-defined]
        t.start()
        self.items.append((service, t))
        return service

    def stop_all(self) -> None:
        for service, t in reversed(self.items):
            with contextlib.suppress(Exception):
                service.stop()  # type: ignore[attr-defined]
            t.join(self.join_s)


@pytest.fixture
def background() -> Iterator[Background]:
    bg = Background()
    yield bg
    bg.stop_all()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
