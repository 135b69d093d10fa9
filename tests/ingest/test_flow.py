"""Ingestion end to end on the real broker (a throwaway one with the project's configuration),
the real TimescaleDB and Redis: typed streams, dead letters, latest values, source health."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import yaml

from core.broker import PUBLISHER_USER
from core.site import Site
from ingest.health import Health
from ingest.service import IngestService
from tests.ingest.conftest import SAMPLE_SITE, wait_until
from tests.ingest.util import body, client, connect, dumps, topic

MAC = "3C:22:FB:12:AB:9E"


@pytest.fixture
def fresh(isettings):
    """Settings with a topic and Redis prefix of their own (their own shared subscription)."""
    rid = uuid.uuid4().hex[:8]
    return isettings.model_copy(
        update={"topic_prefix": f"t{rid}", "redis_prefix": f"{isettings.redis_prefix}-{rid}"}
    )


def start_ingest(ibg, settings, site) -> IngestService:
    svc = IngestService(settings, site, client_id=f"ing-{settings.topic_prefix}")
    ibg.start(svc)
    assert svc.wait_connected(10)
    time.sleep(0.3)  # subscription acknowledged
    return svc


def count(db, table: str, where: str, *params) -> int:
    return db.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()[0]


def test_typed_streams_are_stored_in_their_tables(fresh, isite, ibg, idb):
    svc = start_ingest(ibg, fresh, isite)
    run = uuid.uuid4().hex[:6]
    igate = connect(client(fresh, "motcua-igate"), fresh)
    dossiers = [
        body(
            f"{run}-d{i}",
            dossier_id=f"HS-{i}",
            event=ev,
            channel=ch,
            procedure_code="1.004227",
            agency="Phòng Tư pháp",
            org_unit="iahdrai-iatoi",
            end_to_end=ch == "online",
        )
        for i, (ev, ch) in enumerate(
            [("received", "online"), ("completed_late", "counter"), ("returned", "online")]
        )
    ]
    dossiers.append(
        body(
            f"{run}-dbad",
            dossier_id="HS-x",
            event="lost",
            channel="online",
            procedure_code="1",
            agency="a",
            org_unit="iahdrai-iatoi",
        )
    )
    igate.publish(topic(fresh, isite, "motcua-igate", "dossier"), dumps(dossiers), qos=1)
    igate.publish(
        topic(fresh, isite, "motcua-igate", "payment"),
        dumps(
            body(f"{run}-p", payment_id="P1", amount_vnd=50_000, method="qr", status="succeeded")
        ),
        qos=1,
    )
    igate.publish(
        topic(fresh, isite, "motcua-igate", "meeting_session"),
        dumps(body(f"{run}-m", meeting_id="M1", status="started", participants=12)),
        qos=1,
    ).wait_for_publish(5)
    level = connect(client(fresh, "sensor-sesan-level"), fresh)
    level.publish(
        topic(fresh, isite, "sensor-sesan-level", "water_level"),
        dumps(body(f"{run}-w", level_m=4.25, flow_m3s=310.0)),
        qos=1,
    ).wait_for_publish(5)
    gw = connect(client(fresh, "wifi-gw-tthc"), fresh)
    gw.publish(
        topic(fresh, isite, "wifi-gw-tthc", "login"),
        dumps(body(f"{run}-l", device=MAC, method="sms")),
        qos=1,
    ).wait_for_publish(5)
    gw.publish(  # a bad login: its raw MAC must not reach the dead-letter table either
        topic(fresh, isite, "wifi-gw-tthc", "login"),
        dumps(body(f"{run}-lbad", device=MAC, method="carrier-pigeon")),
        qos=1,
    ).wait_for_publish(5)
    wait_until(lambda: count(idb, "wifi_logins", "msg_id = %s", f"{run}-l") == 1)
    wait_until(lambda: count(idb, "dossier_events", "msg_id LIKE %s", f"{run}-%") == 3)
    assert count(idb, "payments", "msg_id = %s AND amount_vnd = 50000", f"{run}-p") == 1
    rec = idb.execute("SELECT stream, data FROM stream_records WHERE msg_id = %s", (f"{run}-m",))
    assert rec.fetchone() == (
        "meeting_session",
        {"meeting_id": "M1", "status": "started", "participants": 12},
    )
    metrics = dict(
        idb.execute("SELECT metric, value FROM telemetry WHERE msg_id = %s", (f"{run}-w",))
    )
    assert metrics == {"water_level.level_m": 4.25, "water_level.flow_m3s": 310.0}
    row = idb.execute(
        "SELECT event, channel, dossier_org_unit, end_to_end FROM dossier_events WHERE msg_id = %s",
        (f"{run}-d1",),
    ).fetchone()
    assert row == ("completed_late", "counter", "iahdrai-iatoi", False)
    wait_until(lambda: count(idb, "dead_letters", "reason LIKE %s", "[3].event:%"))
    # never a raw MAC: not in the logins, not in the dead letters
    h = idb.execute("SELECT device_hash FROM wifi_logins WHERE msg_id = %s", (f"{run}-l",))
    assert MAC.lower().replace(":", "") not in h.fetchone()[0]
    wait_until(lambda: count(idb, "dead_letters", "source_id = 'wifi-gw-tthc'") >= 1)
    for (payload,) in idb.execute("SELECT payload FROM dead_letters"):
        assert MAC.encode() not in payload and MAC.lower().encode() not in payload
    assert svc.stats.rejected >= 2
    for c in (igate, level, gw):
        c.disconnect()


BAD = {
    "malformed_json": b"{broken",
    "wrong_type": None,  # filled below
    "not_finite": b'{"msg_id": "n", "ts": "%s", "status": "up", "clients": NaN}',
    "too_large": b" " * (64 * 1024 + 1),
    "future_ts": None,
    "past_ts": None,
    "unknown_field": None,
}


def test_every_bad_input_is_dead_lettered_and_good_ones_kept(fresh, isite, ibg, idb, ireds):
    start_ingest(ibg, fresh, isite)
    ap = connect(client(fresh, "wifi-ap-motcua"), fresh)
    t = topic(fresh, isite, "wifi-ap-motcua", "status")
    now = datetime.now(UTC)
    bad = dict(BAD)
    bad["not_finite"] = bad["not_finite"] % now.isoformat().encode()
    bad["wrong_type"] = dumps(body(status="up", clients="lots"))
    bad["future_ts"] = dumps(body(ts=now + timedelta(hours=3), status="up", clients=1))
    bad["past_ts"] = dumps(body(ts=now - timedelta(days=900), status="up", clients=1))
    bad["unknown_field"] = dumps(body(status="up", clients=1, colour="red"))
    run = uuid.uuid4().hex[:6]
    for i, payload in enumerate(bad.values()):
        ap.publish(t, payload, qos=1)
        ap.publish(t, dumps(body(f"{run}-g{i}", status="up", clients=i)), qos=1)
    # unknown source, published by the trusted publisher account on a topic no device owns
    pub = connect(client(fresh, PUBLISHER_USER), fresh)
    pub.publish(
        f"{fresh.topic_prefix}/iahdrai-iatoi/wifi_ap/ghost-ap/status",
        dumps(body(status="up", clients=1)),
        qos=1,
    ).wait_for_publish(5)
    ap.publish(t, dumps(body(f"{run}-last", status="up", clients=99)), qos=1).wait_for_publish(5)
    wait_until(lambda: count(idb, "wifi_ap_readings", "msg_id LIKE %s", f"{run}-%") == 8)
    codes = {c for (c,) in idb.execute("SELECT code FROM dead_letters")}
    assert set(bad) | {"unknown_source"} <= codes
    counters = wait_until(lambda: ireds.hgetall(f"{fresh.redis_prefix}:dead_letters"))
    assert {k.decode() for k in counters} >= set(bad) | {"unknown_source"}
    ap.disconnect()
    pub.disconnect()


def test_late_sensor_reading_is_stored_but_never_overwrites_latest(fresh, isite, ibg, idb, ireds):
    start_ingest(ibg, fresh, isite)
    s = connect(client(fresh, "sensor-air-tthc"), fresh)
    t = topic(fresh, isite, "sensor-air-tthc", "air_quality")
    now = datetime.now(UTC)
    run = uuid.uuid4().hex[:6]
    s.publish(t, dumps(body(f"{run}-new", ts=now, pm25=35.0)), qos=1).wait_for_publish(5)
    wait_until(lambda: count(idb, "telemetry", "msg_id = %s", f"{run}-new") == 1)
    s.publish(
        t, dumps(body(f"{run}-old", ts=now - timedelta(minutes=10), pm25=180.0)), qos=1
    ).wait_for_publish(5)
    wait_until(lambda: count(idb, "telemetry", "msg_id = %s", f"{run}-old") == 1)
    latest = orjson.loads(ireds.hget(f"{fresh.redis_prefix}:latest:air_quality", "sensor-air-tthc"))
    assert latest["pm25"] == 35.0
    s.disconnect()


def _fast_site() -> Site:
    data = yaml.safe_load(SAMPLE_SITE.read_text())
    for src in data["sources"]:
        if src["id"] == "sensor-air-tthc":
            src["expected_interval_s"] = 1
    return Site.model_validate(data)


def test_source_health_offline_back_skew_and_quality(fresh, ibg, idb, ireds):
    site = _fast_site()
    svc = start_ingest(ibg, fresh, site)
    s = connect(client(fresh, "sensor-air-tthc"), fresh)
    t = topic(fresh, site, "sensor-air-tthc", "air_quality")
    run = uuid.uuid4().hex[:6]
    skewed = datetime.now(UTC) - timedelta(minutes=2)  # the sensor's clock is 2 minutes behind
    s.publish(t, dumps(body(f"{run}-a", ts=skewed, pm25=10.0)), qos=1).wait_for_publish(5)
    health = Health(ireds, svc.keys, site)
    wait_until(lambda: health.snapshot(time.time())["sensor-air-tthc"]["ok"] == 1)
    snap = health.snapshot(time.time())["sensor-air-tthc"]
    assert snap["clock_flag"] and 110 < snap["skew_s"] < 140
    assert snap["parts"]["dung"] < 1 and snap["score"] < 100
    # silent for more than 3 intervals: one "source offline" event, stored and on the bus
    wait_until(lambda: health.snapshot(time.time())["sensor-air-tthc"]["offline"], timeout=10)
    wait_until(
        lambda: count(
            idb, "events", "kind = 'source_offline' AND source_id = %s", "sensor-air-tthc"
        )
    )
    s.publish(t, dumps(body(f"{run}-b", pm25=11.0)), qos=1).wait_for_publish(5)
    wait_until(lambda: not health.snapshot(time.time())["sensor-air-tthc"]["offline"])
    wait_until(
        lambda: count(idb, "events", "kind = 'source_back' AND source_id = %s", "sensor-air-tthc")
    )
    kinds = [
        e["stream"]
        for _, f in ireds.xrange(f"{fresh.redis_prefix}:stream:events")
        for e in orjson.loads(f[b"m"])["events"]
        if e.get("source_id") == "sensor-air-tthc"
    ]
    assert kinds.count("source_offline") == 1 and "source_back" in kinds
    summary = wait_until(
        lambda: ireds.hget(f"{fresh.redis_prefix}:health_summary", "sensor-air-tthc"), timeout=8
    )
    assert 0 <= orjson.loads(summary)["score"] <= 100
    s.disconnect()


def test_broker_refuses_anonymous_and_forged_publishing(fresh, isite, ibg, idb):
    start_ingest(ibg, fresh, isite)
    with pytest.raises(ConnectionRefusedError):
        connect(client(fresh, None), fresh)
    with pytest.raises(ConnectionRefusedError):
        connect(client(fresh, "motcua-igate", password="not-the-password"), fresh)
    a = connect(client(fresh, "baochi-monitor"), fresh)  # A
    run = uuid.uuid4().hex[:6]
    forged = body(f"{run}-forged", payment_id="X", amount_vnd=1, method="qr", status="succeeded")
    a.publish(topic(fresh, isite, "motcua-igate", "payment"), dumps(forged), qos=1)  # as B
    own = body(f"{run}-own", item_id="1", outlet="Báo Kon Tum", topic="giao thông", sentiment=-0.4)
    a.publish(topic(fresh, isite, "baochi-monitor", "press"), dumps(own), qos=1).wait_for_publish(5)
    wait_until(lambda: count(idb, "press_items", "msg_id = %s", f"{run}-own") == 1)
    time.sleep(0.5)
    assert count(idb, "payments", "msg_id = %s", f"{run}-forged") == 0
    # a device cannot read other sources' data either
    got: list[str] = []
    a.on_message = lambda c, u, m: got.append(m.topic)
    a.subscribe(f"{fresh.topic_prefix}/#", qos=1)
    b = connect(client(fresh, "motcua-igate"), fresh)
    b.publish(
        topic(fresh, isite, "motcua-igate", "payment"),
        dumps(body(payment_id="Y", amount_vnd=2, method="qr", status="succeeded")),
        qos=1,
    ).wait_for_publish(5)
    time.sleep(0.5)
    assert got == []
    a.disconnect()
    b.disconnect()


def test_broker_files_follow_the_site_file_and_reload(ibroker, isite, fresh):
    """A source added to the site file can connect once `ioc broker reload` regenerated the
    password and ACL files; before, it is refused."""
    from core import broker

    data = yaml.safe_load(SAMPLE_SITE.read_text())
    data["sources"].append(
        {
            "id": "sensor-new-gauge",
            "kind": "sensor",
            "org_unit": "iahdrai-iadom",
            "name": "Trạm đo mới",
        }
    )
    grown = Site.model_validate(data)
    with pytest.raises(ConnectionRefusedError):
        connect(client(fresh, "sensor-new-gauge"), fresh)
    assert broker.start(ibroker.settings, grown) == "reloaded"
    time.sleep(0.5)
    c = connect(client(fresh, "sensor-new-gauge"), fresh)
    c.disconnect()
    assert broker.start(ibroker.settings, isite) == "reloaded"
