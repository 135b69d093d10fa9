"""Helpers of the fault tests: a steady QoS 1 publisher and `ioc ingest` as a child process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import orjson

from core.broker import PUBLISHER_USER
from core.settings import ROOT, Settings
from core.site import Site
from ingest.topics import topic_for
from tests.ingest.util import client, connect


class Publisher(threading.Thread):
    """Publishes `total` single-reading messages at `rate`/s over the WiFi APs, QoS 1, with a
    persistent session so that anything unacknowledged is resent after a broker restart."""

    def __init__(self, settings: Settings, site: Site, run: str, total: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.run_id, self.total, self.rate = settings, run, total, rate
        self.aps = [s for s in site.sources if s.kind == "wifi_ap"]
        self.c = client(settings, PUBLISHER_USER, client_id=f"pub-{run}")
        self.c.max_inflight_messages_set(1000)
        self.c.max_queued_messages_set(0)
        self.published = 0
        self.acked = 0
        self.c.on_publish = self._on_publish

    def _on_publish(self, c, userdata, mid, reason_code, properties) -> None:
        self.acked += 1

    def run(self) -> None:
        connect(self.c, self.settings, persistent=True)
        t0 = time.monotonic()
        for i in range(self.total):
            ap = self.aps[i % len(self.aps)]
            body = {
                "msg_id": f"{self.run_id}-{i}",
                "ts": datetime.now(UTC).isoformat(),
                "status": "up",
                "clients": i % 500,
            }
            t = topic_for(self.settings.topic_prefix, ap.org_unit, "wifi_ap", ap.id, "status")
            self.c.publish(t, orjson.dumps(body), qos=1)
            self.published += 1
            ahead = t0 + (i + 1) / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def ingest_env(settings: Settings, client_id: str, shared: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOC_")}
    env.update(
        IOC_DATABASE_URL=settings.database_url.get_secret_value(),
        IOC_MQTT_PORT=str(settings.mqtt_port),
        IOC_REDIS_PREFIX=settings.redis_prefix,
        IOC_TOPIC_PREFIX=settings.topic_prefix,
        IOC_VAR_DIR=str(settings.var_dir),
        IOC_SITE_FILE=str(settings.site_file),
        IOC_INGEST_CLIENT_ID=client_id,
        IOC_INGEST_BATCH_MS="20",
        IOC_INGEST_SHARED="true" if shared else "false",
    )
    return env


STARTED: list[subprocess.Popen] = []


def kill_leftovers() -> None:
    """Stop every ingest child a test started and did not stop (a failed assertion)."""
    while STARTED:
        p = STARTED.pop()
        if p.poll() is None:
            p.kill()
            p.wait(10)


def start_ingest(
    settings: Settings, client_id: str, log_path, shared: bool = False
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "core.cli", "ingest"],
        cwd=ROOT,
        env=ingest_env(settings, client_id, shared),
        stdout=subprocess.DEVNULL,
        stderr=open(log_path, "ab"),
    )
