"""`ioc analytics`: turns live readings into KPI updates and runs the storage jobs.

It follows the readings stream on the bus, keeps the latest value of every access point, computes
the KPIs per org unit and publishes only what changed on the KPI stream (the API fans it out).
KPI values are also written to the ``kpi_values`` hypertable as their history. Every few seconds
it runs the rollup job and, hourly, retention (Apache edition; native policies on community).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from analytics.kpi import changed, wifi_clients
from core import bus, db
from core.migrate import check_schema
from core.settings import Settings
from core.site import Site
from core.timescale import apply_retention, detect_edition, refresh_rollups

log = logging.getLogger("ioc.analytics")

ROLLUP_EVERY_S = 10.0
RETENTION_EVERY_S = 3600.0
HISTORY_EVERY_S = 60.0


class AnalyticsService:
    def __init__(self, settings: Settings, site: Site) -> None:
        self.settings = settings
        self.site = site
        self.keys = bus.Keys(settings.redis_prefix)
        self.redis = bus.connect(settings)
        self.latest: dict[str, dict[str, Any]] = {}
        self.kpi: dict[str, int] = {}
        self._stop = threading.Event()

    def load_snapshot(self) -> None:
        raw = self.redis.hgetall(self.keys.latest("wifi_ap"))
        self.latest = {k.decode(): orjson.loads(v) for k, v in raw.items()}
        self.kpi = wifi_clients(self.site, self.latest)
        self.publish_kpi(self.kpi, snapshot=True)

    def publish_kpi(self, values: dict[str, int], *, snapshot: bool = False) -> None:
        if not values:
            return
        now = time.time()
        self.redis.hset(
            self.keys.kpi_latest,
            mapping={
                f"wifi_clients:{u}": orjson.dumps({"value": v, "ts": now})
                for u, v in values.items()
            },
        )
        seq = self.redis.incr(self.keys("seq", "kpi"))
        bus.xadd_json(
            self.redis,
            self.keys.kpi_stream,
            {"seq": seq, "kpi": "wifi_clients", "ts": now, "values": values, "snapshot": snapshot},
        )

    def apply_readings(self, message: dict[str, Any]) -> dict[str, int]:
        if message.get("stream") != "wifi_ap":
            return {}
        for source_id, value in message["values"].items():
            cur = self.latest.get(source_id)
            if cur is None or cur.get("ts", 0) <= value.get("ts", 0):
                self.latest[source_id] = value
        new = wifi_clients(self.site, self.latest)
        diff = changed(self.kpi, new)
        self.kpi = new
        return {k: int(v) for k, v in diff.items()}

    def write_history(self, conn: psycopg.Connection) -> None:
        now = datetime.now(UTC)
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO kpi_values (time, kpi_id, org_unit_id, value) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                [(now, "wifi_clients", u, v) for u, v in self.kpi.items()],
            )

    def run(self) -> None:
        conn = db.connect(self.settings, autocommit=False)
        check_schema(conn)
        edition = detect_edition(conn)
        conn.commit()
        self.load_snapshot()
        last_id = b"$"
        next_rollup = next_history = time.monotonic()
        next_retention = time.monotonic() + 5
        while not self._stop.is_set():
            try:
                resp = self.redis.xread({self.keys.readings_stream: last_id}, block=500, count=500)
            except Exception as exc:
                log.warning("bus read failed (%s); retrying", exc)
                time.sleep(1)
                continue
            diff: dict[str, int] = {}
            for _stream, entries in resp or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    diff.update(self.apply_readings(bus.decode_entry(fields)))
            if diff:
                self.publish_kpi(diff)
            now = time.monotonic()
            try:
                if now >= next_rollup:
                    refresh_rollups(conn, edition)
                    next_rollup = now + ROLLUP_EVERY_S
                if now >= next_history:
                    self.write_history(conn)
                    next_history = now + HISTORY_EVERY_S
                if now >= next_retention:
                    dropped = apply_retention(
                        conn,
                        edition,
                        raw_days=self.settings.retention_raw_days,
                        rollup_days=self.settings.retention_rollup_days,
                    )
                    if any(dropped.values()):
                        log.info("retention dropped chunks: %s", dropped)
                    next_retention = now + RETENTION_EVERY_S
            except psycopg.Error as exc:
                log.warning("storage job failed (%s); will retry", exc.__class__.__name__)
                try:
                    conn.close()
                    conn = db.connect(self.settings)
                except Exception:
                    time.sleep(1)
        conn.close()

    def stop(self) -> None:
        self._stop.set()
