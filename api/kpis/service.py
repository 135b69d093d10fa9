"""KPI targets, status and forecast as pure functions (the plan's targets come from the site)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from core.site import KpiTarget

WARN_MARGIN = 0.1  # within 10 % of the target on the wrong side is a warning, beyond is bad


def target_for(k: KpiTarget, year: int) -> float | None:
    """The target for a year: the plan's value for that year, else the latest earlier one,
    else the standing target."""
    if year in k.targets_by_year:
        return k.targets_by_year[year]
    earlier = [y for y in k.targets_by_year if y <= year]
    if earlier:
        return k.targets_by_year[max(earlier)]
    return k.target


def status(value: float | None, target: float | None, direction: str) -> str:
    """'ok', 'warn', 'bad', or 'none' when there is no target or no value."""
    if value is None or target is None:
        return "none"
    gap = (target - value) if direction == "higher" else (value - target)
    if gap <= 0:
        return "ok"
    return "warn" if gap <= abs(target) * WARN_MARGIN else "bad"


def forecast(points: Sequence[tuple[float, float]], at: float) -> float | None:
    """Least-squares line through (epoch seconds, value) points, evaluated at `at`.
    None with fewer than three points (a trend needs some history)."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return my
    slope = sum((t - mx) * (v - my) for t, v in points) / sxx
    return my + slope * (at - mx)


def end_of_year(now: datetime) -> datetime:
    return datetime(now.year, 12, 31, 23, 59, tzinfo=UTC)
