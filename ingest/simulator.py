"""`ioc simulate`: a district that behaves like one, published over MQTT as the real devices.

Every source connects with its own credentials and publishes its streams:
- WiFi access points: connected clients follow office hours (peaks mid-morning and
  mid-afternoon, the square in the evening, quiet at night and on Sundays) with noise; an AP goes
  down now and then;
- the one-stop-shop system: dossiers arrive by weekday and hour (almost none on Sunday), about
  seven in ten online on weekdays (nearly all online at the weekend, when counters are closed);
  each is later completed on time, late, or returned; online fees are paid online;
- sensors: the Sê San water level with a slow daily swing and occasional rain surges, air quality
  with traffic peaks and occasional spikes (burning season);
- press monitoring items and budget-estimate status changes, now and then.

Seeded, so a run can be reproduced. ``rate`` multiplies the publishing rate (load tests);
``backfill(days)`` writes that much history straight into the database (binary COPY through the
ingest writer, same tables and idempotency keys) in a few seconds per simulated month.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import paho.mqtt.client as mqtt

from core.mqtt import new_client
from core.settings import Settings
from core.site import Site, Source
from ingest.topics import topic_for

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
log = logging.getLogger("ioc.simulate")
PROCEDURES = ("1.004227", "1.001612", "2.000908", "1.003003", "2.002154", "1.000775")
AGENCIES = (
    "Văn phòng HĐND-UBND",
    "Phòng Tư pháp",
    "Phòng Tài nguyên và Môi trường",
    "Phòng Lao động – TB&XH",
)
PRESS_TOPICS = ("giao thông", "đất đai", "y tế", "giáo dục", "môi trường", "an ninh trật tự")


def office_load(local: datetime) -> float:
    """0..1 expected share of peak visitors at a local time (office hours 7:30–11:30, 13:30–17)."""
    h = local.hour + local.minute / 60
    weekday = local.weekday()
    day_factor = {5: 0.45, 6: 0.15}.get(weekday, 1.0)
    morning = math.exp(-(((h - 9.5) / 1.6) ** 2))
    afternoon = 0.85 * math.exp(-(((h - 15.0) / 1.5) ** 2))
    evening = 0.25 * math.exp(-(((h - 19.5) / 1.5) ** 2))  # the square in the evening
    return max(0.02, day_factor * max(morning, afternoon, evening))


def dossier_rate_per_hour(local: datetime, peak: float = 24.0) -> float:
    """Dossiers received per hour: counters open weekdays and Saturday morning; online any time."""
    h = local.hour + local.minute / 60
    day = {5: 0.25, 6: 0.05}.get(local.weekday(), 1.0)
    office = math.exp(-(((h - 9.0) / 1.8) ** 2)) + 0.8 * math.exp(-(((h - 14.5) / 1.6) ** 2))
    return peak * day * office + 0.4  # a trickle of online dossiers day and night


def online_share(local: datetime) -> float:
    """Share of dossiers filed online: ~72 % on weekdays; at the weekend almost all."""
    return 0.95 if local.weekday() >= 5 else 0.72


@dataclass
class ApState:
    source: Source
    capacity: int
    up: bool = True
    rx: int = 0
    tx: int = 0
    logins: int = 0
    down_until: float = 0.0
    clients: float = field(default=0.0)


def next_reading(ap: ApState, rng: random.Random, local: datetime, now: float) -> dict:
    """Advance one AP by a step and return its status payload (without msg_id and ts)."""
    if ap.up and rng.random() < 0.0005:
        ap.up, ap.down_until = False, now + rng.uniform(20, 120)
    elif not ap.up and now >= ap.down_until:
        ap.up = True
    target = ap.capacity * office_load(local) if ap.up else 0
    ap.clients = max(0.0, ap.clients + (target - ap.clients) * 0.3 + rng.gauss(0, 1.5))
    clients = round(ap.clients) if ap.up else 0
    ap.rx += clients * rng.randint(2_000, 60_000)
    ap.tx += clients * rng.randint(500, 12_000)
    if clients and rng.random() < 0.3:
        ap.logins += rng.randint(1, 3)
    return {
        "status": "up" if ap.up else "down",
        "clients": clients,
        "rx_bytes": ap.rx,
        "tx_bytes": ap.tx,
        "logins": ap.logins,
    }


def water_level(local: datetime, rng: random.Random, surge: float) -> float:
    """Metres at the Sê San gauge: ~3.2 m, a daily swing (dam releases), rain surges."""
    h = local.hour + local.minute / 60
    return round(3.2 + 0.4 * math.sin((h - 6) / 24 * 2 * math.pi) + surge + rng.gauss(0, 0.02), 3)


def pm25(local: datetime, rng: random.Random, spike: float) -> float:
    h = local.hour + local.minute / 60
    traffic = 12 * (math.exp(-(((h - 7.5) / 1.2) ** 2)) + math.exp(-(((h - 17.5) / 1.2) ** 2)))
    return round(max(1.0, 14 + traffic + spike + rng.gauss(0, 2)), 1)


@dataclass
class Dossier:
    dossier_id: str
    channel: str
    procedure: str
    agency: str
    org_unit: str
    due: float  # when its outcome is published (epoch s)


class District:
    """The simulated district's state; `step` yields (source, stream, payload) for one tick.

    Pure apart from the seeded random generator: the same seed and times give the same data."""

    def __init__(self, site: Site, rng: random.Random) -> None:
        self.site = site
        self.rng = rng
        self.aps = [
            ApState(s, capacity=rng.randint(40, 160))
            for s in site.sources
            if s.kind in ("wifi_ap", "wifi_gateway")
        ]
        self.by_kind: dict[str, list[Source]] = {}
        for s in site.sources:
            self.by_kind.setdefault(s.kind, []).append(s)
        self.open: list[Dossier] = []
        self.surge = 0.0
        self.spike = 0.0
        self.serial = 0
        self.communes = [u.id for u in site.org_units if u.kind in ("commune", "ward", "town")]
        self.communes = self.communes or [site.org_units[0].id]

    def _id(self) -> str:
        return uuid.UUID(int=self.rng.getrandbits(128)).hex

    def warm(self, local: datetime) -> None:
        for ap in self.aps:
            ap.clients = ap.capacity * office_load(local)

    def step(
        self, now: float, dt: float, *, sensors: bool = True, completion_s: tuple[float, float]
    ) -> Iterator[tuple[Source, str, dict[str, Any]]]:
        """Everything published during the `dt` seconds ending at `now`."""
        rng = self.rng
        local = datetime.fromtimestamp(now, LOCAL)
        for ap in self.aps:
            yield ap.source, "status", next_reading(ap, rng, local, now)
        if sensors:
            self.surge = max(0.0, self.surge * math.exp(-dt / 7200) - 1e-4)
            if rng.random() < dt / (5 * 86400):  # a heavy rain every ~5 days
                self.surge = rng.uniform(0.5, 2.5)
            self.spike *= math.exp(-dt / 1800)
            if rng.random() < dt / (3 * 86400):
                self.spike = rng.uniform(40, 160)
            for s in self.by_kind.get("sensor", []):
                if "level" in s.id:
                    yield s, "water_level", {"level_m": water_level(local, rng, self.surge)}
                else:
                    p = pm25(local, rng, self.spike)
                    yield s, "air_quality", {"pm25": p, "pm10": round(p * 1.6, 1)}
        systems = {s.id: s for s in self.by_kind.get("service_system", [])}
        igate = next((s for k, s in systems.items() if "motcua" in k), None)
        if igate is not None:
            yield from self._dossiers(igate, now, dt, local, completion_s)
        press = next((s for k, s in systems.items() if "baochi" in k or "press" in k), None)
        if press is not None and rng.random() < dt / 1800:
            yield (
                press,
                "press",
                {
                    "item_id": self._id()[:16],
                    "outlet": rng.choice(("Báo Kon Tum", "Báo Gia Lai", "Facebook", "Zalo")),
                    "topic": rng.choice(PRESS_TOPICS),
                    "sentiment": round(max(-1, min(1, rng.gauss(0.1, 0.45))), 2),
                },
            )
        budget = next((s for k, s in systems.items() if "dutoan" in k or "budget" in k), None)
        if budget is not None and rng.random() < dt / 21600:
            yield (
                budget,
                "budget_estimate",
                {
                    "unit": rng.choice(self.communes),
                    "fiscal_year": local.year + 1,
                    "plan": "annual",
                    "status": rng.choice(("drafting", "submitted", "submitted", "approved")),
                },
            )

    def _dossiers(
        self,
        igate: Source,
        now: float,
        dt: float,
        local: datetime,
        completion_s: tuple[float, float],
    ) -> Iterator[tuple[Source, str, dict]]:
        rng = self.rng
        expected = dossier_rate_per_hour(local) * dt / 3600
        n = _poisson(rng, expected)
        for _ in range(n):
            self.serial += 1
            d = Dossier(
                dossier_id=f"H{local:%y%m%d}-{self.serial:06d}",
                channel="online" if rng.random() < online_share(local) else "counter",
                procedure=rng.choice(PROCEDURES),
                agency=rng.choice(AGENCIES),
                org_unit=rng.choice(self.communes),
                due=now + rng.uniform(*completion_s),
            )
            self.open.append(d)
            yield igate, "dossier", self._dossier_event(d, "received")
            if d.channel == "online" and rng.random() < 0.5:
                yield (
                    igate,
                    "payment",
                    {
                        "payment_id": self._id()[:20],
                        "dossier_id": d.dossier_id,
                        "amount_vnd": rng.choice((20_000, 50_000, 100_000, 200_000)),
                        "method": rng.choice(("qr", "e_wallet", "bank_card", "bank_transfer")),
                        "status": "succeeded" if rng.random() < 0.97 else "failed",
                    },
                )
        still = []
        for d in self.open:
            if d.due > now:
                still.append(d)
                continue
            r = rng.random()
            outcome = (
                "completed_on_time" if r < 0.86 else "completed_late" if r < 0.96 else "returned"
            )
            yield igate, "dossier", self._dossier_event(d, outcome)
        self.open = still

    @staticmethod
    def _dossier_event(d: Dossier, event: str) -> dict[str, Any]:
        return {
            "dossier_id": d.dossier_id,
            "event": event,
            "channel": d.channel,
            "procedure_code": d.procedure,
            "agency": d.agency,
            "org_unit": d.org_unit,
            "end_to_end": d.channel == "online",
        }


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


class Simulator:
    def __init__(
        self,
        settings: Settings,
        site: Site,
        *,
        seed: int = 7,
        interval_s: float = 1.0,
        rate: float = 1.0,
    ) -> None:
        self.settings = settings
        self.site = site
        self.rng = random.Random(seed)
        self.interval_s = interval_s
        self.rate = rate
        self.district = District(site, self.rng)
        self.district.warm(datetime.now(LOCAL))
        self.aps = self.district.aps
        self.clients: dict[str, mqtt.Client] = {}
        self.published = 0
        self._stop = threading.Event()

    def connect(self) -> None:
        for s in self.site.sources:
            c = new_client(self.settings, s.id, f"sim-{s.id}")
            c.max_inflight_messages_set(1000)
            c.connect(*self.settings.mqtt_endpoint(), keepalive=30)
            c.loop_start()
            self.clients[s.id] = c

    def publish_round(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        n = 0
        ts = datetime.fromtimestamp(now, UTC).isoformat()
        for src, stream, payload in self.district.step(
            now, self.interval_s / self.rate, completion_s=(30, 600)
        ):
            payload = {"msg_id": self.district._id(), "ts": ts, **payload}
            topic = topic_for(self.settings.topic_prefix, src.org_unit, src.kind, src.id, stream)
            self.clients[src.id].publish(topic, orjson.dumps(payload), qos=1)
            n += 1
        self.published += n
        return n

    def run(self, duration_s: float | None = None) -> None:
        self.connect()
        end = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not self._stop.is_set() and (end is None or time.monotonic() < end):
                self.publish_round()
                self._stop.wait(self.interval_s / self.rate)
        finally:
            for c in self.clients.values():
                c.disconnect()
                c.loop_stop()

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ history
    def backfill(self, days: float, *, step_s: float = 60.0, now: float | None = None) -> int:
        """Write `days` of history ending now straight into the database; return rows stored.

        Same decoder, writer and idempotency keys as live ingest, so rerunning with the same seed
        and end time adds nothing. Sensors and APs report every `step_s` simulated seconds."""
        from core import db
        from core.timescale import detect_edition
        from ingest.decode import Decoder, Rejected
        from ingest.pipeline import hash_key
        from ingest.store import BatchWriter

        end = time.time() if now is None else now
        end = end - end % step_s
        t = end - days * 86400
        decoder = Decoder(self.site, hash_key(self.settings))
        conn = db.connect(self.settings)
        writer = BatchWriter(conn, detect_edition(conn))
        self.district.warm(datetime.fromtimestamp(t, LOCAL))
        stored, pending = 0, []
        horizon = datetime.fromtimestamp(end, UTC) + timedelta(minutes=4)
        try:
            while t <= end and not self._stop.is_set():
                ts = datetime.fromtimestamp(t, UTC).isoformat()
                for src, stream, payload in self.district.step(
                    t, step_s, completion_s=(3600, 15 * 86400)
                ):
                    body = orjson.dumps({"msg_id": self.district._id(), "ts": ts, **payload})
                    topic = topic_for("sim", src.org_unit, src.kind, src.id, stream)
                    for r in decoder.decode_message(topic, body, horizon):
                        if isinstance(r, Rejected):
                            log.warning("backfill produced a reject: %s", r.reason)
                        else:
                            pending.append(r)
                if len(pending) >= 20_000:
                    stored += writer.write(pending, []).inserted
                    pending = []
                t += step_s
            if pending:
                stored += writer.write(pending, []).inserted
        finally:
            conn.close()
        return stored
