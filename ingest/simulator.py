"""`ioc simulate`: a district that behaves like one, published over MQTT as the real devices.

Each WiFi access point connects with its own credentials and publishes its status: connected
clients follow office hours (peaks mid-morning and mid-afternoon, quiet at night and on
Sundays) with noise, and an AP goes down now and then. Seeded, so a run can be reproduced.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson
import paho.mqtt.client as mqtt

from core.mqtt import new_client
from core.settings import Settings
from core.site import Site, Source
from ingest.topics import topic_for

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")


def office_load(local: datetime) -> float:
    """0..1 expected share of peak visitors at a local time (office hours 7:30–11:30, 13:30–17)."""
    h = local.hour + local.minute / 60
    weekday = local.weekday()
    day_factor = {5: 0.45, 6: 0.15}.get(weekday, 1.0)
    morning = math.exp(-(((h - 9.5) / 1.6) ** 2))
    afternoon = 0.85 * math.exp(-(((h - 15.0) / 1.5) ** 2))
    evening = 0.25 * math.exp(-(((h - 19.5) / 1.5) ** 2))  # the square in the evening
    return max(0.02, day_factor * max(morning, afternoon, evening))


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


class Simulator:
    def __init__(
        self, settings: Settings, site: Site, *, seed: int = 7, interval_s: float = 1.0
    ) -> None:
        self.settings = settings
        self.site = site
        self.rng = random.Random(seed)
        self.interval_s = interval_s
        self.aps = [
            ApState(s, capacity=self.rng.randint(40, 160))
            for s in site.sources
            if s.kind == "wifi_ap"
        ]
        for ap in self.aps:
            ap.clients = ap.capacity * office_load(datetime.now(LOCAL))
        self.clients: dict[str, mqtt.Client] = {}
        self.published = 0
        self._stop = threading.Event()

    def connect(self) -> None:
        for ap in self.aps:
            c = new_client(self.settings, ap.source.id, f"sim-{ap.source.id}")
            c.connect(*self.settings.mqtt_endpoint(), keepalive=30)
            c.loop_start()
            self.clients[ap.source.id] = c

    def publish_round(self) -> int:
        now = time.time()
        local = datetime.now(LOCAL)
        for ap in self.aps:
            payload = next_reading(ap, self.rng, local, now)
            payload["msg_id"] = uuid.UUID(int=self.rng.getrandbits(128)).hex
            payload["ts"] = datetime.fromtimestamp(now, UTC).isoformat()
            topic = topic_for(
                self.settings.topic_prefix, ap.source.org_unit, "wifi_ap", ap.source.id, "status"
            )
            self.clients[ap.source.id].publish(topic, orjson.dumps(payload), qos=1)
            self.published += 1
        return len(self.aps)

    def run(self, duration_s: float | None = None) -> None:
        self.connect()
        end = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not self._stop.is_set() and (end is None or time.monotonic() < end):
                self.publish_round()
                self._stop.wait(self.interval_s)
        finally:
            for c in self.clients.values():
                c.disconnect()
                c.loop_stop()

    def stop(self) -> None:
        self._stop.set()
