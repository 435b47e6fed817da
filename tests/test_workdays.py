"""Swedish weekdays, lock dates moved by public holidays, Stockholm local time."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from kvitto.verify.workdays import (
    add_weekdays,
    end_of_day,
    is_weekday,
    month_bounds,
    nth_weekday,
    parse_month,
)


@pytest.mark.parametrize(
    ("year", "month", "n", "expected"),
    [
        (2026, 11, 3, date(2026, 11, 4)),  # Mon 2, Tue 3, Wed 4
        (2027, 1, 3, date(2027, 1, 7)),  # New Year Fri 1, Epiphany Wed 6 skipped
        (2024, 4, 3, date(2024, 4, 4)),  # Easter Monday 1 April skipped
        (2026, 11, 1, date(2026, 11, 2)),  # 1 Nov is a Sunday
        (2025, 6, 5, date(2025, 6, 9)),  # National Day Fri 6 June 2025 skipped
        (2027, 5, 3, date(2027, 5, 5)),  # 1 May Saturday; Mon 3, Tue 4, Wed 5
    ],
)
def test_nth_weekday_skips_weekends_and_public_holidays(year, month, n, expected):
    assert nth_weekday(year, month, n) == expected


def test_is_weekday():
    assert not is_weekday(date(2027, 1, 6))  # Epiphany
    assert not is_weekday(date(2024, 4, 1))  # Easter Monday
    assert not is_weekday(date(2026, 12, 25))
    assert is_weekday(date(2026, 12, 23))
    assert not is_weekday(date(2026, 10, 31))  # Saturday (All Saints' Day)


def test_add_weekdays_over_christmas():
    # Thu 24 (not a public holiday), Christmas Day Fri 25 skipped, Mon 28 … Thu 31
    assert add_weekdays(date(2026, 12, 23), 5) == date(2026, 12, 31)
    # 24 Dec is not a public holiday (a de facto day off, not in the calendar):
    assert add_weekdays(date(2026, 12, 23), 1) == date(2026, 12, 24)
    assert add_weekdays(date(2026, 12, 24), 1) == date(2026, 12, 28)


def test_month_bounds_and_end_of_day_follow_dst():
    start, end = month_bounds(2026, 10)
    assert start.astimezone(timezone.utc) == datetime(2026, 9, 30, 22, tzinfo=timezone.utc)
    assert end.astimezone(timezone.utc) == datetime(2026, 10, 31, 23, tzinfo=timezone.utc)
    assert end_of_day(date(2026, 10, 24)).astimezone(timezone.utc) == datetime(
        2026, 10, 24, 22, tzinfo=timezone.utc
    )


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "26-10", "2026/10", ""])
def test_parse_month_refuses(text):
    with pytest.raises(ValueError):
        parse_month(text)
