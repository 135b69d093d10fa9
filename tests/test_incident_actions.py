"""Incident lifecycle through the API on the incident engine of issue 5 (runs once that branch
is merged: its module and migration 0004 provide the engine and tables; skipped before)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import httpx
import orjson
import pytest
import websockets

from core import bus
from tests.api_util import ApiServer, bearer, login, make_user

pytest.importorskip("analytics.ops.incidents", reason="the incident engine (issue 5) is not merged")
PASSWORD = "mat-khau-su-co-123"


def test_ack_assign_progress_resolve_with_dedup_scope_and_bus(migrated, db, rds):
    now = datetime.now(UTC)
    iid = db.execute(
        """INSERT INTO incidents (dedup_key, rule_id, kind, severity, title, org_unit_id,
                                  opened_at, last_seen_at)
           VALUES (%s, 'r-test', 'test', 'critical', 'Ngập cầu Sê San', 'iahdrai-iadal', %s, %s)
           RETURNING id""",
        (f"k-{uuid.uuid4().hex[:6]}", now, now),
    ).fetchone()[0]
    db.commit()
    for name, role, unit in (
        ("op-inc", "operator", "iahdrai"),
        ("cb-inc", "field", "iahdrai-iadal"),
        ("cb-inc-iadom", "field", "iahdrai-iadom"),
    ):
        make_user(migrated, name, role, unit, PASSWORD)
    stream = bus.Keys(migrated.redis_prefix)("stream", "incidents")
    with ApiServer(migrated) as api:
        op, cb, other = (
            bearer(login(api.url, n, PASSWORD)) for n in ("op-inc", "cb-inc", "cb-inc-iadom")
        )

        def act(h, **body):
            body.setdefault("action_id", str(uuid.uuid4()))
            return httpx.post(f"{api.url}/api/v1/incidents/{iid}/actions", json=body, headers=h)

        async def snapshot(token: str, channel: str) -> list[str]:
            async with websockets.connect(f"ws://127.0.0.1:{api.port}/ws?token={token}") as ws:
                await ws.recv()
                await ws.send(orjson.dumps({"op": "subscribe", "channels": [channel]}).decode())
                return [i["id"] for i in orjson.loads(await ws.recv())["incidents"]]

        # an incident the engine opened (not via the API) is in the wall's first snapshot
        assert str(iid) in asyncio.run(snapshot(op["Authorization"][7:], "incidents"))
        assert str(iid) not in asyncio.run(snapshot(other["Authorization"][7:], "assignments"))

        once = str(uuid.uuid4())
        assert (
            act(cb, action="acknowledge", action_id=once).json()["incident"]["status"]
            == "acknowledged"
        )
        again = act(cb, action="acknowledge", action_id=once)  # the phone resent it
        assert again.status_code == 200 and again.json()["duplicate"] is True
        r = act(cb, action="acknowledge")
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        assert act(other, action="acknowledge").status_code == 404  # another commune's
        assert act(cb, action="assign", assignee="cb-inc").status_code == 403
        assert (
            act(op, action="assign", assignee="cb-inc").json()["incident"]["assignee"] == "cb-inc"
        )
        assert (
            act(cb, action="progress", note="Đang xử lý").json()["incident"]["status"]
            == "in_progress"
        )
        done = act(
            cb,
            action="resolve",
            note="Đã xong",
            lat=14.01,
            lon=107.45,
            photo="data:image/jpeg;base64,/9j/4AAQ",
        ).json()["incident"]
        assert done["status"] == "resolved"
        assert done["evidence"][-1]["lat"] == 14.01 and done["evidence"][-1]["by"] == "cb-inc"
        events = db.execute(
            "SELECT action FROM incident_events WHERE incident_id = %s ORDER BY id", (iid,)
        ).fetchall()
        assert [e[0] for e in events] == ["acknowledge", "assign", "start", "resolve"]
    published = [orjson.loads(f[b"m"]) for _, f in rds.xrange(stream)]
    mine = [m for m in published if m["incident"]["id"] == str(iid)]
    assert [m["action"] for m in mine] == ["acknowledge", "assign", "progress", "resolve"]
