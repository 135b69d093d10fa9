"""Rules → incidents: pending period, flapping, silence, anomaly, silences, camera and KPI
rules, correlation and escalation, all on a hand-moved clock (no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analytics.kpi.engine import KpiValue
from analytics.ops import rules as eng
from analytics.ops.evaluate import eval_camera, eval_kpi_changes, eval_signal, eval_silence
from analytics.ops.incidents import add_silence, escalate_due, transition
from core.site import Rule

T0 = datetime(2025, 7, 1, 2, 0, tzinfo=UTC)


def rule(**kw) -> Rule:
    base = {
        "id": "r-water",
        "kind": "threshold",
        "name": "Mực nước cao",
        "severity": "critical",
        "signal": {"input": "telemetry", "where": {"metric": "level_m"}, "value": "value"},
        "op": ">",
        "value": 8.5,
    }
    base.update(kw)
    return Rule.model_validate(base)


def level(db, t, v, source="sensor-sesan-level", n=[0]):  # noqa: B006
    n[0] += 1
    db.execute(
        "INSERT INTO telemetry (time, source_id, org_unit_id, msg_id, metric, value) "
        "VALUES (%s, %s, 'iahdrai-iadal', %s, 'level_m', %s)",
        (t, source, f"lv{n[0]}", v),
    )
    db.commit()


def incidents(db, key_prefix):
    return db.execute(
        "SELECT id, status, occurrences FROM incidents WHERE dedup_key LIKE %s ORDER BY id",
        (key_prefix + "%",),
    ).fetchall()


def test_pending_period_fires_once_not_per_reading():
    r = rule(for_s=300)
    st, fired = eng.RuleState(), []
    for i in range(11):  # a reading a minute above the threshold for 10 minutes
        st, actions = eng.observe_value(r, st, "k", 9.0, 1000.0 + 60 * i)
        fired += [(a.kind, a.at) for a in actions if a.kind == "fire"]
    assert fired == [("fire", 1300.0)]  # once, after holding 5 minutes


def test_robust_z_by_hand():
    # history 10, 12, 11, 13, 9: median 11, |dev| 1, 1, 0, 2, 2 → MAD 1 → σ ≈ 1.4826
    assert eng.robust_z(20, [10, 12, 11, 13, 9]) == pytest.approx(9 / 1.4826)
    assert eng.robust_z(11, [11, 11, 11]) == 0
    assert eng.robust_z(12, [11, 11, 11]) == float("inf")


def test_threshold_with_pending_period_opens_one_incident_and_auto_resolves(kdb, site):
    r = rule(id="r-pend", for_s=300, clear_for_s=120)
    for i in range(10):  # 9.0 m every minute from T0
        level(kdb, T0 + timedelta(minutes=i), 9.0)
    out = eval_signal(kdb, site, r, T0 + timedelta(minutes=9, seconds=30))
    assert [o[2] for o in out] == ["opened"]
    [(iid, status, occ)] = incidents(kdb, "r-pend:")
    assert status == "open" and occ == 1
    seen = kdb.execute("SELECT last_seen_at FROM incidents WHERE id = %s", (iid,)).fetchone()[0]
    assert seen == T0 + timedelta(minutes=9)
    # back below the threshold: resolves only after 2 minutes clear
    for i in range(10, 13):
        level(kdb, T0 + timedelta(minutes=i), 7.0)
    eval_signal(kdb, site, r, T0 + timedelta(minutes=12, seconds=30))
    assert incidents(kdb, "r-pend:")[0][1] == "resolved"
    who = kdb.execute(
        "SELECT actor, action FROM incident_events WHERE incident_id = %s ORDER BY id", (iid,)
    ).fetchall()
    assert who == [("system", "open"), ("system:auto-resolve", "resolve")]


def test_flapping_signal_yields_one_incident(kdb, site):
    r = rule(id="r-flap", flap={"window_s": 600, "max_changes": 4}, sources=["flappy"])
    for i in range(10):  # above, below, above … every minute (no pending or clear period)
        level(kdb, T0 + timedelta(hours=1, minutes=i), 9.0 if i % 2 == 0 else 8.0, "flappy")
    out = eval_signal(kdb, site, r, T0 + timedelta(hours=1, minutes=9, seconds=30))
    assert [o[2] for o in out if o[0] == "fire"] == ["opened", "reopened", "reopened"]
    rows = incidents(kdb, "r-flap:")
    assert len(rows) == 1
    assert rows[0][2] > 1  # counted again on every re-fire


def test_silence_opens_and_auto_resolves(kdb, site):
    r = Rule(
        id="r-silent",
        kind="silence",
        name="Mất tín hiệu",
        silence_factor=3,
        sources=["sensor-air-tthc"],
    )
    now = T0 + timedelta(hours=3)
    eval_silence(kdb, site, r, {"sensor-air-tthc": (now - timedelta(seconds=150)).timestamp()}, now)
    assert incidents(kdb, "r-silent:") == []  # 150 s < 3 × 60 s
    later = now + timedelta(seconds=60)
    out = eval_silence(
        kdb, site, r, {"sensor-air-tthc": (now - timedelta(seconds=150)).timestamp()}, later
    )
    assert [o[2] for o in out] == ["opened"]
    back = later + timedelta(seconds=30)
    eval_silence(kdb, site, r, {"sensor-air-tthc": back.timestamp()}, back)
    assert incidents(kdb, "r-silent:")[0][1] == "resolved"


def test_silence_window_suppresses_until_it_expires(kdb, site):
    r = rule(id="r-maint")
    start = T0 + timedelta(hours=5)
    add_silence(
        kdb,
        "op1",
        start,
        start + timedelta(minutes=30),
        "bảo trì cảm biến",
        source_id="sensor-sesan-level",
    )
    level(kdb, start + timedelta(minutes=1), 9.5)
    assert [o[2] for o in eval_signal(kdb, site, r, start + timedelta(minutes=2))] == ["silenced"]
    assert incidents(kdb, "r-maint:") == []
    # still high after the window expired: the incident opens now
    level(kdb, start + timedelta(minutes=31), 9.6)
    out = eval_signal(kdb, site, r, start + timedelta(minutes=32))
    assert [o[2] for o in out if o[0] == "fire"] == ["opened"]


def test_camera_events_and_correlation_with_a_kpi_incident(kdb, site):
    t = T0 + timedelta(hours=8)
    kdb.execute(
        "INSERT INTO camera_events (start_at, id, camera_id, org_unit_id, rule, zone, "
        "peak_count, snapshot) VALUES (%s, 'ev1', 'cam-motcua-sanh', 'iahdrai-motcua', "
        "'crowding', 'hall', 37, 'media/cam-motcua-sanh/ev1.jpg')",
        (t,),
    )
    kdb.commit()
    cam = Rule(
        id="r-cam", kind="camera", name="Đông người", severity="high", camera_rules=["crowding"]
    )
    out = eval_camera(kdb, site, cam, t + timedelta(seconds=5))
    [(_, cam_iid, what)] = out
    assert what == "opened"
    ev = kdb.execute("SELECT evidence FROM incidents WHERE id = %s", (cam_iid,)).fetchone()[0]
    assert ev[0]["snapshot"] == "media/cam-motcua-sanh/ev1.jpg" and ev[0]["peak_count"] == 37
    # a KPI incident for the one-stop-shop five minutes later joins it under one parent
    kr = Rule(id="r-kpi", kind="kpi_status", name="Chỉ tiêu", kpi="ontime_rate")
    v = KpiValue("ontime_rate", "iahdrai-motcua", "today", 60.0, 95.0, "missed")
    [(_, kpi_iid, _)] = eval_kpi_changes(kdb, site, kr, [(v, "on_track")], t + timedelta(minutes=5))
    parent = kdb.execute("SELECT parent_id FROM incidents WHERE id = %s", (kpi_iid,)).fetchone()
    assert parent[0] == cam_iid
    # the camera event ends: auto-resolved
    kdb.execute(
        "UPDATE camera_events SET end_at = %s WHERE id = 'ev1'", (t + timedelta(minutes=6),)
    )
    kdb.commit()
    eval_camera(kdb, site, cam, t + timedelta(minutes=7))
    assert incidents(kdb, "r-cam:")[0][1] == "resolved"
    # back on track: the KPI incident resolves
    ok = KpiValue("ontime_rate", "iahdrai-motcua", "today", 96.0, 95.0, "on_track")
    eval_kpi_changes(kdb, site, kr, [(ok, "missed")], t + timedelta(minutes=8))
    assert incidents(kdb, "r-kpi:")[0][1] == "resolved"


def staff(db, sid, role, team, unit, lat=None, lon=None, email=None):
    db.execute(
        "INSERT INTO staff (id, name, role, team, org_unit_id, lat, lon, email, username) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        (sid, f"Cán bộ {sid}", role, team, unit, lat, lon, email, sid),
    )
    db.execute(
        "INSERT INTO duty_shifts (staff_id, starts_at, ends_at) VALUES (%s, %s, %s)",
        (sid, T0 - timedelta(days=1), T0 + timedelta(days=2)),
    )
    db.commit()


def test_escalation_fires_at_the_deadline_and_repeats_until_ack(kdb, site):
    # critical: ack within 300 s; steps: next on duty at +0 s, duty leader at +600 s past the
    # ack deadline, then the leader again every 900 s.
    staff(kdb, "near", "field", "rescue", "iahdrai-iadal", 14.0155, 107.4525)
    staff(kdb, "far", "field", "rescue", "iahdrai-iadal", 14.10, 107.55)
    staff(kdb, "leader", "duty_leader", "command", "iahdrai")
    t = T0 + timedelta(hours=12)
    level(kdb, t, 9.9, "sensor-sesan-level")
    r = rule(id="r-esc")
    [(_, iid, _)] = eval_signal(kdb, site, r, t + timedelta(seconds=1))
    opened = kdb.execute("SELECT opened_at FROM incidents WHERE id = %s", (iid,)).fetchone()[0]

    def esc(sec):
        return [
            (e.level, e.notify, e.staff_id)
            for e in escalate_due(kdb, site, opened + timedelta(seconds=sec))
            if e.incident_id == iid
        ]

    assert esc(299) == []
    assert esc(300) == [(1, "next_on_duty", "near")]  # the nearest rescue person on duty
    assert esc(899) == []
    assert esc(900) == [(2, "duty_leader", "leader")]
    assert esc(1799) == []
    assert esc(1800) == [(3, "duty_leader", "leader")]  # repeats
    transition(kdb, iid, "acknowledge", "leader", opened + timedelta(seconds=1850))
    assert esc(5000) == []


def test_anomaly_against_the_same_hour_of_previous_weeks(kdb, site):
    r = rule(
        id="r-anom",
        kind="anomaly",
        op=">",
        value=3.5,
        weeks=4,
        signal={"input": "telemetry", "where": {"metric": "level_m"}, "value": "value"},
        sources=["anom-src"],
    )
    now = T0 + timedelta(days=40)
    for k, v in enumerate((10.0, 12.0, 11.0, 13.0), start=1):  # same hour, 1–4 weeks ago
        level(kdb, now - timedelta(days=7 * k, minutes=30), v, "anom-src")
    level(kdb, now - timedelta(minutes=30), 12.5, "anom-src")  # z = (12.5 − 11.5) / 1.4826
    from analytics.ops.evaluate import eval_anomaly

    assert eval_anomaly(kdb, site, r, now) == []
    level(kdb, now + timedelta(seconds=30), 40.0, "anom-src")  # the hour's mean (12.5+40)/2
    assert eval_anomaly(kdb, site, r, now + timedelta(minutes=1)) == []  # at most every 5 min
    out = eval_anomaly(kdb, site, r, now + timedelta(minutes=5))
    assert [o[2] for o in out] == ["opened"]
    ev = kdb.execute(
        "SELECT evidence FROM incidents WHERE dedup_key = 'r-anom:anom-src'"
    ).fetchone()[0]
    assert ev[0]["history"] == [10.0, 12.0, 11.0, 13.0]  # 1, 2, 3, 4 weeks ago
    assert ev[0]["z"] == pytest.approx((26.25 - 11.5) / 1.4826)


def test_rate_of_change(kdb, site):
    r = rule(id="r-roc", kind="rate_of_change", op=">", value=0.05, sources=["roc-src"])
    t = T0 + timedelta(days=50)
    for i, v in enumerate((5.0, 5.02, 5.04, 5.20)):  # +0.02, +0.02, then +0.16 m per minute
        level(kdb, t + timedelta(minutes=i), v, "roc-src")
    out = eval_signal(kdb, site, r, t + timedelta(minutes=4))
    assert [o[2] for o in out] == ["opened"]
    ev = kdb.execute("SELECT evidence FROM incidents WHERE dedup_key = 'r-roc:roc-src'")
    assert ev.fetchone()[0][0]["rate_per_min"] == pytest.approx(0.16)
