"""Field-staff dispatch: who is on duty, the nearest person of the right team, and delivery of
the assignment on every channel the person has (websocket via the Redis stream, e-mail over
SMTP, SMS-brandname / Zalo-OA through an HTTP webhook adapter).

Channels are grouped in fallback chains (site `operations.channels`, default
[[websocket], [email], [zalo, sms]]): chains are delivered in parallel, each attempt with its own
timeout, so one dead endpoint never delays the others; inside a chain a channel that still fails
after its retries falls back to the next one. Every attempt is recorded.
"""

from __future__ import annotations

import os
import smtplib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import httpx
import psycopg
import redis
from psycopg.rows import dict_row

from analytics.kpi.calendar import LOCAL
from analytics.ops.incidents import distance_m, transition
from core import bus
from core.settings import Settings
from core.site import Gateway, Site

SEVERITY_VI = {
    "critical": "Khẩn cấp",
    "high": "Cao",
    "medium": "Trung bình",
    "low": "Thấp",
    "info": "Thông tin",
}


def on_duty(conn: psycopg.Connection, now: datetime) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT DISTINCT s.* FROM staff s JOIN duty_shifts d ON d.staff_id = s.id "
            "WHERE s.active AND d.starts_at <= %s AND d.ends_at > %s ORDER BY s.id",
            (now, now),
        ).fetchall()
    return rows


def rank_nearest(
    people: list[dict[str, Any]], lat: float | None, lon: float | None
) -> list[dict[str, Any]]:
    """People by distance to (lat, lon); those without a known location last (pure)."""

    def key(p: dict[str, Any]) -> tuple[int, float, str]:
        if lat is None or lon is None or p.get("lat") is None or p.get("lon") is None:
            return (1, 0.0, p["id"])
        return (0, distance_m(lat, lon, p["lat"], p["lon"]), p["id"])

    return sorted(people, key=key)


def suggest(
    conn: psycopg.Connection,
    now: datetime,
    *,
    team: str | None,
    lat: float | None,
    lon: float | None,
    exclude: list[str] | tuple[str, ...] = (),
) -> dict[str, Any] | None:
    """The nearest on-duty field person of the team (any team when the rule names none)."""
    people = [
        p
        for p in on_duty(conn, now)
        if p["role"] == "field" and (team is None or p["team"] == team) and p["id"] not in exclude
    ]
    ranked = rank_nearest(people, lat, lon)
    return ranked[0] if ranked else None


def duty_leader(
    conn: psycopg.Connection, now: datetime, unit: str, site: Site
) -> dict[str, Any] | None:
    """The on-duty leader closest up the tree from the incident's unit."""
    leaders = [p for p in on_duty(conn, now) if p["role"] == "duty_leader"]
    order = {u: i for i, u in enumerate(site.ancestors(unit))} if unit in site.units else {}
    leaders.sort(key=lambda p: (order.get(p["org_unit_id"], len(order)), p["id"]))
    return leaders[0] if leaders else None


# ---------------------------------------------------------------------------- messages


def message_text(incident: dict[str, Any], person: dict[str, Any], purpose: str) -> dict:
    due = incident.get("ack_due_at")
    due_s = due.astimezone(LOCAL).strftime("%H:%M %d/%m/%Y") if due else "—"
    head = "Sự cố được giao cho anh/chị" if purpose == "assignment" else "Sự cố chưa được tiếp nhận"
    place = incident.get("place") or incident.get("org_unit_id", "")
    return {
        "subject": f"[IOC] {head}: {incident['title']}",
        "body": (
            f"Kính gửi {person['name']},\n\n{head}.\n"
            f"Sự cố #{incident['id']}: {incident['title']}\n"
            f"Mức độ: {SEVERITY_VI.get(incident['severity'], incident['severity'])}\n"
            f"Địa điểm: {place}\n"
            f"Hạn tiếp nhận: {due_s}\n\n"
            "Vui lòng mở ứng dụng IOC để xác nhận và cập nhật tiến độ xử lý.\n"
            "Trung tâm giám sát, điều hành thông minh"
        ),
        "place": place,
    }


def render(template: str, incident: dict[str, Any], place: str) -> str:
    values = {
        "id": incident["id"],
        "title": incident["title"],
        "severity": SEVERITY_VI.get(incident["severity"], incident["severity"]),
        "place": place,
    }
    return template.format_map(values)


# ---------------------------------------------------------------------------- delivery


