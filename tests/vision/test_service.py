"""The camera service end to end on real services: a real RTSP server in, events and camera status
in a per-run TimescaleDB database and under a per-run Redis prefix out, with the server stopped
and restarted (camera offline, then back)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
import pytest
import redis

from analytics.vision.service import CameraService
from analytics.vision.sinks import mark_false_positive
from core import bus
from core.migrate import apply_migrations
from core.settings import Settings, load_settings
from core.site import Camera, Site, load_site
from tests.vision.conftest import RtspServer, wait_for

SITE = Path(__file__).parents[2] / "sites" / "iahdrai.yaml"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Its own database (migrated) and Redis prefix, dropped at the end."""
    base = load_settings()
    owner = base.database_url.get_secret_value()
    name = f"ioc_t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(owner)._replace(path=f"/{name}"))
    try:
        with psycopg.connect(url) as conn:
            apply_migrations(conn)
        yield load_settings(
            database_url=url,
            redis_prefix=f"t{uuid.uuid4().hex[:8]}",
            var_dir=tmp_path_factory.mktemp("var"),
        )
    finally:
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def site_with(url: str) -> Site:
    site = load_site(SITE)
    cam = site.cameras[0]
    one = Camera.model_validate({**cam.model_dump(), "url": url, "detect_fps": 4})
    bad_zone = {"id": "z", "name": "z", "points": [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]}
    bad = Camera.model_validate(
        {
            **cam.model_dump(),
            "id": "cam-bad",
            "url": url,
            "zones": [bad_zone],
            "rules": [{"kind": "intrusion", "zone": "z"}],
        }
    )
    return site.model_copy(update={"cameras": [one, bad]})


def stream(client: redis.Redis, key: str) -> list[dict]:
    return [orjson.loads(f[b"m"]) for _, f in client.xrange(key)]


def test_service_events_to_db_and_bus(
    settings: Settings, rtsp_server: Callable[..., RtspServer]
) -> None:
    srv = rtsp_server("cam-motcua-sanh")
    site = site_with(srv.url("cam-motcua-sanh"))
    svc = CameraService(settings, site, stall_s=2.0)
    runner = threading.Thread(target=svc.run, daemon=True)
    runner.start()
    client = bus.connect(settings)
    keys = bus.Keys(settings.redis_prefix)
    try:
        msgs = lambda: stream(client, keys.camera_events_stream)  # noqa: E731
        wait_for(
            lambda: any(m["rule"] == "intrusion" and m["phase"] == "start" for m in msgs()), 60
        )
        first = next(m for m in msgs() if m["rule"] == "intrusion" and m["phase"] == "start")
        assert first["latency_ms"] >= 0 and first["snapshot"]  # measured, not asserted on
        assert first["org_unit"] == site.cameras[0].org_unit
        # The camera with a self-intersecting zone is reported and left out; the other runs.
        assert "cam-bad" in svc.errors and "cross" in svc.errors["cam-bad"]
        assert b"error" in client.hget(keys.camera_status, "cam-bad")
        srv.stop()
        wait_for(lambda: any(m["rule"] == "camera_offline" for m in msgs()), 30)
        srv.start()
        wait_for(
            lambda: any(m["rule"] == "camera_offline" and m["phase"] == "end" for m in msgs()), 60
        )
    finally:
        svc.stop()
        runner.join(timeout=30)
        client.close()
    assert not runner.is_alive()
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        rows = conn.execute(
            """SELECT id, rule, zone, label, track_ids, end_at, model, peak_count, snapshot
               FROM camera_events WHERE camera_id = 'cam-motcua-sanh'"""
        ).fetchall()
        rules = {r[1] for r in rows}
        assert {"intrusion", "camera_offline"} <= rules
        intr = [r for r in rows if r[1] == "intrusion"]
        assert all(r[6] == "nanodet-m-416-coco" and r[4] for r in intr)
        assert all(r[5] is not None for r in intr), "events left open after stop"
        assert all(Path(r[8]).is_file() for r in intr)
        offline = [r for r in rows if r[1] == "camera_offline"]
        assert len(offline) == 1 and offline[0][5] is not None
        ids = [r[0] for r in intr]
        assert mark_false_positive(conn, ids[0], True, "operator")
        for i in ids[1:]:
            mark_false_positive(conn, i, False, "operator")
        assert not mark_false_positive(conn, "no-such-event", True, "operator")
        prec = conn.execute(
            """SELECT events, reviewed, false_positives, precision FROM camera_event_precision
               WHERE camera_id = 'cam-motcua-sanh' AND rule = 'intrusion'"""
        ).fetchone()
        assert prec[0] == prec[1] == len(ids) and prec[2] == 1
        assert prec[3] == pytest.approx((len(ids) - 1) / len(ids))


def test_line_counts_become_a_time_series(settings: Settings) -> None:
    from collections import Counter

    from analytics.vision.sinks import store_counts

    minute = 1_767_600_000 // 60 * 60
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        store_counts(conn, "cam-x", Counter({("gate", "in", "car", minute): 3}))
        store_counts(conn, "cam-x", Counter({("gate", "in", "car", minute): 2,
                                             ("gate", "out", "car", minute): 1}))  # fmt: skip
        rows = conn.execute(
            """SELECT direction, count, extract(epoch FROM time)::bigint FROM camera_counts
               WHERE camera_id = 'cam-x' ORDER BY direction"""
        ).fetchall()
    assert rows == [("in", 5, minute), ("out", 1, minute)]
