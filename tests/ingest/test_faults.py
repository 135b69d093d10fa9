"""Fault tests on throwaway instances: PostgreSQL stopped during the flow, `kill -9` of ingest,
Mosquitto restarted; and two ingest processes sharing one subscription. Each time the stored
rows equal the published messages exactly: nothing lost, nothing doubled.

The PostgreSQL outage lasts INGEST_FAULT_PG_DOWN_S seconds (default 8; the issue's figure is 30).
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid

import psycopg
import pytest

from ingest.throwaway import Broker, Postgres, create_database
from tests.ingest.conftest import wait_until
from tests.ingest.faults import Publisher, kill_leftovers, start_ingest

PG_DOWN_S = float(os.environ.get("INGEST_FAULT_PG_DOWN_S", "8"))
RATE = 2000


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    yield
    kill_leftovers()


@pytest.fixture(scope="module")
def pg():
    p = Postgres().init()
    p.start()
    yield p
    p.cleanup()


@pytest.fixture(scope="module")
def fbroker(ibase, isite):
    b = Broker(ibase, isite).start()
    yield b
    b.cleanup()


@pytest.fixture
def fsettings(pg, fbroker, isite):
    rid = uuid.uuid4().hex[:8]
    url = create_database(pg.url, isite, f"ioc_f_{rid}")
    return fbroker.settings.model_copy(
        update={
            "database_url": type(fbroker.settings.database_url)(url),
            "redis_prefix": f"ioct-f-{rid}",
            "topic_prefix": f"f{rid}",
        }
    )


def stored(settings, run: str) -> tuple[int, int]:
    try:
        with psycopg.connect(settings.database_url.get_secret_value(), connect_timeout=2) as c:
            return c.execute(
                "SELECT count(*), count(DISTINCT msg_id) FROM wifi_ap_readings "
                "WHERE msg_id LIKE %s",
                (f"{run}-%",),
            ).fetchone()
    except psycopg.OperationalError:
        return (-1, -1)


def wait_connected(log_path, n: int = 1, timeout: float = 15) -> None:
    wait_until(lambda: log_path.read_text().count("connected to broker") >= n, timeout=timeout)
    time.sleep(0.3)


def stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)


def test_postgres_stopped_during_the_flow(fsettings, isite, pg, tmp_path):
    log = tmp_path / "ingest.log"
    proc = start_ingest(fsettings, "ing-pg", log)
    wait_connected(log)
    run = uuid.uuid4().hex[:6]
    total = int(RATE * (PG_DOWN_S + 4))
    pub = Publisher(fsettings, isite, run, total, RATE)
    pub.start()
    time.sleep(1.5)
    pg.stop("fast")
    time.sleep(PG_DOWN_S)
    pg.start()
    pub.join(PG_DOWN_S + 30)
    wait_until(lambda: stored(fsettings, run)[0] >= total, timeout=90, every=0.5)
    time.sleep(1)
    assert pub.published == total
    assert stored(fsettings, run) == (total, total)
    assert proc.poll() is None, "ingest survived the outage"
    stop(proc)
    pub.close()
    assert "database write failed" in log.read_text() or "database not available" in log.read_text()


def test_kill_9_mid_batch_then_restart(fsettings, isite, tmp_path):
    log = tmp_path / "ingest.log"
    proc = start_ingest(fsettings, "ing-k9", log)
    wait_connected(log)
    run = uuid.uuid4().hex[:6]
    total = RATE * 6
    pub = Publisher(fsettings, isite, run, total, RATE)
    pub.start()
    wait_until(lambda: stored(fsettings, run)[0] > RATE, timeout=20)
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    time.sleep(1.0)
    proc = start_ingest(fsettings, "ing-k9", log)  # same client id: resumes the session
    pub.join(30)
    wait_until(lambda: stored(fsettings, run)[0] >= total, timeout=60, every=0.5)
    time.sleep(1)
    assert stored(fsettings, run) == (total, total)
    stop(proc)
    pub.close()


def test_mosquitto_restart_during_the_flow(fsettings, isite, fbroker, tmp_path):
    log = tmp_path / "ingest.log"
    proc = start_ingest(fsettings, "ing-mq", log)
    wait_connected(log)
    run = uuid.uuid4().hex[:6]
    total = RATE * 6
    pub = Publisher(fsettings, isite, run, total, RATE)
    pub.start()
    time.sleep(2)
    fbroker.stop()  # SIGTERM: Mosquitto saves its persistence file
    time.sleep(1)
    fbroker.start()
    pub.join(40)
    wait_until(lambda: stored(fsettings, run)[0] >= total, timeout=60, every=0.5)
    time.sleep(1)
    assert stored(fsettings, run) == (total, total)
    assert log.read_text().count("connected to broker") >= 2
    stop(proc)
    pub.close()


def test_two_ingest_processes_share_the_load(fsettings, isite, tmp_path):
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_ingest(fsettings, f"ing-share-{i}", p, shared=True) for i, p in enumerate(logs)]
    for p in logs:
        wait_connected(p)
    run = uuid.uuid4().hex[:6]
    total = RATE * 4
    pub = Publisher(fsettings, isite, run, total, RATE)
    pub.start()
    pub.join(30)
    wait_until(lambda: stored(fsettings, run)[0] >= total, timeout=60, every=0.5)
    time.sleep(1)
    assert stored(fsettings, run) == (total, total)
    for p in procs:
        stop(p)
    shares = []
    for p in logs:
        m = re.search(r"stopped: received=(\d+) stored=(\d+) duplicates=(\d+)", p.read_text())
        assert m, p.read_text()[-2000:]
        shares.append(int(m.group(2)))
    assert sum(shares) == total  # split between the two, no row written twice
    assert min(shares) > total * 0.2, shares
    pub.close()


def test_memory_is_bounded_while_the_database_is_down(fsettings, isite, pg, ibg):
    """With the database down ingest acks nothing, so the broker stops at the in-flight window
    (Receive Maximum) and keeps the backlog; ingest holds at most one window in memory."""
    from ingest.service import IngestService

    window = 100
    s = fsettings.model_copy(update={"mqtt_receive_maximum": window, "ingest_batch_max": 50})
    svc = IngestService(s, isite, client_id="ing-bounded")
    ibg.start(svc)
    assert svc.wait_connected(10)
    time.sleep(0.3)
    pg.stop("fast")
    try:
        run = uuid.uuid4().hex[:6]
        total = 3000
        pub = Publisher(s, isite, run, total, RATE)
        pub.start()
        peak = 0
        deadline = time.monotonic() + total / RATE + 3
        while time.monotonic() < deadline:
            peak = max(peak, svc.held)
            time.sleep(0.01)
        assert pub.acked == total  # the broker took everything: the backlog is there
        assert svc.stats.stored == 0
        assert 0 < peak <= window
    finally:
        pg.start()
    wait_until(lambda: stored(s, run)[0] >= total, timeout=60, every=0.5)
    assert stored(s, run) == (total, total)
    pub.close()
