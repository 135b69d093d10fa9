"""Incidents: open with deduplication, count, correlate; an atomic lifecycle with its timeline
and an append-only audit trail; SLA timers and escalation until someone acknowledges.

Every change runs in one transaction that first locks the incident row (SELECT … FOR UPDATE), so
an acknowledgement racing an auto-resolve, or two operators assigning at once, are serialised:
the second sees the first's result and either applies on top of it or is refused with a
one-line IncidentConflict. The timeline and the audit rows are written in the same transaction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core.errors import IOCError
from core.site import Rule, Site

OPEN_STATES = ("open", "acknowledged", "assigned", "in_progress")
# action: (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "acknowledge": (("open",), "acknowledged"),
    "assign": (("open", "acknowledged", "assigned", "in_progress"), "assigned"),
    "start": (("acknowledged", "assigned"), "in_progress"),
    "resolve": (OPEN_STATES, "resolved"),
    "close": (("resolved",), "closed"),
    "reopen": (("resolved", "closed"), "open"),
}
STATUS_VI = {
    "open": "Mới",
    "acknowledged": "Đã tiếp nhận",
    "assigned": "Đã phân công",
    "in_progress": "Đang xử lý",
    "resolved": "Đã xử lý",
    "closed": "Đã đóng",
}
AUDITED = ("status", "assigned_to", "acknowledged_by", "parent_id", "escalation_level")


class IncidentConflict(IOCError):
    """The incident is not in a state that allows the action (someone else got there first)."""


def next_status(action: str, current: str) -> str:
    """The status an action leads to from `current`, or IncidentConflict (pure)."""
    if action not in TRANSITIONS:
        raise IOCError(f"unknown incident action '{action}'")
    allowed, to = TRANSITIONS[action]
    if current not in allowed:
        raise IncidentConflict(
            f"cannot {action} an incident that is {current} ({STATUS_VI[current]})"
        )
    return to


def audit(
    conn: psycopg.Connection,
    actor: str,
    entity: str,
    entity_id: object,
    action: str,
    before: dict | None,
    after: dict | None,
    at: datetime | None = None,
) -> None:
    conn.execute(
        "INSERT INTO audit_log (at, actor, entity, entity_id, action, before, after) "
        "VALUES (coalesce(%s, now()), %s, %s, %s, %s, %s, %s)",
        (at, actor, entity, str(entity_id), action, _j(before), _j(after)),
    )


def _j(d: dict | None) -> Jsonb | None:
    if d is None:
        return None
    return Jsonb({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in d.items()})


def _event(conn, incident_id, at, actor, action, frm, to, note="", data=None) -> None:
    conn.execute(
        "INSERT INTO incident_events (incident_id, at, actor, action, from_status, to_status, "
        "note, data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (incident_id, at, actor, action, frm, to, note, Jsonb(data or {})),
    )


def transition(
    conn: psycopg.Connection,
    incident_id: int,
    action: str,
    actor: str,
    now: datetime,
    *,
    note: str = "",
    assignee: str | None = None,
    reassign: bool = False,
    evidence: dict | None = None,
) -> dict[str, Any]:
    """Apply one lifecycle action atomically; return the incident after it."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM incidents WHERE id = %s FOR UPDATE", (incident_id,))
        inc = row.fetchone()
        if inc is None:
            raise IOCError(f"no incident {incident_id}")
        to = next_status(action, inc["status"])
        sets: dict[str, Any] = {"status": to}
        if action == "acknowledge":
            sets.update(acknowledged_at=now, acknowledged_by=actor, next_escalation_at=None)
        elif action == "assign":
            if not assignee:
                raise IOCError("assign needs an assignee")
            if inc["assigned_to"] and not reassign:
                raise IncidentConflict(
                    f"incident {incident_id} is already assigned to {inc['assigned_to']}"
                )
            sets.update(assigned_to=assignee, next_escalation_at=None)
            if inc["acknowledged_at"] is None:
                sets.update(acknowledged_at=now, acknowledged_by=actor)
        elif action == "resolve":
            sets.update(resolved_at=now, next_escalation_at=None)
        elif action == "close":
            sets.update(closed_at=now)
        elif action == "reopen":
            other = cur.execute(
                "SELECT id FROM incidents WHERE dedup_key = %s AND id <> %s "
                "AND status NOT IN ('resolved', 'closed')",
                (inc["dedup_key"], incident_id),
            ).fetchone()
            if other:
                raise IncidentConflict(
                    f"incident {other['id']} is already open for the same cause; "
                    f"it is the one to work on"
                )
            sets.update(resolved_at=None, closed_at=None)
        assigns = ", ".join(f"{k} = %({k})s" for k in sets)
        after = cur.execute(
            f"UPDATE incidents SET {assigns}, version = version + 1 "  # type: ignore[arg-type]
            "WHERE id = %(id)s RETURNING *",
            {**sets, "id": incident_id},
        ).fetchone()
        if evidence:
            cur.execute(
                "UPDATE incidents SET evidence = evidence || %s WHERE id = %s",
                (Jsonb([{**evidence, "at": now.isoformat(), "by": actor}]), incident_id),
            )
        data = {"assignee": assignee} if assignee else {}
        _event(conn, incident_id, now, actor, action, inc["status"], to, note, data)
        audit(
            conn,
            actor,
            "incident",
            incident_id,
            action,
            {k: inc[k] for k in AUDITED},
            {k: after[k] for k in AUDITED},
            now,
        )
    return after


