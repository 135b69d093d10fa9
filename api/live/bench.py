"""`ioc bench live`: MQTT publish → websocket receipt latency through every real hop (broker,
ingest, TimescaleDB commit, Redis, analytics, the API process, N websocket clients), with the
API's memory, against a measured ceiling: the broker's own publish → subscriber latency.

It runs in its own Redis/topic prefixes so it never mixes with a running site; readings it
stores are tagged by the bench's message ids in the configured database.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import websockets
from paho.mqtt.enums import CallbackAPIVersion

from api.auth.service import Principal, issue_token
from core.broker import INGEST_USER, account_password
from core.errors import IOCError
from core.settings import ROOT, Settings
from core.site import load_site
from ingest.topics import topic_for


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _client(settings: Settings, user: str, password: str) -> mqtt.Client:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-{user}-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5,
    )
    c.username_pw_set(user, password)
    c.connect(settings.mqtt_host, settings.mqtt_port, keepalive=30)
    c.loop_start()
    return c


def _payload(clients: int) -> bytes:
    return orjson.dumps(
        {
            "msg_id": uuid.uuid4().hex,
            "ts": datetime.now(UTC).isoformat(),
            "status": "up",
            "clients": clients,
        }
    )


def mqtt_ceiling(settings: Settings, n: int = 200) -> float:
    """Median publish → receipt (ms) of the broker alone, QoS 1, on this machine."""
    topic = f"{settings.topic_prefix}/iahdrai-iadom/wifi_ap/wifi-ap-iadom/status"
    got: dict[int, float] = {}
    sub = _client(settings, INGEST_USER, account_password(settings, INGEST_USER))
    sub.on_message = lambda _c, _u, m: got.setdefault(
        orjson.loads(m.payload)["clients"], time.perf_counter()
    )
    sub.subscribe(topic, qos=1)
    pub = _client(settings, "wifi-ap-iadom", account_password(settings, "wifi-ap-iadom"))
    time.sleep(0.5)
    sent: dict[int, float] = {}
    for i in range(n):
        sent[i] = time.perf_counter()
        pub.publish(topic, _payload(i), qos=1)
        time.sleep(0.002)
    time.sleep(0.5)
    pub.disconnect()
    sub.disconnect()
    return statistics.median([(got[i] - sent[i]) * 1000 for i in sent if i in got])


def bench_live(settings: Settings, *, clients: int, rate: float, duration: float) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    db_url = _scratch_db(settings, f"ioc_bench_{run}")
    s = settings.model_copy(
        update={
            "redis_prefix": f"bench-{run}",
            "topic_prefix": f"bench{run}",
            "ingest_client_id": f"bench-ingest-{run}",
            "database_url": type(settings.database_url)(db_url),
        }
    )
    try:
        return _bench(s, run, clients=clients, rate=rate, duration=duration)
    finally:
        _drop_db(settings, f"ioc_bench_{run}")
        _clear_redis(s)


def _scratch_db(settings: Settings, name: str) -> str:
    """A throwaway database with the schema, rollups and site loaded."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    from core.migrate import apply_migrations
    from core.sitesync import sync_site
    from core.timescale import ensure_storage

    owner = settings.database_url.get_secret_value()
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = urlunsplit(urlsplit(owner)._replace(path=f"/{name}"))
    with psycopg.connect(url) as conn:
        apply_migrations(conn)
        ensure_storage(conn, raw_days=7, rollup_days=7)
        sync_site(conn, load_site(settings.site_file))
    return url


