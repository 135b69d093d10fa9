"""Fixtures for the KPI/incident tests: a fresh migrated database per test module (so the
hand-computed expectations see only their own rows), a controllable clock, the app role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from core.migrate import apply_migrations
from core.settings import Settings
from core.site import Site
from core.sitesync import sync_site
from core.timescale import ensure_storage


class Clock:
    """A clock the test moves by hand: nothing in the engine reads the wall clock."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2025, 6, 10, 3, 0, tzinfo=UTC))  # Tue 10:00 in Hà Nội


def _with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture(scope="module")
def kdb_settings(settings: Settings, site: Site) -> Iterator[Settings]:
    """A database of this module's own, migrated, with the sample site loaded."""
    owner = settings.database_url.get_secret_value()
    name = f"ioc_t_kpi_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(owner, name)
    with psycopg.connect(url) as conn:
        apply_migrations(conn)
        ensure_storage(conn, raw_days=3650, rollup_days=3650)
        sync_site(conn, site)
    yield settings.model_copy(update={"database_url": type(settings.database_url)(url)})
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def kdb(kdb_settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(kdb_settings.database_url.get_secret_value()) as conn:
        yield conn