# ---------------------------------------------------------------------------- opening


@dataclass(frozen=True)
class Place:
    org_unit_id: str
    source_id: str | None = None
    lat: float | None = None
    lon: float | None = None
    name: str = ""


def place_of(site: Site, source_or_unit: str | None, default_unit: str) -> Place:
    """Where a key happens: a source or camera's unit and position, or an org unit."""
    if source_or_unit in site.source_by_id:
        s = site.source_by_id[source_or_unit]
        return Place(s.org_unit, s.id, s.lat, s.lon, s.name)
    for c in site.cameras:
        if c.id == source_or_unit:
            return Place(c.org_unit, c.id, c.lat, c.lon, c.name)
    if source_or_unit in site.units:
        u = site.units[source_or_unit]
        return Place(u.id, None, u.lat, u.lon, u.name)
    u = site.units[default_unit]
    return Place(u.id, None, u.lat, u.lon, u.name)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    r = 6_371_000.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


def silenced(
    conn: psycopg.Connection, site: Site, rule_id: str, place: Place, now: datetime
) -> int | None:
    """The id of an active silence or maintenance window matching, if any."""
    row = conn.execute(
        "SELECT id FROM silences WHERE starts_at <= %s AND ends_at > %s "
        "AND (rule_id IS NULL OR rule_id = %s) "
        "AND (org_unit_id IS NULL OR org_unit_id = ANY(%s)) "
        "AND (source_id IS NULL OR source_id = %s) ORDER BY id LIMIT 1",
        (now, now, rule_id, site.ancestors(place.org_unit_id), place.source_id),
    ).fetchone()
    return row[0] if row else None


def add_silence(
    conn: psycopg.Connection,
    actor: str,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
    *,
    rule_id: str | None = None,
    org_unit_id: str | None = None,
    source_id: str | None = None,
) -> int:
    """A silence now, or a maintenance window later; it expires by itself at `ends_at`."""
    if ends_at <= starts_at:
        raise IOCError("a silence must end after it starts")
    with conn.transaction():
        sid = conn.execute(
            "INSERT INTO silences (rule_id, org_unit_id, source_id, starts_at, ends_at, reason, "
            "created_by) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (rule_id, org_unit_id, source_id, starts_at, ends_at, reason, actor),
        ).fetchone()[0]
        audit(conn, actor, "silence", sid, "create", None,
              {"rule_id": rule_id, "org_unit_id": org_unit_id, "source_id": source_id,
               "starts_at": starts_at, "ends_at": ends_at, "reason": reason})  # fmt: skip
    return sid


