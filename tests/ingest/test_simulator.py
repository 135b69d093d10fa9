"""The simulator: seeded and reproducible, a district's rhythms (weekday dossiers, online share,
office-hours WiFi), and a backfill that writes history through the real writer."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import datetime

from ingest.simulator import LOCAL, District, Simulator, dossier_rate_per_hour, office_load


def _week(site, seed: int) -> list[tuple[str, str, dict]]:
    d = District(site, random.Random(seed))
    start = datetime(2026, 3, 2, 0, 0, tzinfo=LOCAL).timestamp()  # a Monday
    out = []
    for step in range(7 * 24 * 12):  # 5-minute steps
        for src, stream, payload in d.step(start + step * 300, 300, completion_s=(3600, 86400)):
            out.append((src.id, stream, payload))
    return out


def test_same_seed_same_district(isite):
    assert _week(isite, 3)[:5000] == _week(isite, 3)[:5000]
    assert _week(isite, 3)[:5000] != _week(isite, 4)[:5000]


def test_dossiers_follow_the_week_and_the_online_share(isite):
    week = _week(isite, 11)
    received = [p for _, s, p in week if s == "dossier" and p["event"] == "received"]
    by_day = Counter(p["dossier_id"][5:7] for p in received)  # H260302-…: day of month
    weekdays = [by_day[f"{d:02d}"] for d in range(2, 7)]
    assert min(weekdays) > 3 * by_day["08"], by_day  # Sunday is quiet
    online = sum(p["channel"] == "online" for p in received) / len(received)
    assert 0.6 < online < 0.9
    outcomes = Counter(p["event"] for _, s, p in week if s == "dossier")
    assert outcomes["completed_on_time"] > outcomes["completed_late"] > 0
    assert any(s == "payment" for _, s, _ in week)
    assert any(s == "water_level" for _, s, _ in week)


def test_rhythms_are_plausible():
    monday_10 = datetime(2026, 3, 2, 10, tzinfo=LOCAL)
    monday_3 = datetime(2026, 3, 2, 3, tzinfo=LOCAL)
    sunday_10 = datetime(2026, 3, 8, 10, tzinfo=LOCAL)
    assert office_load(monday_10) > 4 * office_load(monday_3)
    assert dossier_rate_per_hour(monday_10) > 5 * dossier_rate_per_hour(sunday_10)


def test_backfill_writes_history_once(isettings, isite, idb):
    end = time.time() - 86400 * 200  # far from the other tests' data
    before = idb.execute("SELECT count(*) FROM wifi_ap_readings").fetchone()[0]
    sim = Simulator(isettings, isite, seed=5)
    t0 = time.monotonic()
    rows = sim.backfill(2, step_s=300, now=end)
    took = time.monotonic() - t0
    assert rows > 2 * 288 * 6  # APs every 5 min for 2 days, plus sensors and dossiers
    after = idb.execute("SELECT count(*) FROM wifi_ap_readings").fetchone()[0]
    assert after - before == 2 * 288 * 7 + 7  # 6 APs + the gateway, both ends included
    assert idb.execute("SELECT count(*) FROM dossier_events").fetchone()[0] > 0
    again = Simulator(isettings, isite, seed=5).backfill(2, step_s=300, now=end)
    assert again == 0  # same seed, same end: the idempotency key absorbs it all
    assert took < 60
