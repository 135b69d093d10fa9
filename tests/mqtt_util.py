"""Test helpers that speak to the real broker as a device or as a service account."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import paho.mqtt.client as mqtt

from core.mqtt import new_client
from core.settings import Settings
from ingest.topics import topic_for


def device_client(settings: Settings, username: str, password: str | None = None) -> mqtt.Client:
    return new_client(settings, username, f"t-{username}-{uuid.uuid4().hex[:6]}", password=password)


def connect(c: mqtt.Client, settings: Settings) -> mqtt.Client:
    c.connect(*settings.mqtt_endpoint(), keepalive=30)
    c.loop_start()
    return c


def status_payload(
    clients: int, *, msg_id: str | None = None, ts: datetime | None = None, status: str = "up"
) -> bytes:
    return orjson.dumps(
        {
            "msg_id": msg_id or uuid.uuid4().hex,
            "ts": (ts or datetime.now(UTC)).isoformat(),
            "status": status,
            "clients": clients,
        }
    )


def ap_topic(settings: Settings, ap: str, org_unit: str) -> str:
    return topic_for(settings.topic_prefix, org_unit, "wifi_ap", ap, "status")
