"""Local calendar windows and working-day legal deadlines (pure functions).

Windows are computed in the site's time zone (Asia/Ho_Chi_Minh, UTC+7 without daylight saving,
so local days start on whole UTC hours and every window is a whole number of hourly rollup
buckets). Legal deadlines for dossiers and field reports count working days: Saturdays, Sundays
and Vietnam's public holidays — Tết and the Hùng Kings' day follow the lunar calendar — do not
count, and the Saturdays the government swaps into working days do. The holidays come from the
maintained `holidays` library, not from a hand-typed list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
OFFICE_END = time(17, 0)  # a deadline falls at the end of office hours of its last working day


@dataclass(frozen=True)
class Window:
    """A half-open [start, end) interval; `period_end` is where a calendar period finishes."""

    name: str
    start: datetime
    end: datetime
    period_end: datetime | None = None  # None for rolling windows

    @property
    def elapsed_fraction(self) -> float:
        if self.period_end is None:
            return 1.0
        total = (self.period_end - self.start).total_seconds()
        return min(1.0, max(0.0, (self.end - self.start).total_seconds() / total))


def _local_midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(d, time(0), tz).astimezone(UTC)


def window(name: str, now: datetime, tz: ZoneInfo = LOCAL) -> Window:
    """The window `name` ending at `now` (calendar windows start at local midnight)."""
    local = now.astimezone(tz)
    d = local.date()
    if name == "today":
        start, nxt = d, d + timedelta(days=1)
    elif name == "week":  # ISO week, Monday first
        start = d - timedelta(days=d.weekday())
        nxt = start + timedelta(days=7)
    elif name == "month":
        start = d.replace(day=1)
        nxt = (start + timedelta(days=32)).replace(day=1)
    elif name == "quarter":
        start = date(d.year, 3 * ((d.month - 1) // 3) + 1, 1)
        nxt = (start + timedelta(days=95)).replace(day=1)
    elif name == "ytd":
        start, nxt = date(d.year, 1, 1), date(d.year + 1, 1, 1)
    elif name in ("24h", "7d", "30d", "now"):
        hours = {"24h": 24, "7d": 24 * 7, "30d": 24 * 30, "now": 1}[name]
        end_hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        # hour-aligned: the current (partial) hour and the hours before it
        return Window(name, end_hour - timedelta(hours=hours - 1), now)
    else:
        raise ValueError(f"unknown window '{name}'")
    return Window(name, _local_midnight(start, tz), now, _local_midnight(nxt, tz))


def month_window(year: int, month: int, tz: ZoneInfo = LOCAL) -> Window:
    """A whole calendar month (for the monthly report)."""
    start = date(year, month, 1)
    nxt = (start + timedelta(days=32)).replace(day=1)
    end = _local_midnight(nxt, tz)
    return Window("month", _local_midnight(start, tz), end, end)


@lru_cache(maxsize=64)
def _vn(year: int) -> holidays.HolidayBase:
    return holidays.country_holidays("VN", years=range(year - 1, year + 2))


def is_working_day(d: date) -> bool:
    """Mon–Fri and not a public holiday, or a Saturday swapped into a working day."""
    return bool(_vn(d.year).is_working_day(d))


def add_working_days(start: datetime, days: int, tz: ZoneInfo = LOCAL) -> datetime:
    """The legal due time of something received at `start` with `days` working days to process.

    The day of receipt does not count; the due time is the end of office hours on the `days`-th
    working day after it (0 days: the end of the day of receipt, or of the next working day when
    received on a day off)."""
    d = start.astimezone(tz).date()
    if days == 0:
        while not is_working_day(d):
            d += timedelta(days=1)
    left = days
    while left > 0:
        d += timedelta(days=1)
        if is_working_day(d):
            left -= 1
    return datetime.combine(d, OFFICE_END, tz).astimezone(UTC)


def working_days_between(a: datetime, b: datetime, tz: ZoneInfo = LOCAL) -> int:
    """Working days after a's date up to and including b's date (0 when b is a's day or before)."""
    da, db = a.astimezone(tz).date(), b.astimezone(tz).date()
    n = 0
    while da < db:
        da += timedelta(days=1)
        n += is_working_day(da)
    return n
