"""Pure KPI arithmetic: histogram quantiles, pace forecast, status, Vietnamese formatting."""

from datetime import UTC, datetime

import pytest

from analytics.kpi.engine import (
    Parts,
    fmt_number,
    forecast,
    hist_quantile,
    pace_text,
    roll_up_parts,
    status_of,
    value_of,
)
from core.site import KpiFormula, KpiTarget

RATIO = KpiFormula.model_validate(
    {
        "op": "ratio",
        "scale": 100,
        "numerator": {"input": "dossiers", "where": {"channel": "online"}},
        "denominator": {"input": "dossiers"},
    }
)
KPI = KpiTarget(id="online_rate", name="Tỷ lệ", unit="%", targets_by_year={2025: 85})


def test_target_for_year_falls_back_to_the_latest_earlier_one():
    assert KPI.target_for(2025) == 85 and KPI.target_for(2027) == 85
    assert KPI.target_for(2023) is None


def test_ratio_forecast_blends_the_recent_pace():
    # 120 of 200 so far (60 %), half the year gone; the last 30 days ran at 90 of 100 (90 %):
    # the other 200 expected dossiers at 90 % → (120 + 180) / 400 = 75 %
    period = {"num": Parts(120), "den": Parts(200)}
    recent = {"num": Parts(90), "den": Parts(100)}
    assert value_of(RATIO, period) == pytest.approx(60)
    assert forecast(RATIO, period, recent, 0.5) == pytest.approx(75)
    count = KpiFormula(op="count", measure={"input": "dossiers"})
    assert forecast(count, {"m": Parts(30)}, {"m": Parts(0)}, 0.25) == pytest.approx(120)


def test_status_rules():
    lower = KpiTarget(id="overdue", name="Quá hạn", direction="lower", target=0, at_risk_margin=3)
    assert status_of(KPI, 85, 80, 86, period_over=False, grows_only=False) == "on_track"
    assert status_of(KPI, 85, 90, 84, period_over=False, grows_only=False) == "at_risk"
    assert status_of(KPI, 85, 84, None, period_over=True, grows_only=False) == "missed"
    assert status_of(KPI, 85, 81, None, period_over=False, grows_only=False) == "at_risk"
    assert status_of(KPI, 85, 79, None, period_over=False, grows_only=False) == "missed"
    assert status_of(lower, 0, 2, None, period_over=False, grows_only=False) == "at_risk"
    assert status_of(lower, 0, 5, 9, period_over=False, grows_only=True) == "missed"
    assert status_of(KPI, None, 50, None, period_over=False, grows_only=False) is None


def test_histogram_quantile_by_hand():
    bins = [0, 10, 20]
    # counts: below 0, [0,10), [10,20), ≥ 20 → 0, 2, 2, 0; median rank 2 → end of [0,10)
    assert hist_quantile(bins, [0, 2, 2, 0], 0.5) == pytest.approx(10)
    assert hist_quantile(bins, [0, 2, 2, 0], 0.75) == pytest.approx(15)
    assert hist_quantile(bins, [0, 0, 0, 0], 0.5) is None


def test_roll_up_and_formatting(site):
    up = roll_up_parts(
        site,
        {"iahdrai-iatoi": Parts(2, 3.0), "iahdrai-motcua": Parts(1, 1.0), "gone-unit": Parts(5, 5)},
    )
    assert (up["iahdrai"].n, up["kontum"].total, up["iahdrai-iadal"].n) == (3, 4.0, 0)
    assert fmt_number(82.44, "%") == "82,4 %" and fmt_number(12345, "người") == "12.345 người"
    end = datetime(2025, 12, 31, 17, 0, tzinfo=UTC)  # 1 Jan 2026 00:00 in Hà Nội
    assert pace_text(KPI, 82.44, 85, end) == (
        "Theo tốc độ hiện tại: 82,4 % vào 31/12, mục tiêu 85 %"
    )
