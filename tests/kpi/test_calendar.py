"""Calendar windows in Hà Nội time and working-day deadlines with Vietnam's holidays."""

from datetime import UTC, date, datetime

from analytics.kpi.calendar import (
    LOCAL,
    add_working_days,
    is_working_day,
    window,
    working_days_between,
)


def local(*a: int) -> datetime:
    return datetime(*a, tzinfo=LOCAL)


def test_calendar_windows_start_at_local_midnight():
    now = datetime(2025, 5, 14, 20, 30, tzinfo=UTC)  # Thu 15 May 03:30 in Hà Nội
    assert window("today", now).start == local(2025, 5, 15)
    assert window("today", now).period_end == local(2025, 5, 16)
    assert window("week", now).start == local(2025, 5, 12)  # Monday
    assert window("month", now).start == local(2025, 5, 1)
    assert window("month", now).period_end == local(2025, 6, 1)
    assert window("quarter", now).start == local(2025, 4, 1)
    assert window("quarter", now).period_end == local(2025, 7, 1)
    assert window("ytd", now).start == local(2025, 1, 1)
    assert window("ytd", now).period_end == local(2026, 1, 1)
    # 134 days and 3.5 hours of 365 days have passed
    assert abs(window("ytd", now).elapsed_fraction - (134 * 24 + 3.5) / (365 * 24)) < 1e-12


def test_rolling_windows_are_hour_aligned():
    now = datetime(2025, 5, 14, 20, 30, tzinfo=UTC)
    w = window("24h", now)
    assert w.start == datetime(2025, 5, 13, 21, 0, tzinfo=UTC) and w.end == now
    assert window("30d", now).start == datetime(2025, 4, 14, 21, 0, tzinfo=UTC)


def test_lunar_new_year_and_swapped_days():
    # Tết Ất Tỵ: 27 Jan – 1 Feb 2025 (Mon–Sat) off; the lunar Hùng Kings' day 7 Apr 2025.
    assert not any(is_working_day(date(2025, 1, d)) for d in range(27, 32))
    assert is_working_day(date(2025, 1, 24)) and is_working_day(date(2025, 2, 3))
    assert not is_working_day(date(2025, 4, 7))
    # 2 May 2025 (Fri) was a day off swapped with Saturday 26 April, which was worked.
    assert not is_working_day(date(2025, 5, 2))
    assert is_working_day(date(2025, 4, 26))
    assert not is_working_day(date(2025, 4, 27))  # an ordinary Sunday


def test_due_time_skips_weekend_and_tet():
    # Received Thu 23 Jan 2025 10:00, 5 working days: Fri 24, (Sat, Sun, Tết 27–31 Jan,
    # Sat 1 Feb, Sun 2 Feb), Mon 3, Tue 4, Wed 5, Thu 6 Feb → due Thu 6 Feb 17:00.
    due = add_working_days(local(2025, 1, 23, 10), 5)
    assert due == local(2025, 2, 6, 17)
    # Received on the swapped working Saturday 26 Apr 2025 with 3 days: Mon 28, Tue 29,
    # (30 Apr, 1 May holidays, 2 May swapped off, weekend) Mon 5 May → due 5 May 17:00.
    assert add_working_days(local(2025, 4, 26, 9), 3) == local(2025, 5, 5, 17)
    # 0 days on a Sunday: the end of the next working day.
    assert add_working_days(local(2025, 6, 8, 9), 0) == local(2025, 6, 9, 17)
    assert working_days_between(local(2025, 1, 23, 10), local(2025, 2, 6, 17)) == 5
