"""Fixtures of the ingestion tests: a database of this run on the real PostgreSQL/TimescaleDB,
a random Redis prefix, and a throwaway Mosquitto with the project's configuration (so broker
restarts in the fault tests disturb no one)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
import redis

from core.settings import ROOT, Settings, load_settings
from core.site import Site, load_site
from ingest.throwaway import Broker, create_database, drop_database
from tests.conftest import Background

SAMPLE_SITE = ROOT / "sites" / "iahdrai.yaml"


def wait_until(check: Callable[[], object], timeout: float = 10.0, every: float = 0.05) -> object:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        time.sleep(every)


@pytest.fixture(scope="session")
def isite() -> Site:
    return load_site(SAMPLE_SITE)


@pytest.fixture(scope="session")
def ibase() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def ibroker(ibase: Settings, isite: Site) -> Iterator[Broker]:
    b = Broker(ibase, isite).start()
    yield b
    b.cleanup()


@pytest.fixture(scope="session")
def isettings(ibase: Settings, isite: Site, ibroker: Broker) -> Iterator[Settings]:
    owner = ibase.database_url.get_secret_value()
    url = create_database(owner, isite)
    rid = uuid.uuid4().hex[:8]
    s = ibroker.settings.model_copy(
        update={
            "database_url": type(ibase.database_url)(url),
            "redis_prefix": f"ioct-ing-{rid}",
            "topic_prefix": f"ioct-{rid}",
            "site_file": SAMPLE_SITE,
            "ingest_batch_ms": 20,
        }
    )
    yield s
    drop_database(owner, url)
    r = redis.Redis.from_url(s.redis_url)
    keys = list(r.scan_iter(f"{s.redis_prefix}:*", count=1000))
    if keys:
        r.delete(*keys)


@pytest.fixture
def idb(isettings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(isettings.database_url.get_secret_value(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def ireds(isettings: Settings) -> redis.Redis:
    return redis.Redis.from_url(isettings.redis_url)


@pytest.fixture
def ibg() -> Iterator[Background]:
    bg = Background(join_s=15)
    yield bg
    bg.stop_all()
