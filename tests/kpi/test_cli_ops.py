"""The CLI (`ioc kpi`, `ioc incidents`, `ioc incident`, `ioc bench kpi`) as child processes, and
one operations cycle end to end on a hand-set clock."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import orjson

from analytics.ops.service import OpsService
from core import bus

IOC = [sys.executable, "-m", "core.cli"]


def run(env, *args, check=True):
    p = subprocess.run([*IOC, *args], env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_kpi_and_incidents_commands(kdb, kdb_settings, env_for):
    env = env_for(IOC_DATABASE_URL=kdb_settings.database_url.get_secret_value())
    kdb.execute(
        "INSERT INTO wifi_ap_1m (bucket, source_id, org_unit_id, clients_avg, clients_max, "
        "up_ratio, logins_max, samples) VALUES (now() - INTERVAL '1 minute', 'wifi-ap-motcua', "
        "'iahdrai-motcua', 12, 12, 1, 0, 6)"
    )
    kdb.commit()
    out = orjson.loads(run(env, "kpi", "--unit", "iahdrai", "--json", "--refresh").stdout)
    wifi = [r for r in out if r["kpi"] == "wifi_clients"]
    assert wifi == [{**wifi[0], "value": 12.0, "window": "now"}]
    assert {r["kpi"] for r in out} >= {"online_rate", "overdue_dossiers", "budget_submitted"}
    text = run(env, "kpi", "--unit", "iahdrai", "--window", "now").stdout
    assert "Số người dùng WiFi công cộng đang kết nối" in text and "12 người" in text
    bad = run(env, "kpi", "--unit", "nowhere", check=False)
    assert bad.returncode == 1 and bad.stderr.strip() == (
        "error: unknown org unit 'nowhere': see the site file"
    )
    assert orjson.loads(run(env, "incidents", "--json").stdout) == []
    assert "Không có sự cố đang mở." in run(env, "incidents").stdout
    wrong = run(env, "incident", "close", "999999", "--actor", "op1", check=False)
    assert wrong.returncode == 1 and wrong.stderr.strip() == "error: no incident 999999"


def test_bench_kpi_small(env_for, kdb_settings):
    env = env_for(IOC_DATABASE_URL=kdb_settings.database_url.get_secret_value())
    p = run(env, "bench", "kpi", "--json", "--sources", "20", "--days", "2", "--cycles", "2")
    res = orjson.loads(p.stdout)
    assert res["rows"] == 20 * 2 * 1440
    assert res["initial_hours"] >= 48 and len(res["refresh_ms_all"]) == 2
    assert res["refresh_ms"] > 0 and res["query_p95_ms"] > 0 and res["queries"] == 200


def test_ops_cycle_silence_then_escalation_notifies_on_the_stream(kdb, kdb_settings, site, rds):
    now = datetime(2025, 10, 6, 2, 0, tzinfo=UTC)
    clock = [now]
    svc = OpsService(kdb_settings, site, clock=lambda: clock[0])
    keys = bus.Keys(kdb_settings.redis_prefix)
    rds.hset(keys.latest_ts("telemetry"), "sensor-air-tthc", (now - timedelta(hours=1)).timestamp())
    kdb.execute(
        "INSERT INTO staff (id, name, role, team, org_unit_id, username) VALUES "
        "('it1', 'Trần Thị Hoa', 'field', 'it', 'iahdrai-iatoi', 'it1')"
    )
    kdb.execute(
        "INSERT INTO duty_shifts (staff_id, starts_at, ends_at) VALUES ('it1', %s, %s)",
        (now - timedelta(hours=1), now + timedelta(hours=8)),
    )
    kdb.commit()
    out = svc.cycle(kdb, now)
    assert out["incidents"] == 1 and out["escalations"] == 0
    (iid, status, sev) = kdb.execute(
        "SELECT id, status, severity FROM incidents WHERE dedup_key = "
        "'source-silent:sensor-air-tthc'"
    ).fetchone()
    assert status == "open" and sev == "medium"
    # medium: acknowledge within 3600 s; then the next on-duty person of the team is told
    out = svc.cycle(kdb, now + timedelta(seconds=3599))
    assert out["escalations"] == 0
    out = svc.cycle(kdb, now + timedelta(seconds=3600))
    assert out["escalations"] == 1
    entries = rds.xrange(keys("stream", "assignments"))
    msg = bus.decode_entry(entries[-1][1])
    assert msg["staff_id"] == "it1" and msg["incident_id"] == iid
    assert "chưa được tiếp nhận" in msg["text"]
    # the sensor reports again: auto-resolved
    back = now + timedelta(seconds=3700)
    rds.hset(keys.latest_ts("telemetry"), "sensor-air-tthc", back.timestamp())
    svc.cycle(kdb, back)
    st = kdb.execute("SELECT status FROM incidents WHERE id = %s", (iid,)).fetchone()[0]
    assert st == "resolved"
