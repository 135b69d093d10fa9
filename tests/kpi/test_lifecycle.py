"""Incident lifecycle: transitions with who/when/note, races on real concurrent connections,
and the audit table the application role cannot change."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest

from analytics.ops.incidents import IncidentConflict, Place, open_incident, transition
from core.site import Rule

T = datetime(2025, 8, 1, 2, 0, tzinfo=UTC)
R = Rule(
    id="r-life",
    kind="threshold",
    name="Thử",
    severity="high",
    signal={"input": "telemetry", "value": "value"},
    value=1,
)


def new_incident(db, site, key):
    iid, what = open_incident(db, site, R, key, Place("iahdrai-iatoi", None, 14.1, 107.5), T)
    assert what == "opened"
    return iid


def test_full_lifecycle_with_timeline_and_audit(kdb, site):
    iid = new_incident(kdb, site, "full")
    steps = [
        ("acknowledge", "op1", {}, "acknowledged"),
        ("assign", "op1", {"assignee": "fs1"}, "assigned"),
        ("start", "fs1", {}, "in_progress"),
        ("resolve", "fs1", {"evidence": {"photo": "media/fix.jpg"}}, "resolved"),
        ("close", "op1", {}, "closed"),
        ("reopen", "op2", {}, "open"),
    ]
    for i, (action, actor, kw, status) in enumerate(steps):
        inc = transition(kdb, iid, action, actor, T + timedelta(minutes=i + 1), note=action, **kw)
        assert inc["status"] == status
    rows = kdb.execute(
        "SELECT actor, action, from_status, to_status, note, at FROM incident_events "
        "WHERE incident_id = %s ORDER BY id",
        (iid,),
    ).fetchall()
    assert [r[1] for r in rows] == ["open", *[s[0] for s in steps]]
    assert rows[2][:4] == ("op1", "assign", "acknowledged", "assigned")
    assert rows[3][5] == T + timedelta(minutes=3)
    audit = kdb.execute(
        "SELECT actor, action, before->>'status', after->>'status', after->>'assigned_to' "
        "FROM audit_log WHERE entity = 'incident' AND entity_id = %s ORDER BY id",
        (str(iid),),
    ).fetchall()
    assert len(audit) == 7
    assert audit[2] == ("op1", "assign", "acknowledged", "assigned", "fs1")
    ev = kdb.execute("SELECT evidence FROM incidents WHERE id = %s", (iid,)).fetchone()[0]
    assert ev[-1]["photo"] == "media/fix.jpg" and ev[-1]["by"] == "fs1"


def test_invalid_transitions_are_refused(kdb, site):
    iid = new_incident(kdb, site, "invalid")
    with pytest.raises(IncidentConflict, match="cannot close an incident that is open"):
        transition(kdb, iid, "close", "op1", T)
    transition(kdb, iid, "resolve", "op1", T)
    with pytest.raises(IncidentConflict):
        transition(kdb, iid, "acknowledge", "op1", T)


def _race(url: str, iid: int, calls: list[tuple[str, str, dict]]) -> list[object]:
    """Run the calls at the same moment on their own connections while a third connection
    holds the row lock, then release it: both really wait on the lock, then race."""
    results: list[object] = [None] * len(calls)
    holder = psycopg.connect(url)
    holder.execute("SELECT 1 FROM incidents WHERE id = %s FOR UPDATE", (iid,))
    started = threading.Barrier(len(calls) + 1)

    def run(i: int, action: str, actor: str, kw: dict) -> None:
        with psycopg.connect(url) as c:
            started.wait()
            try:
                results[i] = transition(c, iid, action, actor, T + timedelta(minutes=5), **kw)
            except IncidentConflict as exc:
                results[i] = exc

    threads = [threading.Thread(target=run, args=(i, *c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    started.wait()
    # both are now blocked on the lock (they can only pass once the holder commits)
    with psycopg.connect(url) as watch:
        for _ in range(200):
            waiting = watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            ).fetchone()[0]
            if waiting >= len(calls):
                break
            threading.Event().wait(0.02)
    holder.commit()
    holder.close()
    for t in threads:
        t.join(10)
    return results


def test_two_operators_assigning_at_once(kdb, kdb_settings, site):
    iid = new_incident(kdb, site, "assign-race")
    url = kdb_settings.database_url.get_secret_value()
    res = _race(
        url, iid, [("assign", "op1", {"assignee": "fs1"}), ("assign", "op2", {"assignee": "fs2"})]
    )
    wins = [r for r in res if isinstance(r, dict)]
    losses = [r for r in res if isinstance(r, IncidentConflict)]
    assert len(wins) == 1 and len(losses) == 1
    assert "already assigned to" in str(losses[0])
    final = kdb.execute("SELECT assigned_to, version FROM incidents WHERE id = %s", (iid,))
    assigned, version = final.fetchone()
    assert assigned == wins[0]["assigned_to"] and version == 2
    n = kdb.execute(
        "SELECT count(*) FROM audit_log WHERE entity_id = %s AND action = 'assign'", (str(iid),)
    ).fetchone()[0]
    assert n == 1


def test_ack_racing_auto_resolve_leaves_one_consistent_state(kdb, kdb_settings, site):
    iid = new_incident(kdb, site, "ack-race")
    url = kdb_settings.database_url.get_secret_value()
    res = _race(url, iid, [("acknowledge", "op1", {}), ("resolve", "system:auto-resolve", {})])
    status = kdb.execute("SELECT status FROM incidents WHERE id = %s", (iid,)).fetchone()[0]
    assert status == "resolved"  # resolve is allowed after an ack; an ack after resolve is not
    timeline = kdb.execute(
        "SELECT action, from_status, to_status FROM incident_events WHERE incident_id = %s "
        "AND action <> 'open' ORDER BY id",
        (iid,),
    ).fetchall()
    # whatever the order, the timeline chains: each step starts where the previous ended
    prev = "open"
    for _action, frm, to in timeline:
        assert frm == prev
        prev = to
    assert prev == "resolved"
    applied = sum(isinstance(r, dict) for r in res)
    assert applied == len(timeline)
    audits = kdb.execute(
        "SELECT count(*) FROM audit_log WHERE entity_id = %s AND action <> 'open'", (str(iid),)
    ).fetchone()[0]
    assert audits == len(timeline)


def app_url(settings) -> str:
    parts = urlsplit(settings.database_url.get_secret_value())
    pw = quote(settings.database_app_password.get_secret_value(), safe="")
    return urlunsplit(parts._replace(netloc=f"ioc_app:{pw}@{parts.hostname}:{parts.port or 5432}"))


def test_audit_is_append_only_for_the_app_role(kdb, kdb_settings):
    with psycopg.connect(app_url(kdb_settings), autocommit=True) as app:
        assert app.execute("SELECT current_user").fetchone()[0] == "ioc_app"
        app.execute(
            "INSERT INTO audit_log (actor, entity, entity_id, action) "
            "VALUES ('op1', 'rule', 'r1', 'update')"
        )
        for stmt in (
            "UPDATE audit_log SET actor = 'x'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(stmt)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT audit_purge(now() - INTERVAL '1 year')")
    # the owner is refused too: only the maintenance path deletes, and only old rows
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        kdb.execute("UPDATE audit_log SET actor = 'x'")
    kdb.rollback()
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        kdb.execute("DELETE FROM audit_log")
    kdb.rollback()
    with pytest.raises(psycopg.errors.RaiseException, match="at least 3 months"):
        kdb.execute("SELECT audit_purge(now() - INTERVAL '10 days')")
    kdb.rollback()
    kdb.execute(
        "INSERT INTO audit_log (at, actor, entity, entity_id, action) VALUES "
        "(now() - INTERVAL '400 days', 'old', 'rule', 'r0', 'create')"
    )
    old = "SELECT count(*) FROM audit_log WHERE at < now() - INTERVAL '365 days'"
    n_old = kdb.execute(old).fetchone()[0]
    total = kdb.execute("SELECT count(*) FROM audit_log").fetchone()[0]
    assert n_old >= 1
    assert kdb.execute("SELECT audit_purge(now() - INTERVAL '365 days')").fetchone()[0] == n_old
    kdb.commit()
    assert kdb.execute(old).fetchone()[0] == 0
    assert kdb.execute("SELECT count(*) FROM audit_log").fetchone()[0] == total - n_old
