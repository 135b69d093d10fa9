"""The KPI arithmetic, pure: parts summed up the org-unit tree, values, pace forecast, status.

Every rollup KPI is made of *parts* per org unit: a row count `n`, a sum `total` and, for
percentiles, a histogram. Parts are additive, so a window is the sum of its hourly buckets and a
district is the sum of its communes and agencies: values are computed from parts at the end,
never averaged from averages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from analytics.kpi.calendar import LOCAL
from core.site import KpiFormula, KpiTarget, Measure, Site

Status = Literal["on_track", "at_risk", "missed"]


@dataclass
class Parts:
    n: float = 0.0
    total: float = 0.0
    hist: list[float] | None = None

    def __iadd__(self, other: Parts) -> Parts:
        self.n += other.n
        self.total += other.total
        if other.hist is not None:
            if self.hist is None:
                self.hist = [0.0] * len(other.hist)
            self.hist = [a + b for a, b in zip(self.hist, other.hist, strict=True)]
        return self


def roll_up_parts(site: Site, per_unit: Mapping[str, Parts]) -> dict[str, Parts]:
    """Each unit's parts plus those of every unit below it (an agency rolls up to its parent)."""
    out = {u.id: Parts() for u in site.org_units}
    for unit, parts in per_unit.items():
        if unit not in site.units:
            continue  # rows of a unit no longer in the site file count nowhere
        for ancestor in site.ancestors(unit):
            out[ancestor] += parts
    return out


def amount(m: Measure, p: Parts) -> float:
    return p.total if m.value else p.n


def hist_quantile(bins: list[float], counts: list[float], q: float) -> float | None:
    """The q-quantile from a histogram (`counts[i]` for width_bucket i: 0 below bins[0], i for
    bins[i-1] <= v < bins[i], len(bins) at or above the last edge), interpolated in its bin."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cum = 0.0
    for i, c in enumerate(counts):
        if c and cum + c >= rank:
            if i == 0:
                return bins[0]
            if i >= len(bins):
                return bins[-1]
            lo, hi = bins[i - 1], bins[i]
            return lo + (hi - lo) * (rank - cum) / c
        cum += c
    return bins[-1]


def value_of(f: KpiFormula, parts: Mapping[str, Parts]) -> float | None:
    """The KPI value from its parts ({'m': …} or {'num': …, 'den': …}); None when undefined."""
    if f.op == "ratio":
        assert f.numerator and f.denominator
        den = amount(f.denominator, parts["den"])
        if den == 0:
            return None
        return f.scale * amount(f.numerator, parts["num"]) / den
    p = parts["m"]
    if f.op == "count":
        return f.scale * p.n
    if f.op == "sum":
        return f.scale * p.total
    if f.op == "avg":
        return None if p.n == 0 else f.scale * p.total / p.n
    if f.op == "percentile":
        assert f.measure and f.q
        v = hist_quantile(f.measure.bins, p.hist or [], f.q)
        return None if v is None else f.scale * v
    raise ValueError(f"{f.op} is not a rollup KPI")


def forecast(
    f: KpiFormula, period: Mapping[str, Parts], recent: Mapping[str, Parts], elapsed: float
) -> float | None:
    """Where the KPI ends the period at this pace.

    Counts and sums extrapolate linearly. Ratios and averages keep the volume's pace and assume
    the remaining volume performs like the last 30 days: (num + r·rest) / (den + rest)."""
    if elapsed <= 0:
        return None
    if f.op in ("count", "sum"):
        v = value_of(f, period)
        return None if v is None else v / elapsed
    if f.op in ("ratio", "avg"):
        if f.op == "ratio":
            assert f.numerator and f.denominator
            num, den = amount(f.numerator, period["num"]), amount(f.denominator, period["den"])
            r_num, r_den = amount(f.numerator, recent["num"]), amount(f.denominator, recent["den"])
        else:
            num, den = period["m"].total, period["m"].n
            r_num, r_den = recent["m"].total, recent["m"].n
        if den == 0:
            return None
        rate = r_num / r_den if r_den else num / den
        rest = den * (1 - elapsed) / elapsed
        return f.scale * (num + rate * rest) / (den + rest)
    return None


def met(direction: str, value: float, target: float) -> bool:
    return value >= target if direction == "higher" else value <= target


def status_of(
    kpi: KpiTarget,
    target: float | None,
    value: float | None,
    fcast: float | None,
    *,
    period_over: bool,
    grows_only: bool,
) -> Status | None:
    """On track / at risk / missed.

    Without a forecast (gauges, rolling windows) or once the period is over the value itself is
    judged: on target, within `at_risk_margin`, or missed. In an open period the forecast is:
    on track when it reaches the target, else at risk — except a capped count that only grows
    ("lower" count already above its cap), which is missed for good."""
    if target is None or value is None:
        return None
    if fcast is None or period_over:
        if met(kpi.direction, value, target):
            return "on_track"
        if period_over:
            return "missed"
        gap = target - value if kpi.direction == "higher" else value - target
        return "at_risk" if gap <= kpi.at_risk_margin else "missed"
    if grows_only and kpi.direction == "lower" and not met(kpi.direction, value, target):
        return "missed"
    return "on_track" if met(kpi.direction, fcast, target) else "at_risk"


def fmt_number(v: float, unit: str = "") -> str:
    """Vietnamese number format: decimal comma, dot thousands, one decimal where useful."""
    text = f"{v:,.1f}" if abs(v - round(v)) > 1e-9 else f"{round(v):,}"
    text = text.replace(",", "\0").replace(".", ",").replace("\0", ".")
    return f"{text} {unit}".strip()


def pace_text(kpi: KpiTarget, fcast: float | None, target: float | None, period_end: datetime):
    """'Theo tốc độ hiện tại: 82,4 % vào 31/12, mục tiêu 85 %' (None without a forecast)."""
    if fcast is None:
        return None
    last_day = (period_end.astimezone(LOCAL) - timedelta(seconds=1)).strftime("%d/%m")
    out = f"Theo tốc độ hiện tại: {fmt_number(fcast, kpi.unit)} vào {last_day}"
    if target is not None:
        out += f", mục tiêu {fmt_number(target, kpi.unit)}"
    return out


@dataclass
class KpiValue:
    kpi_id: str
    org_unit_id: str
    window: str
    value: float | None
    target: float | None = None
    status: Status | None = None
    forecast: float | None = None
    period_end: datetime | None = None
    detail: dict = field(default_factory=dict)
