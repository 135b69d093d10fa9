"""Ingest against the real broker and database: stored once, rejects kept, latest never goes
back in time; the broker refuses anonymous clients and devices publishing as others."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from core.broker import INGEST_USER, account_password
from ingest.service import IngestService
from ingest.topics import subscription
from tests.conftest import wait_until
from tests.mqtt_util import ap_topic, connect, device_client, status_payload

AP, UNIT = "wifi-ap-ubnd-sanh", "iahdrai-iatoi"


def count(db, where: str, *params) -> int:
    db.commit()
    return db.execute(f"SELECT count(*) FROM wifi_ap_readings WHERE {where}", params).fetchone()[0]


@pytest.fixture
def ingest(migrated, site, background, ingest_client_id):
    svc = IngestService(migrated, site, client_id=ingest_client_id)
    background.start(svc)
    assert svc.wait_connected(10)
    time.sleep(0.2)  # subscription acknowledged
    return svc


def test_published_equals_stored_with_redeliveries(ingest, migrated, db):
    dev = connect(device_client(migrated, AP), migrated)
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    ids = [f"e2e-{i}" for i in range(200)]
    for i, mid in enumerate(ids):
        dev.publish(
            ap_topic(migrated, AP, UNIT),
            status_payload(i, msg_id=mid, ts=t0 + timedelta(seconds=i)),
            qos=1,
        )
    # the same 50 messages again, as a device would resend them after a reconnect
    for i, mid in enumerate(ids[:50]):
        info = dev.publish(
            ap_topic(migrated, AP, UNIT),
            status_payload(i, msg_id=mid, ts=t0 + timedelta(seconds=i)),
            qos=1,
        )
    info.wait_for_publish(5)
    wait_until(lambda: ingest.stats.received >= 250, timeout=15)
    assert count(db, "msg_id LIKE 'e2e-%%'") == 200
    assert ingest.stats.duplicates >= 50
    dev.disconnect()


def test_bad_messages_are_dead_lettered_and_good_ones_kept(ingest, migrated, db):
    dev = connect(device_client(migrated, AP), migrated)
    topic = ap_topic(migrated, AP, UNIT)
    dev.publish(topic, b"{broken", qos=1)
    dev.publish(
        topic,
        orjson.dumps(
            {"msg_id": "x", "ts": "2026-01-01T00:00:00Z", "status": "up", "clients": "lots"}
        ),
        qos=1,
    )
    info = dev.publish(topic, status_payload(5, msg_id="good-after-bad"), qos=1)
    info.wait_for_publish(5)
    wait_until(lambda: count(db, "msg_id = 'good-after-bad'") == 1, timeout=10)
    reasons = {
        r[0] for r in db.execute("SELECT reason FROM dead_letters WHERE topic = %s", (topic,))
    }
    assert "malformed JSON" in reasons
    assert any(r.startswith("clients:") for r in reasons)
    dev.disconnect()


def test_a_late_reading_never_overwrites_latest(ingest, migrated, db, rds):
    dev = connect(device_client(migrated, AP), migrated)
    topic = ap_topic(migrated, AP, UNIT)
    now = datetime.now(UTC)
    dev.publish(topic, status_payload(42, msg_id="newest", ts=now), qos=1).wait_for_publish(5)
    wait_until(lambda: count(db, "msg_id = 'newest'") == 1)
    dev.publish(
        topic, status_payload(7, msg_id="late", ts=now - timedelta(minutes=3)), qos=1
    ).wait_for_publish(5)
    wait_until(lambda: count(db, "msg_id = 'late'") == 1)
    latest = orjson.loads(rds.hget(f"{migrated.redis_prefix}:latest:wifi_ap", AP))
    assert latest["clients"] == 42
    dev.disconnect()


def _connect_result(client: mqtt.Client, settings) -> object:
    done = threading.Event()
    result: dict[str, object] = {}

    def on_connect(c, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        done.set()

    client.on_connect = on_connect
    connect(client, settings)
    assert done.wait(5), "broker did not answer CONNECT"
    client.loop_stop()
    return result["rc"]


def test_anonymous_and_wrong_password_are_refused(migrated):
    anonymous = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    assert _connect_result(anonymous, migrated).is_failure
    wrong = device_client(migrated, AP, password="wrong-password")
    assert _connect_result(wrong, migrated).is_failure
    right = device_client(migrated, AP)
    assert not _connect_result(right, migrated).is_failure
    right.disconnect()


def test_device_cannot_publish_as_another(migrated):
    """wifi-ap-iadal publishes on wifi-ap-ubnd-sanh's topic: the broker drops it."""
    seen: list[str] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.username_pw_set(INGEST_USER, account_password(migrated, INGEST_USER))  # reads everything
    sub.on_message = lambda c, u, m: seen.append(m.topic)
    ready = threading.Event()
    sub.on_subscribe = lambda *a: ready.set()
    connect(sub, migrated)
    sub.subscribe(subscription(migrated.topic_prefix, group=None), qos=1)
    assert ready.wait(5)
    own = connect(device_client(migrated, "wifi-ap-iadal"), migrated)
    own.publish(
        ap_topic(migrated, AP, UNIT), status_payload(1, msg_id="forged"), qos=1
    ).wait_for_publish(5)
    own.publish(
        ap_topic(migrated, "wifi-ap-iadal", "iahdrai-iadal"), status_payload(1), qos=1
    ).wait_for_publish(5)
    wait_until(lambda: any("wifi-ap-iadal/status" in t for t in seen), timeout=5)
    time.sleep(0.3)
    assert not any(f"/{AP}/" in t for t in seen)
    sub.disconnect()
    own.disconnect()
