"""Pure parts of the API: KPI targets/status/forecast, source health, time ranges, cursors and
what a client may see of a bus message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.errors import ApiError
from api.kpis.service import forecast, status, target_for
from api.live.views import (
    assignment_view,
    camera_view,
    fold_incidents,
    health_view,
    kpi_view,
    parse_id,
)
from api.pagination import decode_cursor, encode_cursor
from api.sources.service import health_of
from api.timeseries.service import Bucket, resolve_range
from core.site import KpiTarget


def test_target_for_a_year_falls_back_to_the_latest_plan_year():
    k = KpiTarget(id="online_rate", name="x", targets_by_year={2024: 70, 2025: 85}, target=50)
    assert target_for(k, 2024) == 70
    assert target_for(k, 2026) == 85
    assert target_for(k, 2023) == 50


@pytest.mark.parametrize(
    ("value", "target", "direction", "want"),
    [
        (90, 85, "higher", "ok"),
        (80, 85, "higher", "warn"),
        (70, 85, "higher", "bad"),
        (5, 10, "lower", "ok"),
        (10.5, 10, "lower", "warn"),
        (None, 85, "higher", "none"),
        (50, None, "higher", "none"),
    ],
)
def test_status_against_target(value, target, direction, want):
    assert status(value, target, direction) == want


def test_forecast_extends_the_trend():
    pts = [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
    assert forecast(pts, 30.0) == pytest.approx(40.0)
    assert forecast(pts[:2], 30.0) is None
    assert forecast([(5.0, 1.0)] * 3, 99.0) == 1.0


def test_source_health_against_its_interval():
    assert health_of(None, 10, 100) == "unknown"
    assert health_of(95, 10, 100) == "online"
    assert health_of(75, 10, 100) == "late"
    assert health_of(10, 10, 100) == "offline"


def test_time_ranges_are_bounded():
    now = datetime(2026, 5, 1, tzinfo=UTC)
    start, end, size = resolve_range(None, None, Bucket.m1, now)
    assert end - start == timedelta(hours=1) and size == timedelta(minutes=1)
    with pytest.raises(ApiError) as e:
        resolve_range(now, now - timedelta(1), Bucket.m1, now)
    assert e.value.code == "invalid_input"
    with pytest.raises(ApiError) as e:
        resolve_range(now - timedelta(days=30), now, Bucket.m5, now)
    assert e.value.code == "too_many_points"
    assert resolve_range(now - timedelta(days=30), now, Bucket.h1, now)[2] == timedelta(hours=1)


def test_cursors_round_trip_and_refuse_forgeries():
    assert decode_cursor(encode_cursor(["a", 3]), 2) == ["a", 3]
    assert decode_cursor(None, 1) is None
    for bad in ("%%%", encode_cursor(["a"]), encode_cursor([{"x": 1}, 2])):
        with pytest.raises(ApiError):
            decode_cursor(bad, 2)


def test_views_cut_messages_to_the_scope():
    scope = frozenset({"iahdrai-iadal"})
    assert kpi_view({"kpi": "k", "values": {"iahdrai-iadal": 1, "iahdrai": 9}}, scope) == {
        "k": {"iahdrai-iadal": 1}
    }
    assert kpi_view({"kpi": "k", "values": {"iahdrai": 9}}, scope) is None
    cams = {"c1": "iahdrai-iadal", "c2": "iahdrai-iadom"}
    assert camera_view({"camera": "c1", "id": "e"}, cams, scope)["org_unit"] == "iahdrai-iadal"
    assert camera_view({"camera": "c2", "id": "e"}, cams, scope) is None
    assert camera_view({"camera": "nope"}, cams, scope) is None
    ev = {
        "events": [
            {"stream": "source_offline", "source_id": "s1", "org_unit": "iahdrai-iadal", "ts": 5.0},
            {"stream": "source_offline", "source_id": "s2", "org_unit": "iahdrai-iadom"},
            {"stream": "dossier"},
        ]
    }
    assert set(health_view(ev, scope)) == {"s1"}
    msg = {"incident": {"id": 1, "assignee": "b"}, "previous_assignee": "a"}
    assert assignment_view(msg, "a") and assignment_view(msg, "b")
    assert assignment_view(msg, "c") is None
    folded = fold_incidents(
        [{"incident": {"id": 1, "status": "open"}}, {"incident": {"id": 1, "status": "resolved"}}]
    )
    assert folded == {"1": {"id": 1, "status": "resolved"}}
    assert parse_id("10-2") < parse_id("10-10") < parse_id("11-0")