class Notifier:
    """Delivers a message to one person on their channels; records every attempt."""

    def __init__(
        self,
        settings: Settings,
        site: Site,
        *,
        redis_client: redis.Redis | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.site = site
        self.keys = bus.Keys(settings.redis_prefix)
        self.redis = redis_client or bus.connect(settings)
        self.sleep = sleep
        self.clock = clock

    def _now(self) -> datetime:
        from datetime import UTC

        return self.clock() if self.clock else datetime.now(UTC)

    # one function per channel: raise on failure
    def send_websocket(self, person: dict, incident: dict, msg: dict) -> None:
        bus.xadd_json(
            self.redis,
            self.keys("stream", "assignments"),
            {
                "staff_id": person["id"],
                "username": person.get("username"),
                "incident_id": incident["id"],
                "title": incident["title"],
                "severity": incident["severity"],
                "text": msg["subject"],
            },
        )

    def send_email(self, person: dict, incident: dict, msg: dict) -> None:
        s = self.settings
        if not s.smtp_host:
            raise RuntimeError("no SMTP relay configured (IOC_SMTP_HOST)")
        em = EmailMessage()
        em["From"], em["To"], em["Subject"] = s.smtp_from, person["email"], msg["subject"]
        em.set_content(msg["body"])
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s) as smtp:
            if s.smtp_starttls:
                smtp.starttls()
            if s.smtp_user and s.smtp_password:
                smtp.login(s.smtp_user, s.smtp_password.get_secret_value())
            smtp.send_message(em)

    def send_gateway(self, name: str, gw: Gateway, to: str, incident: dict, msg: dict) -> None:
        headers = {}
        if gw.token_setting and os.environ.get(gw.token_setting):
            headers["Authorization"] = f"Bearer {os.environ[gw.token_setting]}"
        r = httpx.post(
            gw.url,
            json={
                "channel": name,
                "to": to,
                "text": render(gw.template, incident, msg["place"]),
                "incident_id": incident["id"],
            },
            headers=headers,
            timeout=gw.timeout_s,
        )
        if r.status_code >= 300:
            raise RuntimeError(f"gateway {name} answered HTTP {r.status_code}")

    def _contact(self, channel: str, person: dict) -> str | None:
        if channel == "websocket":
            return person.get("username") or person["id"]
        if channel == "email":
            return person.get("email")
        if channel == "sms":
            return person.get("phone")
        if channel == "zalo":
            return person.get("zalo_id")
        return None

    def _send(self, channel: str, to: str, person: dict, incident: dict, msg: dict) -> None:
        if channel == "websocket":
            self.send_websocket(person, incident, msg)
        elif channel == "email":
            self.send_email(person, incident, msg)
        else:
            gw = self.site.operations.gateways.get(channel)
            if gw is None:
                raise RuntimeError(f"no gateway configured for {channel}")
            self.send_gateway(channel, gw, to, incident, msg)

    def _chain(self, chain: list[str], person: dict, incident: dict, msg: dict, purpose: str):
        """Deliver on the first channel of the chain that works; record everything."""
        results = []
        ops = self.site.operations
        with psycopg.connect(self.settings.database_url.get_secret_value(), autocommit=True) as c:
            prev: int | None = None
            for channel in chain:
                to = self._contact(channel, person)
                if not to:
                    continue
                nid = c.execute(
                    "INSERT INTO notifications (incident_id, staff_id, channel, purpose, status, "
                    "fallback_of, created_at) VALUES (%s, %s, %s, %s, 'pending', %s, %s) "
                    "RETURNING id",
                    (incident["id"], person["id"], channel, purpose, prev, self._now()),
                ).fetchone()[0]
                ok, error = False, None
                for attempt in range(1, ops.retries + 1):
                    try:
                        self._send(channel, to, person, incident, msg)
                        ok, error = True, None
                    except Exception as exc:  # every failure is recorded, none propagates
                        error = f"{exc.__class__.__name__}: {exc}"[:500]
                    c.execute(
                        "INSERT INTO notification_attempts (notification_id, attempt, at, ok, "
                        "error) VALUES (%s, %s, %s, %s, %s)",
                        (nid, attempt, self._now(), ok, error),
                    )
                    if ok:
                        break
                    if attempt < ops.retries:
                        self.sleep(ops.retry_backoff_s * 2 ** (attempt - 1))
                c.execute(
                    "UPDATE notifications SET status = %s, attempts = %s, last_error = %s, "
                    "sent_at = %s WHERE id = %s",
                    ("sent" if ok else "failed", attempt, error, self._now() if ok else None, nid),
                )
                results.append({"id": nid, "channel": channel, "ok": ok, "error": error})
                if ok:
                    break
                prev = nid
        return results

    def notify(self, incident: dict, person: dict, purpose: str = "assignment") -> list[dict]:
        """Deliver on every chain in parallel; return one result per channel tried."""
        unit = self.site.units.get(incident.get("org_unit_id", ""))
        msg = message_text({**incident, "place": incident.get("place") or (unit and unit.name)},
                           person, purpose)  # fmt: skip
        chains = self.site.operations.channels
        with ThreadPoolExecutor(max_workers=max(1, len(chains))) as pool:
            futures = [
                pool.submit(self._chain, ch, person, incident, msg, purpose) for ch in chains
            ]
            out: list[dict] = []
            for f in futures:
                out += f.result()
        return out


def get_staff(conn: psycopg.Connection, staff_id: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM staff WHERE id = %s", (staff_id,)).fetchone()
    conn.commit()  # never leave a transaction open: the incident's row lock must be released
    if row is None:
        from core.errors import IOCError

        raise IOCError(f"no staff member '{staff_id}'")
    return row


def assign_and_notify(
    conn: psycopg.Connection,
    notifier: Notifier,
    incident_id: int,
    staff_id: str,
    actor: str,
    now: datetime,
    *,
    note: str = "",
    reassign: bool = False,
) -> tuple[dict[str, Any], list[dict]]:
    """Assign (atomically, audited), then notify the assignee outside the transaction."""
    person = get_staff(conn, staff_id)
    inc = transition(
        conn, incident_id, "assign", actor, now, note=note, assignee=staff_id, reassign=reassign
    )
    conn.commit()  # the assignment is committed (and its lock released) before delivery
    return inc, notifier.notify(inc, person, "assignment")
