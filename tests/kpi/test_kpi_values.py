"""KPI values and roll-ups on a small fixture, with every expectation computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analytics.kpi.calendar import LOCAL
from analytics.kpi.store import open_dossiers, refresh_cycle

NOW = datetime(2025, 6, 10, 3, 0, tzinfo=UTC)  # Tue 10 Jun 2025, 10:00 in Hà Nội
T = datetime(2025, 6, 10, 1, 0, tzinfo=UTC)  # 08:00 local, today


def dossier(db, n, when, unit, event, channel="online", e2e=True, code="2.000", agency=None):
    db.execute(
        "INSERT INTO dossier_events (time, source_id, org_unit_id, msg_id, dossier_id, event, "
        "channel, procedure_code, agency, dossier_org_unit, end_to_end) "
        "VALUES (%s, 'motcua-igate', 'iahdrai-motcua', %s, %s, %s, %s, %s, %s, %s, %s)",
        (when, f"m{n}-{event}", f"d{n}", event, channel, code, agency or unit, unit, e2e),
    )


def current(db, kpi, unit, window):
    return db.execute(
        "SELECT value, target, status, forecast, detail FROM kpi_current "
        'WHERE kpi_id = %s AND org_unit_id = %s AND "window" = %s',
        (kpi, unit, window),
    ).fetchone()


@pytest.fixture(scope="module")
def loaded(kdb_settings, site):
    import psycopg

    with psycopg.connect(kdb_settings.database_url.get_secret_value()) as db:
        m = timedelta(minutes=10)
        # Ia Tơi: 2 online end-to-end on time, 1 counter late.
        dossier(db, 1, T, "iahdrai-iatoi", "completed_on_time")
        dossier(db, 2, T + m, "iahdrai-iatoi", "completed_on_time")
        dossier(db, 3, T + 2 * m, "iahdrai-iatoi", "completed_late", "counter", False)
        # Ia Đal: 1 online end-to-end, late.
        dossier(db, 4, T + m, "iahdrai-iadal", "completed_late")
        # One-stop-shop: 1 online e2e on time, 1 online not e2e, 2 at the counter; all on time.
        dossier(db, 5, T, "iahdrai-motcua", "completed_on_time")
        dossier(db, 6, T, "iahdrai-motcua", "completed_on_time", "online", False)
        dossier(db, 7, T + m, "iahdrai-motcua", "completed_on_time", "counter", False)
        dossier(db, 8, T + 3 * m, "iahdrai-motcua", "completed_on_time", "counter", False)
        # Last month, Ia Đal: one at the counter, on time (in ytd and 30d, not today).
        dossier(
            db,
            9,
            datetime(2025, 5, 20, 3, tzinfo=UTC),
            "iahdrai-iadal",
            "completed_on_time",
            "counter",
            False,
        )
        # Open dossiers (received, not completed).
        local = lambda *a: datetime(*a, tzinfo=LOCAL)  # noqa: E731
        dossier(db, 20, local(2025, 6, 2, 9), "iahdrai-motcua", "received", code="1.001")
        dossier(db, 21, local(2025, 6, 9, 9), "iahdrai-motcua", "received", code="2.000")
        dossier(db, 22, local(2025, 6, 9, 9), "iahdrai-iatoi", "received", code="1.001")
        # Field reports in Ia Tơi, resolved after 2, 10, 30 and 100 hours.
        t0 = datetime(2025, 6, 1, 1, tzinfo=UTC)
        for i, h in enumerate((2, 10, 30, 100)):
            for status, dt in (("new", 0), ("resolved", h)):
                db.execute(
                    "INSERT INTO field_reports (time, source_id, org_unit_id, msg_id, report_id, "
                    "category, status) VALUES (%s, 'motcua-igate', 'iahdrai-iatoi', %s, %s, "
                    "'road', %s)",
                    (t0 + timedelta(hours=dt), f"fr{i}{status}", f"r{i}", status),
                )
        # Budget estimates for fiscal year 2026 (prepared in 2025).
        for i, (unit, status, day) in enumerate(
            [
                ("iahdrai-iatoi", "submitted", 1),
                ("iahdrai-iadal", "drafting", 1),
                ("iahdrai-iadal", "submitted", 3),
                ("iahdrai-iadom", "submitted", 1),
                ("iahdrai-iadom", "returned", 4),
                ("iahdrai-motcua", "approved", 2),
            ]
        ):
            db.execute(
                "INSERT INTO budget_status (time, source_id, org_unit_id, msg_id, budget_unit, "
                "fiscal_year, plan, status) VALUES (%s, 'dutoan-ngsnn', 'iahdrai-tckh', %s, %s, "
                "2026, 'annual', %s)",
                (datetime(2025, 6, day, tzinfo=UTC), f"b{i}", unit, status),
            )
        # WiFi minute rollups: Ia Tơi's hall AP up 6/6 then 3/6 samples; Ia Đal's up 6/6.
        wifi = [
            ("wifi-ap-ubnd-sanh", "iahdrai-iatoi", NOW - timedelta(minutes=2), 8, 1.0),
            ("wifi-ap-ubnd-sanh", "iahdrai-iatoi", NOW - timedelta(minutes=1), 10, 0.5),
            ("wifi-ap-iadal", "iahdrai-iadal", NOW - timedelta(minutes=1), 5, 1.0),
            ("wifi-ap-iadom", "iahdrai-iadom", NOW - timedelta(hours=30), 7, 1.0),  # stale
        ]
        for src, unit, t, clients, up in wifi:
            db.execute(
                "INSERT INTO wifi_ap_1m (bucket, source_id, org_unit_id, clients_avg, "
                "clients_max, up_ratio, logins_max, samples) VALUES (%s, %s, %s, %s, %s, %s, 0, 6)",
                (t, src, unit, clients, clients, up),
            )
        # Camera events today: 2 crowding in the hall, 1 stopped vehicle, 1 marked false positive.
        for i, (cam, unit, zone, crule, fp) in enumerate(
            [
                ("cam-motcua-sanh", "iahdrai-motcua", "hall", "crowding", None),
                ("cam-motcua-sanh", "iahdrai-motcua", "hall", "crowding", False),
                ("cam-nga-tu-trung-tam", "iahdrai-iatoi", "no-parking", "stopped_vehicle", None),
                ("cam-nga-tu-trung-tam", "iahdrai-iatoi", "no-parking", "stopped_vehicle", True),
            ]
        ):
            db.execute(
                "INSERT INTO camera_events (start_at, id, camera_id, org_unit_id, rule, zone, "
                "false_positive) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (T + timedelta(minutes=i), f"ce{i}", cam, unit, crule, zone, fp),
            )
        # People in the one-stop-shop hall (crowd_flow telemetry of its camera).
        db.execute(
            "INSERT INTO telemetry (time, source_id, org_unit_id, msg_id, metric, value) VALUES "
            "(%s, 'cam-motcua-sanh', 'iahdrai-motcua', 'pc1', 'people_count', 23)",
            (NOW - timedelta(minutes=1),),
        )
        db.commit()
        from analytics.kpi.store import ensure_kpi_storage

        ensure_kpi_storage(db)
        result = refresh_cycle(db, site, NOW)
    return result


def test_online_rate_per_unit_and_rolled_up(loaded, kdb):
    assert current(kdb, "online_rate", "iahdrai-iatoi", "today")[0] == pytest.approx(200 / 3)
    assert current(kdb, "online_rate", "iahdrai-iadal", "today")[0] == pytest.approx(100)
    assert current(kdb, "online_rate", "iahdrai-motcua", "today")[0] == pytest.approx(25)
    # district: (2 + 1 + 1) / (3 + 1 + 4); the province sees the same dossiers
    assert current(kdb, "online_rate", "iahdrai", "today")[0] == pytest.approx(50)
    assert current(kdb, "online_rate", "kontum", "today")[0] == pytest.approx(50)
    # the May dossier counts in the year, not today: 4 / 9
    ytd = current(kdb, "online_rate", "iahdrai", "ytd")
    assert ytd[0] == pytest.approx(400 / 9)
    assert ytd[1] == 85 and ytd[2] == "at_risk"
    assert ytd[4]["numerator"] == 4 and ytd[4]["denominator"] == 9
    assert "mục tiêu 85 %" in ytd[4]["pace"] and "vào 31/12" in ytd[4]["pace"]
    # a commune with no dossiers has no rate (not 0 %)
    assert current(kdb, "online_rate", "iahdrai-iadom", "today")[0] is None


def test_on_time_rate_and_counts(loaded, kdb):
    assert current(kdb, "ontime_rate", "iahdrai", "today")[0] == pytest.approx(75)  # 6 / 8
    assert current(kdb, "ontime_rate", "iahdrai-iadal", "today")[0] == 0
    assert current(kdb, "ontime_rate", "iahdrai", "month")[0] == pytest.approx(75)
    assert current(kdb, "ontime_rate", "iahdrai", "ytd")[0] == pytest.approx(700 / 9)
    assert current(kdb, "dossiers_received", "iahdrai", "month")[0] == 3
    assert current(kdb, "dossiers_received", "iahdrai-motcua", "month")[0] == 2


def test_overdue_and_at_risk_dossiers(loaded, kdb):
    rows = {d["dossier_id"]: d for d in open_dossiers(kdb, NOW)}
    # d20: Mon 2 Jun + 1 working day → Tue 3 Jun 17:00: overdue.
    assert rows["d20"]["due_at"] == datetime(2025, 6, 3, 17, tzinfo=LOCAL)
    assert rows["d20"]["overdue"] and rows["d20"]["risk"] == "overdue"
    # d21: Mon 9 Jun + 5 working days → Mon 16 Jun 17:00: on time.
    assert rows["d21"]["due_at"] == datetime(2025, 6, 16, 17, tzinfo=LOCAL)
    assert rows["d21"]["risk"] == "on_time"
    # d22: due Tue 10 Jun 17:00, 7 hours left: at risk.
    assert rows["d22"]["risk"] == "at_risk"
    assert current(kdb, "overdue_dossiers", "iahdrai-motcua", "now")[0] == 1
    assert current(kdb, "overdue_dossiers", "iahdrai", "now")[:3] == (1, 0, "at_risk")
    assert current(kdb, "at_risk_dossiers", "iahdrai", "now")[0] == 1
    assert current(kdb, "at_risk_dossiers", "iahdrai-motcua", "now")[0] == 0


def test_field_report_resolution(loaded, kdb):
    # histogram: 2 h in [0,4), 10 h in [8,24), 30 h in [24,48), 100 h in [72,120);
    # rank 0.9 × 4 = 3.6 falls in [72,120) with 0.6 of its one report: 72 + 48 × 0.6 = 100.8
    assert current(kdb, "field_report_resolution_p90", "iahdrai-iatoi", "month")[0] == (
        pytest.approx(100.8)
    )
    avg = current(kdb, "field_report_resolution_avg", "iahdrai", "month")
    assert avg[0] == pytest.approx((2 + 10 + 30 + 100) / 4)


def test_budget_submission_share_across_the_tree(loaded, kdb):
    # 7 communes and agencies under the district; submitted or beyond: Ia Tơi, Ia Đal (latest),
    # the one-stop-shop (approved); Ia Dom's latest is 'returned'.
    assert current(kdb, "budget_submitted", "iahdrai", "now")[0] == pytest.approx(300 / 7)
    assert current(kdb, "budget_submitted", "kontum", "now")[0] == pytest.approx(300 / 7)
    assert current(kdb, "budget_submitted", "iahdrai-iadom", "now")[0] == 0
    assert current(kdb, "budget_submitted", "iahdrai-iadal", "now")[:3] == (100, 100, "on_track")


def test_wifi_users_and_uptime(loaded, kdb):
    # latest minute per AP (the stale Ia Dom AP is ignored): 10 + 5
    assert current(kdb, "wifi_clients", "iahdrai", "now")[0] == 15
    assert current(kdb, "wifi_clients", "iahdrai-iatoi", "now")[0] == 10
    # uptime: (6 + 3) / 12 in Ia Tơi, (9 + 6) / 18 in the district
    assert current(kdb, "wifi_uptime", "iahdrai-iatoi", "today")[0] == pytest.approx(75)
    assert current(kdb, "wifi_uptime", "iahdrai", "24h")[0] == pytest.approx(1500 / 18)


def test_camera_events_per_zone_and_people_in_the_hall(loaded, kdb):
    assert current(kdb, "camera_events", "iahdrai", "today")[0] == 3  # the false positive is out
    assert current(kdb, "camera_events", "iahdrai-motcua", "today")[0] == 2
    hall = "camera_events--cam-motcua-sanh--hall"
    assert current(kdb, hall, "iahdrai-motcua", "today")[0] == 2
    assert current(kdb, hall, "iahdrai-iatoi", "today")[0] == 0
    assert (
        current(kdb, "camera_events--cam-nga-tu-trung-tam--no-parking", "iahdrai", "today")[0] == 1
    )
    assert current(kdb, "hall_crowding_events", "iahdrai", "today")[0] == 2
    assert current(kdb, "hall_people", "iahdrai-motcua", "now")[:3] == (23, 40, "on_track")


def test_late_data_recomputes_only_its_hour(loaded, kdb, site):
    assert loaded.hours > 0
    dossier(kdb, 30, datetime(2025, 3, 3, 4, 20, tzinfo=UTC), "iahdrai-iadal", "completed_on_time")
    kdb.commit()
    again = refresh_cycle(kdb, site, NOW + timedelta(minutes=1))
    assert again.hours == 1  # only 3 Mar 04:00 UTC was dirty
    assert current(kdb, "online_rate", "iahdrai", "ytd")[0] == pytest.approx(500 / 10)
    assert current(kdb, "online_rate", "iahdrai", "today")[0] == pytest.approx(50)
    hist = kdb.execute(
        "SELECT count(*) FROM kpi_values WHERE kpi_id = 'online_rate' AND org_unit_id = 'iahdrai' "
        "AND \"window\" = 'ytd'"
    ).fetchone()[0]
    assert hist == 2  # the first value and the changed one
