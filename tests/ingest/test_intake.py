"""The HTTP intake on the real database and Redis: same validation and storage as MQTT, one
API key per source, FIWARE NGSI-LD and Open311 adapters, idempotent retries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.intake import api_key_for, register_intake
from tests.ingest.util import body


@pytest.fixture
def http(isettings, isite):
    app = FastAPI()
    intake = register_intake(app, isettings, isite)
    with TestClient(app) as c:
        yield c
    intake.close()


def key(settings, source_id: str) -> dict[str, str]:
    return {"X-API-Key": api_key_for(settings, source_id)}


def count(db, table: str, where: str, *params) -> int:
    return db.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()[0]


def dossier(mid: str, **over) -> dict:
    d = body(
        mid,
        dossier_id="HS-9",
        event="received",
        channel="online",
        procedure_code="2.001",
        agency="Một cửa huyện",
        org_unit="iahdrai-iadom",
    )
    d.update(over)
    return d


def test_batch_is_stored_once_even_when_retried(http, isettings, idb):
    run = uuid.uuid4().hex[:6]
    batch = [dossier(f"{run}-{i}") for i in range(3)] + [dossier(f"{run}-bad", channel="fax")]
    url = "/api/v1/intake/motcua-igate/dossier"
    r = http.post(url, json=batch, headers=key(isettings, "motcua-igate"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["accepted"], out["stored"], len(out["rejected"])) == (3, 3, 1)
    assert out["rejected"][0]["index"] == 3 and "channel" in out["rejected"][0]["reason"]
    again = http.post(url, json=batch[:3], headers=key(isettings, "motcua-igate")).json()
    assert (again["stored"], again["duplicates"]) == (0, 3)
    assert count(idb, "dossier_events", "msg_id LIKE %s", f"{run}-%") == 3
    assert count(idb, "dead_letters", "transport = 'http' AND reason LIKE %s", "[3].channel%")


def test_api_key_opens_only_its_own_source(http, isettings):
    url = "/api/v1/intake/motcua-igate/dossier"
    assert http.post(url, json=dossier("x")).status_code == 401
    assert http.post(url, json=dossier("x"), headers={"X-API-Key": "guess"}).status_code == 401
    other = key(isettings, "baochi-monitor")  # a valid key, of another source
    assert http.post(url, json=dossier("x"), headers=other).status_code == 401
    r = http.post(
        "/api/v1/intake/ghost/dossier", json=dossier("x"), headers=key(isettings, "ghost")
    )
    assert r.status_code == 401


def test_bad_bodies_get_clear_errors(http, isettings):
    h = key(isettings, "motcua-igate")
    r = http.post("/api/v1/intake/motcua-igate/dossier", content=b"{nope", headers=h)
    assert r.status_code == 422 and r.json()["rejected"][0]["code"] == "malformed_json"
    big = b"[" + b" " * (1024 * 1024) + b"]"
    assert (
        http.post("/api/v1/intake/motcua-igate/dossier", content=big, headers=h).status_code == 413
    )
    r = http.post("/api/v1/intake/motcua-igate/nosuch", json=dossier("x"), headers=h)
    assert r.status_code == 422 and "unknown stream" in r.json()["rejected"][0]["reason"]


def test_ngsi_ld_entities(http, isettings, idb, ireds):
    now = datetime.now(UTC).isoformat()
    ap = {
        "id": f"urn:ngsi-ld:AccessPoint:{uuid.uuid4().hex[:6]}",
        "type": "AccessPoint",
        "apState": {"type": "Property", "value": "up"},
        "clientsConnected": {"type": "Property", "value": 125},
        "timeInstant": {"type": "Property", "value": {"@type": "DateTime", "@value": now}},
    }
    r = http.post(
        "/api/v1/intake/wifi-ap-hoitruong/ngsi-ld/v1/entities",
        json=ap,
        headers=key(isettings, "wifi-ap-hoitruong"),
    )
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    assert count(idb, "wifi_ap_readings", "source_id = 'wifi-ap-hoitruong' AND clients = 125")
    crowd = {
        "id": "urn:ngsi-ld:CrowdFlowObserved:1",
        "type": "CrowdFlowObserved",
        "dateObserved": now,
        "peopleCount": 42,
        "occupancy": 0.3,
    }  # keyValues form
    alert = {
        "id": f"urn:ngsi-ld:Alert:{uuid.uuid4().hex[:6]}",
        "type": "Alert",
        "category": "environment",
        "subCategory": "flood",
        "severity": "high",
        "dateIssued": now,
        "location": {"type": "Point", "coordinates": [107.45, 14.01]},
    }
    other = {"id": "urn:x", "type": "ParkingSpot"}
    r = http.post(
        "/api/v1/intake/sensor-sesan-level/ngsi-ld/v1/entityOperations/upsert",
        json=[crowd, alert, other],
        headers=key(isettings, "sensor-sesan-level"),
    )
    out = r.json()
    assert out["accepted"] == 2 and "unsupported NGSI-LD type" in out["rejected"][0]["reason"]
    assert count(idb, "telemetry", "metric = 'crowd_flow.people_count' AND value = 42")
    assert count(
        idb,
        "events",
        "kind = 'alert' AND payload->>'sub_category' = 'flood' "
        "AND (payload->>'lat')::float = 14.01",
    )


def test_open311_service_requests(http, isettings, idb):
    rid = uuid.uuid4().hex[:8]
    req = {
        "service_request_id": rid,
        "status": "open",
        "service_code": "den_duong_hong",
        "description": "Đèn đường hỏng",
        "lat": 14.1,
        "long": 107.55,
        "requested_datetime": datetime.now(UTC).isoformat(),
    }
    r = http.post(
        "/api/v1/intake/motcua-igate/open311/requests",
        json=req,
        headers=key(isettings, "motcua-igate"),
    )
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    row = idb.execute(
        "SELECT category, status, lon FROM field_reports WHERE report_id = %s", (rid,)
    ).fetchone()
    assert row == ("den_duong_hong", "new", 107.55)


def test_the_app_mounts_the_intake():
    from api.app import create_app

    paths = create_app().openapi()["paths"]
    assert "/api/v1/intake/{source_id}/{stream}" in paths
    assert "/api/v1/intake/{source_id}/open311/requests" in paths


def test_source_health_for_the_dashboard_is_scoped(http, isettings, ireds):
    from api.auth import Principal, issue_token

    prefix = isettings.redis_prefix
    ireds.hset(
        f"{prefix}:health_summary",
        mapping={
            "wifi-ap-iadal": orjson.dumps({"org_unit": "iahdrai-iadal", "score": 80}),
            "wifi-ap-iadom": orjson.dumps({"org_unit": "iahdrai-iadom", "score": 55}),
        },
    )
    assert http.get("/api/v1/sources/health").status_code == 401
    secret = isettings.jwt_secret.get_secret_value()
    commune = issue_token(secret, Principal("u1", "operator", "iahdrai-iadal"), 5)
    r = http.get("/api/v1/sources/health", headers={"Authorization": f"Bearer {commune}"})
    assert r.status_code == 200 and r.json() == {
        "wifi-ap-iadal": {"org_unit": "iahdrai-iadal", "score": 80}
    }
    district = issue_token(secret, Principal("u2", "leader", "iahdrai"), 5)
    r = http.get("/api/v1/sources/health", headers={"Authorization": f"Bearer {district}"})
    assert set(r.json()) == {"wifi-ap-iadal", "wifi-ap-iadom"}
