"""Dispatch: nearest on-duty person, delivery to a real local SMTP server (aiosmtpd), to a local
HTTP webhook gateway with retries and fallback, to the Redis stream; a dead endpoint does not
hold up the other channels."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
from aiosmtpd.controller import Controller

from analytics.ops.dispatch import Notifier, assign_and_notify, rank_nearest, suggest
from analytics.ops.incidents import Place, open_incident
from core import bus
from core.site import Gateway, Operations, Rule
from tests.conftest import free_port, wait_until

T = datetime(2025, 9, 1, 2, 0, tzinfo=UTC)
R = Rule(
    id="r-disp",
    kind="threshold",
    name="Ngập úng",
    severity="high",
    team="urban",
    signal={"input": "telemetry", "value": "value"},
    value=1,
)


class Inbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content, policy=email_policy))
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port())
    ctl.start()
    yield ctl, inbox
    ctl.stop()


class Gate:
    """A local SMS/Zalo gateway: answers `fail_first` requests with 500, can block."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first, self.requests, self.release = fail_first, [], threading.Event()
        self.release.set()
        gate = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                gate.release.wait(20)
                gate.requests.append(body)
                code = 500 if len(gate.requests) <= gate.fail_first else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/send"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


def add_staff(db, sid, lat, lon, team="urban", on_duty=True, **contacts):
    db.execute(
        "INSERT INTO staff (id, name, role, team, org_unit_id, lat, lon, email, phone, zalo_id, "
        "username) VALUES (%s, %s, 'field', %s, 'iahdrai-iatoi', %s, %s, %s, %s, %s, %s)",
        (
            sid,
            f"Nguyễn Văn {sid}",
            team,
            lat,
            lon,
            contacts.get("email"),
            contacts.get("phone"),
            contacts.get("zalo"),
            sid,
        ),
    )
    if on_duty:
        db.execute(
            "INSERT INTO duty_shifts (staff_id, starts_at, ends_at) VALUES (%s, %s, %s)",
            (sid, T - timedelta(hours=4), T + timedelta(hours=4)),
        )
    db.commit()


def test_rank_nearest_by_hand():
    people = [
        {"id": "a", "lat": 14.0, "lon": 108.0},
        {"id": "b", "lat": 14.001, "lon": 108.0},
        {"id": "c", "lat": None, "lon": None},
    ]
    assert [p["id"] for p in rank_nearest(people, 14.0011, 108.0)] == ["b", "a", "c"]


def test_suggest_nearest_on_duty_of_the_team(kdb):
    add_staff(kdb, "u-near-off", 14.1010, 107.5458, on_duty=False)
    add_staff(kdb, "u-near", 14.1013, 107.5463)  # ~40 m from the one-stop-shop
    add_staff(kdb, "u-far", 14.0093, 107.4702)
    add_staff(kdb, "p-nearest", 14.1010, 107.5458, team="public_order")
    p = suggest(kdb, T, team="urban", lat=14.1010, lon=107.5458)
    assert p["id"] == "u-near"
    assert suggest(kdb, T + timedelta(days=1), team="urban", lat=14.1, lon=107.5) is None