def _correlate(
    conn: psycopg.Connection, site: Site, key: str, place: Place, now: datetime
) -> int | None:
    """The parent for a new incident: an open one of another key at the same place (same org
    unit, or within the radius) opened within the correlation window."""
    ops = site.operations
    rows = conn.execute(
        "SELECT id, parent_id, org_unit_id, lat, lon FROM incidents "
        "WHERE status NOT IN ('resolved', 'closed') AND dedup_key <> %s AND opened_at >= %s "
        "ORDER BY opened_at, id",
        (key, now - timedelta(seconds=ops.correlation_window_s)),
    ).fetchall()
    for iid, parent, unit, lat, lon in rows:
        near = (
            place.lat is not None
            and lat is not None
            and distance_m(place.lat, place.lon, lat, lon) <= ops.correlation_radius_m  # type: ignore[arg-type]
        )
        if near or (place.lat is None and unit == place.org_unit_id):
            return parent or iid
    return None


def open_incident(
    conn: psycopg.Connection,
    site: Site,
    rule: Rule,
    key: str,
    place: Place,
    now: datetime,
    *,
    title: str | None = None,
    evidence: dict | None = None,
) -> tuple[int | None, str]:
    """Open an incident for `key`, or count another occurrence on the open one.

    Returns (incident id, what happened): 'opened', 'counted', 'reopened' (the same key resolved
    within the flap window: one incident for a flapping signal) or 'silenced' (id None)."""
    dedup = f"{rule.id}:{key}"
    ev = [{**(evidence or {}), "at": now.isoformat()}]
    with conn.transaction():
        if silenced(conn, site, rule.id, place, now) is not None:
            return None, "silenced"
        recent = conn.execute(
            "SELECT id FROM incidents WHERE dedup_key = %s AND status = 'resolved' "
            "AND resolved_at >= %s AND NOT EXISTS (SELECT 1 FROM incidents o WHERE "
            "o.dedup_key = %s AND o.status NOT IN ('resolved', 'closed')) "
            "ORDER BY id DESC LIMIT 1 FOR UPDATE",
            (dedup, now - timedelta(seconds=rule.flap.window_s), dedup),
        ).fetchone()
        if recent:
            iid = recent[0]
            conn.execute(
                "UPDATE incidents SET status = 'open', resolved_at = NULL, last_seen_at = %s, "
                "occurrences = occurrences + 1, evidence = evidence || %s, "
                "version = version + 1 WHERE id = %s",
                (now, Jsonb(ev), iid),
            )
            _event(conn, iid, now, "system", "reopen", "resolved", "open", "tín hiệu dao động")
            audit(conn, "system", "incident", iid, "reopen", {"status": "resolved"},
                  {"status": "open"}, now)  # fmt: skip
            return iid, "reopened"
        sla = site.operations.sla.get(rule.severity)
        ack_due = now + timedelta(seconds=sla.ack_s) if sla else None
        steps = site.operations.escalation
        next_esc = ack_due + timedelta(seconds=steps[0].after_s) if ack_due and steps else None
        parent = _correlate(conn, site, dedup, place, now)
        iid, inserted = conn.execute(
            """INSERT INTO incidents (dedup_key, rule_id, kind, domain, severity, title,
                   org_unit_id, source_id, lat, lon, team, opened_at, last_seen_at,
                   auto_resolve, ack_due_at, resolve_due_at, next_escalation_at, parent_id,
                   evidence)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                       %s)
               ON CONFLICT (dedup_key) WHERE status NOT IN ('resolved', 'closed')
               DO UPDATE SET occurrences = incidents.occurrences + 1,
                   last_seen_at = EXCLUDED.last_seen_at,
                   evidence = (incidents.evidence || EXCLUDED.evidence)
               RETURNING id, (xmax = 0)""",
            (
                dedup, rule.id, rule.kind, rule.domain, rule.severity,
                title or f"{rule.name} — {place.name or place.org_unit_id}",
                place.org_unit_id, place.source_id, place.lat, place.lon, rule.team, now, now,
                rule.auto_resolve, ack_due,
                now + timedelta(seconds=sla.resolve_s) if sla else None, next_esc, parent,
                Jsonb(ev),
            ),
        ).fetchone()  # fmt: skip
        if inserted:
            _event(conn, iid, now, "system", "open", None, "open", "", {"parent_id": parent})
            audit(conn, "system", "incident", iid, "open", None,
                  {"status": "open", "dedup_key": dedup, "parent_id": parent}, now)  # fmt: skip
            return iid, "opened"
        return iid, "counted"