def _drop_db(settings: Settings, name: str) -> None:
    import psycopg

    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def _drop_session(s: Settings) -> None:
    """Remove the bench ingest's persistent broker session (no orphan in the shared group)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=s.ingest_client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(INGEST_USER, account_password(s, INGEST_USER))
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    try:
        c.connect(s.mqtt_host, s.mqtt_port, clean_start=True, properties=props)
        c.loop(1)
        c.disconnect()
    except OSError:
        pass


def _clear_redis(s: Settings) -> None:
    import redis

    r = redis.Redis.from_url(s.redis_url)
    keys = list(r.scan_iter(f"{s.redis_prefix}:*", count=1000))
    if keys:
        r.delete(*keys)


def _bench(s: Settings, run: str, *, clients: int, rate: float, duration: float) -> dict[str, Any]:
    from analytics.service import AnalyticsService
    from ingest.service import IngestService

    site = load_site(s.site_file)
    ceiling = mqtt_ceiling(s)
    ingest, analytics = IngestService(s, site), AnalyticsService(s, site)
    threads = [threading.Thread(target=x.run, daemon=True) for x in (ingest, analytics)]
    for t in threads:
        t.start()
    if not ingest.wait_connected(10):
        raise IOCError("bench: ingest did not connect to the broker")
    port = 20000 + int(run, 16) % 20000
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env.update(
        IOC_REDIS_PREFIX=s.redis_prefix,
        IOC_TOPIC_PREFIX=s.topic_prefix,
        IOC_DATABASE_URL=s.database_url.get_secret_value(),
        IOC_LOG_LEVEL="WARNING",
        IOC_SITE_FILE=str(s.site_file),
        IOC_WS_BUFFER_FRAMES="4096",
    )
    api = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    aps = [x for x in site.sources if x.kind == "wifi_ap"]
    sent: dict[int, float] = {}
    lat: list[float] = []
    try:
        time.sleep(2.5)
        token = issue_token(
            s.jwt_secret.get_secret_value(), Principal("bench", "operator", "iahdrai"), 30
        )

        async def scenario() -> int:
            conns = []
            for _ in range(clients):
                ws = await websockets.connect(
                    f"ws://127.0.0.1:{port}/ws?token={token}", open_timeout=20
                )
                await ws.send('{"op": "subscribe", "channels": ["kpi"]}')
                conns.append(ws)

            async def reader(ws) -> None:
                async for text in ws:
                    now = time.perf_counter()
                    m = orjson.loads(text)
                    if m.get("type") == "delta":
                        v = m["kpis"].get("wifi_clients", {}).get("iahdrai-iadom")
                        if v in sent:
                            lat.append((now - sent[v]) * 1000)

            tasks = [asyncio.create_task(reader(ws)) for ws in conns]
            pubs = {a.id: _client(s, a.id, account_password(s, a.id)) for a in aps}
            loop = asyncio.get_running_loop()
            t0, i = loop.time(), 0
            while loop.time() < t0 + duration:  # `rate` messages a second over the APs
                a = aps[i % len(aps)]
                i += 1
                v = i % 99_999 + 1
                if a.id == "wifi-ap-iadom":
                    sent[v] = time.perf_counter()
                topic = topic_for(s.topic_prefix, a.org_unit, "wifi_ap", a.id, "status")
                pubs[a.id].publish(topic, _payload(v), qos=1)
                await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
            await asyncio.sleep(2)
            for p in pubs.values():
                p.disconnect()
            for t in tasks:
                t.cancel()
            for ws in conns:
                await ws.close()
            return i

        published = asyncio.run(scenario())
        with open(f"/proc/{api.pid}/status") as f:
            rss = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    finally:
        api.terminate()
        api.wait(10)
        ingest.stop()
        analytics.stop()
        for t in threads:
            t.join(10)
        _drop_session(s)
    p50, p99 = _pct(lat, 0.5), _pct(lat, 0.99)
    return {
        "clients": clients,
        "rate_msgs_s": round(published / duration, 1),
        "duration_s": duration,
        "samples": len(lat),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "rss_mb": round(rss, 1),
        "ceiling_mqtt_p50_ms": round(ceiling, 2),
        "ratio_p50_to_ceiling": round(p50 / ceiling, 1) if ceiling else None,
    }