def test_assignment_delivered_by_email_webhook_with_retries_and_stream(
    kdb, kdb_settings, site, smtp, rds
):
    ctl, inbox = smtp
    sms = Gate(fail_first=2)  # two HTTP 500 then OK: delivered on the third attempt
    dead_zalo = f"http://127.0.0.1:{free_port()}/zalo"  # nothing listens: connection refused
    ops = Operations(
        gateways={
            "zalo": Gateway(url=dead_zalo, timeout_s=2),
            "sms": Gateway(url=sms.url, template="IOC: {title} tại {place}"),
        },
        retries=3,
        retry_backoff_s=0,
    )
    s = site.model_copy(update={"operations": ops})
    settings = kdb_settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": ctl.port})
    add_staff(kdb, "fs-mail", 14.1, 107.54, email="fs@example.vn", phone="0912345678", zalo="zl-1")
    iid, _ = open_incident(kdb, s, R, "k1", Place("iahdrai-iatoi", None, 14.1, 107.54, "Ia Tơi"), T)
    try:
        inc, results = assign_and_notify(
            kdb, Notifier(settings, s, redis_client=rds), iid, "fs-mail", "op1", T, note="đi ngay"
        )
    finally:
        sms.close()
    assert inc["status"] == "assigned" and inc["assigned_to"] == "fs-mail"
    by = {r["channel"]: r for r in results}
    assert by["websocket"]["ok"] and by["email"]["ok"] and by["sms"]["ok"]
    assert not by["zalo"]["ok"] and "ConnectError" in by["zalo"]["error"]
    # e-mail in Vietnamese, really received by the SMTP server
    [mail] = inbox.messages
    assert mail["To"] == "fs@example.vn" and "Sự cố được giao" in mail["Subject"]
    assert "Mức độ: Cao" in mail.get_content()
    # the webhook: the template rendered, the phone number, 3 attempts recorded
    assert sms.requests[-1] == {
        "channel": "sms",
        "to": "0912345678",
        "text": "IOC: Ngập úng — Ia Tơi tại Xã Ia Tơi",
        "incident_id": iid,
    }
    rows = kdb.execute(
        "SELECT n.channel, n.status, n.attempts, n.fallback_of IS NOT NULL, "
        "array_agg(a.ok ORDER BY a.attempt) FROM notifications n JOIN notification_attempts a "
        "ON a.notification_id = n.id WHERE n.incident_id = %s GROUP BY n.id ORDER BY n.id",
        (iid,),
    ).fetchall()
    got = {r[0]: r[1:] for r in rows}
    assert got["sms"] == ("sent", 3, True, [False, False, True])  # fallback of the dead Zalo
    assert got["zalo"] == ("failed", 3, False, [False, False, False])
    assert got["email"] == ("sent", 1, False, [True])
    # the field view's stream
    entries = rds.xrange(bus.Keys(settings.redis_prefix)("stream", "assignments"))
    msg = bus.decode_entry(entries[-1][1])
    assert msg["staff_id"] == "fs-mail" and msg["incident_id"] == iid


def test_a_hanging_gateway_does_not_delay_email(kdb, kdb_settings, site, smtp, rds):
    ctl, inbox = smtp
    hang = Gate()
    hang.release.clear()  # the gateway accepts the request and does not answer
    ops = Operations(
        gateways={"sms": Gateway(url=hang.url, timeout_s=30)},
        retries=1,
        channels=[["sms"], ["email"]],
    )
    s = site.model_copy(update={"operations": ops})
    settings = kdb_settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": ctl.port})
    add_staff(kdb, "fs-hang", 14.1, 107.54, email="hang@example.vn", phone="0900000000")
    iid, _ = open_incident(kdb, s, R, "k2", Place("iahdrai-iatoi"), T)
    inc = kdb.execute("SELECT * FROM incidents WHERE id = %s", (iid,)).fetchone()
    cols = [d.name for d in kdb.execute("SELECT * FROM incidents LIMIT 0").description]
    incident = dict(zip(cols, inc, strict=True))
    person = {"id": "fs-hang", "name": "Hằng", "email": "hang@example.vn", "phone": "0900000000"}
    done = threading.Event()
    threading.Thread(
        target=lambda: (
            Notifier(settings, s, redis_client=rds).notify(incident, person),
            done.set(),
        ),
        daemon=True,
    ).start()
    try:
        # the e-mail arrives while the SMS gateway is still holding its request
        wait_until(lambda: inbox.messages, timeout=15)
        assert not done.is_set() and hang.requests == []
    finally:
        hang.release.set()
    wait_until(done.is_set, timeout=15)
    hang.close()