def touch(conn: psycopg.Connection, rule: Rule, key: str, now: datetime) -> None:
    conn.execute(
        "UPDATE incidents SET last_seen_at = greatest(last_seen_at, %s) "
        "WHERE dedup_key = %s AND status NOT IN ('resolved', 'closed')",
        (now, f"{rule.id}:{key}"),
    )
    conn.commit()


def auto_resolve(conn: psycopg.Connection, rule: Rule, key: str, now: datetime) -> int | None:
    """Resolve the open incident of `key` (condition cleared). Racing a person's action is safe:
    the transition locks the row, and an incident someone already resolved is left alone."""
    row = conn.execute(
        "SELECT id FROM incidents WHERE dedup_key = %s AND status NOT IN ('resolved', 'closed') "
        "AND auto_resolve",
        (f"{rule.id}:{key}",),
    ).fetchone()
    conn.commit()
    if row is None:
        return None
    try:
        transition(conn, row[0], "resolve", "system:auto-resolve", now, note="điều kiện đã hết")
    except IncidentConflict:
        return None
    return row[0]


# ---------------------------------------------------------------------------- escalation


@dataclass(frozen=True)
class Escalation:
    incident_id: int
    level: int
    notify: str
    staff_id: str | None


def escalate_due(conn: psycopg.Connection, site: Site, now: datetime) -> list[Escalation]:
    """Escalate every unacknowledged incident whose escalation time has come.

    Step i goes out at ack_due + steps[i].after_s; after the last step the duty leader is told
    again every `escalation_repeat_s` until someone acknowledges."""
    from analytics.ops.dispatch import duty_leader, suggest

    steps = site.operations.escalation
    out: list[Escalation] = []
    if not steps:
        return out
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT * FROM incidents WHERE status = 'open' AND next_escalation_at <= %s "
            "ORDER BY next_escalation_at FOR UPDATE SKIP LOCKED",
            (now,),
        ).fetchall()
        for inc in rows:
            level = inc["escalation_level"]
            step = steps[min(level, len(steps) - 1)]
            notified = [
                r[0]
                for r in conn.execute(
                    "SELECT data->>'staff_id' FROM incident_events WHERE incident_id = %s "
                    "AND action = 'escalate'",
                    (inc["id"],),
                )
            ]
            if step.notify == "next_on_duty":
                person = suggest(
                    conn, now, team=inc["team"], lat=inc["lat"], lon=inc["lon"],
                    exclude=[n for n in notified if n],
                )  # fmt: skip
                staff_id = person["id"] if person else None
            else:
                leader = duty_leader(conn, now, inc["org_unit_id"], site)
                staff_id = leader["id"] if leader else None
            nxt_level = level + 1
            if nxt_level < len(steps):
                nxt = inc["ack_due_at"] + timedelta(seconds=steps[nxt_level].after_s)
                nxt = max(nxt, now + timedelta(seconds=1))
            else:
                nxt = now + timedelta(seconds=site.operations.escalation_repeat_s)
            cur.execute(
                "UPDATE incidents SET escalation_level = %s, next_escalation_at = %s, "
                "version = version + 1 WHERE id = %s",
                (nxt_level, nxt, inc["id"]),
            )
            _event(conn, inc["id"], now, "system", "escalate", "open", "open",
                   f"chưa được tiếp nhận, báo {step.notify}",
                   {"level": nxt_level, "notify": step.notify, "staff_id": staff_id})  # fmt: skip
            audit(conn, "system", "incident", inc["id"], "escalate",
                  {"escalation_level": level}, {"escalation_level": nxt_level}, now)  # fmt: skip
            out.append(Escalation(inc["id"], nxt_level, step.notify, staff_id))
    return out


def list_open(conn: psycopg.Connection, units: set[str] | None = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT id, severity, status, title, org_unit_id, rule_id, opened_at, last_seen_at, "
            "occurrences, assigned_to, parent_id, ack_due_at, escalation_level FROM incidents "
            "WHERE status NOT IN ('resolved', 'closed') ORDER BY "
            "array_position(ARRAY['critical','high','medium','low','info'], severity), "
            "opened_at"
        ).fetchall()
    conn.commit()
    return [r for r in rows if units is None or r["org_unit_id"] in units]
