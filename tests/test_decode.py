"""Validation of WiFi AP status messages: pure, exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from ingest.decode import MAX_PAYLOAD_BYTES, Rejected, WifiApReading, decode

NOW = datetime(2026, 3, 2, 2, 30, tzinfo=UTC)
TOPIC = "ioc/iahdrai-motcua/wifi_ap/wifi-ap-motcua/status"


def payload(**over: object) -> bytes:
    body = {
        "msg_id": "m1",
        "ts": "2026-03-02T09:29:58+07:00",
        "status": "up",
        "clients": 37,
        "rx_bytes": 1000,
        "tx_bytes": 200,
        "logins": 4,
    }
    body.update(over)
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


def test_valid_status_becomes_a_reading(site):
    r = decode(TOPIC, payload(), site, NOW)
    assert isinstance(r, WifiApReading)
    assert r.time == datetime(2026, 3, 2, 2, 29, 58, tzinfo=UTC)
    assert (r.source_id, r.org_unit_id, r.clients, r.up) == (
        "wifi-ap-motcua",
        "iahdrai-motcua",
        37,
        True,
    )


@pytest.mark.parametrize(
    ("topic", "body", "reason"),
    [
        ("ioc/x/wifi_ap/status", payload(), "topic does not match"),
        ("ioc/iahdrai-motcua/wifi_ap/ghost/status", payload(), "unknown source 'ghost'"),
        ("ioc/iahdrai-iadal/wifi_ap/wifi-ap-motcua/status", payload(), "site file says"),
        ("ioc/iahdrai-motcua/wifi_ap/wifi-ap-motcua/bogus", payload(), "unknown stream"),
        (TOPIC, b"{not json", "malformed JSON"),
        (TOPIC, b"[1, 2]", "Input should be an object"),
        (TOPIC, payload(clients="many"), "clients:"),
        (TOPIC, payload(clients=-1), "clients:"),
        (TOPIC, payload(clients=1.5), "clients:"),
        (
            TOPIC,
            b'{"msg_id": "m", "ts": "2026-03-02T02:00:00Z", "status": "up", "clients": NaN}',
            "finite number",
        ),
        (TOPIC, payload(status="sideways"), "status:"),
        (TOPIC, payload(ts="2026-03-02T09:29:58"), "time zone"),
        (TOPIC, payload(ts=(NOW + timedelta(hours=2)).isoformat()), "in the future"),
        (TOPIC, payload(ts=(NOW - timedelta(days=800)).isoformat()), "in the past"),
        (TOPIC, payload(msg_id=...), "msg_id: Field required"),
        (TOPIC, payload(extra=1), "extra: Extra inputs"),
        (TOPIC, b" " * (MAX_PAYLOAD_BYTES + 1), "payload over"),
    ],
)
def test_rejects_carry_a_reason(site, topic, body, reason):
    r = decode(topic, body, site, NOW)
    assert isinstance(r, Rejected)
    assert reason in r.reason
