"""`ioc ops`: the operations job. Every cycle: KPI parts and values, rules → incidents,
escalations (and their notifications), and the monthly reports when they fall due.

The clock is injectable: tests call `cycle(now)` with a hand-moved time; `run()` uses the wall
clock. Several processes may run it: dirty hours and escalations are taken with SKIP LOCKED.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from analytics.kpi.store import ensure_kpi_storage, refresh_cycle
from analytics.ops.dispatch import Notifier, get_staff
from analytics.ops.evaluate import evaluate_all
from analytics.ops.incidents import escalate_due
from analytics.ops.reports import scheduled
from core import bus, db
from core.migrate import check_schema
from core.settings import Settings
from core.site import Site

log = logging.getLogger("ioc.ops")
CYCLE_S = 10.0
REPORT_CHECK_S = 3600.0


def last_seen(redis_client: Any, keys: bus.Keys) -> dict[str, float]:
    """Source health: the newest reading time of every source, from the latest_ts hashes."""
    out: dict[str, float] = {}
    for key in redis_client.scan_iter(keys("latest_ts", "*"), count=100):
        for src, ts in redis_client.hgetall(key).items():
            s, t = src.decode(), float(ts)
            out[s] = max(out.get(s, 0.0), t)
    return out


class OpsService:
    def __init__(
        self, settings: Settings, site: Site, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.settings = settings
        self.site = site
        self.clock = clock or (lambda: datetime.now(UTC))
        self.keys = bus.Keys(settings.redis_prefix)
        self.redis = bus.connect(settings)
        self.notifier = Notifier(settings, site, redis_client=self.redis, clock=self.clock)
        self._stop = threading.Event()
        self._next_report = 0.0

    def cycle(self, conn: psycopg.Connection, now: datetime) -> dict[str, Any]:
        res = refresh_cycle(conn, self.site, now)
        outcomes = evaluate_all(
            conn,
            self.site,
            now,
            last_seen=last_seen(self.redis, self.keys),
            kpi_changes=res.status_changes,
        )
        escalations = escalate_due(conn, self.site, now)
        for e in escalations:
            if e.staff_id is None:
                continue
            with conn.cursor(row_factory=dict_row) as cur:
                inc = cur.execute("SELECT * FROM incidents WHERE id = %s", (e.incident_id,))
                incident = inc.fetchone()
            person = get_staff(conn, e.staff_id)
            self.notifier.notify(incident, person, "escalation")
        reports: list[str] = []
        if now.timestamp() >= self._next_report:
            reports = scheduled(conn, self.settings, self.site, now, None)
            self._next_report = now.timestamp() + REPORT_CHECK_S
        return {
            "hours": res.hours,
            "values": res.values,
            "refresh_ms": round(res.refresh_ms, 1),
            "incidents": len([o for o in outcomes if o[0] == "fire"]),
            "escalations": len(escalations),
            "reports": reports,
        }

    def run(self) -> None:
        conn = db.connect(self.settings)
        check_schema(conn)
        ensure_kpi_storage(conn)
        while not self._stop.is_set():
            try:
                out = self.cycle(conn, self.clock())
                if out["incidents"] or out["escalations"] or out["reports"]:
                    log.info("ops cycle: %s", out)
            except psycopg.Error as exc:
                log.warning("ops cycle failed (%s); will retry", exc.__class__.__name__)
                try:
                    conn.close()
                    conn = db.connect(self.settings)
                except Exception:
                    pass
            except Exception as exc:  # a bad cycle (Redis down, …) must not stop the job
                log.warning("ops cycle failed (%s: %s); will retry", exc.__class__.__name__, exc)
                if not conn.closed:
                    conn.rollback()
            self._stop.wait(CYCLE_S)
        conn.close()

    def stop(self) -> None:
        self._stop.set()
