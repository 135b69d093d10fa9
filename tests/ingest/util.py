"""Helpers speaking MQTT to the throwaway broker as a device or a service account."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.broker import account_password
from core.settings import Settings
from core.site import Site
from ingest.topics import topic_for


def client(
    settings: Settings,
    username: str | None,
    password: str | None = None,
    client_id: str | None = None,
) -> mqtt.Client:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"t-{username}-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5,
    )
    if username is not None:
        c.username_pw_set(
            username, account_password(settings, username) if password is None else password
        )
    return c


def connect(c: mqtt.Client, settings: Settings, *, persistent: bool = False) -> mqtt.Client:
    """Connect and wait for CONNACK (raise when refused)."""
    done = threading.Event()
    rc: dict[str, Any] = {}

    def on_connect(cl, userdata, flags, reason_code, properties):
        rc["rc"] = reason_code
        done.set()

    c.on_connect = on_connect
    props = None
    if persistent:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
    c.connect(
        settings.mqtt_host,
        settings.mqtt_port,
        keepalive=30,
        clean_start=not persistent,
        properties=props,
    )
    c.loop_start()
    if not done.wait(10):
        raise AssertionError("broker did not answer CONNECT")
    if rc["rc"].is_failure:
        c.loop_stop()
        raise ConnectionRefusedError(str(rc["rc"]))
    return c


def topic(settings: Settings, site: Site, source_id: str, stream: str) -> str:
    s = site.source_by_id[source_id]
    return topic_for(settings.topic_prefix, s.org_unit, s.kind, s.id, stream)


def body(msg_id: str | None = None, ts: datetime | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "msg_id": msg_id or uuid.uuid4().hex,
        "ts": (ts or datetime.now(UTC)).isoformat(),
        **fields,
    }


def dumps(x: Any) -> bytes:
    return orjson.dumps(x)
