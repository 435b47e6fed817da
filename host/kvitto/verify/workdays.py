"""Swedish calendar: weekdays without public holidays, lock dates, Europe/Stockholm local time.

    from kvitto.verify.workdays import nth_weekday, end_of_day
    nth_weekday(2027, 1, 3)          # date(2027, 1, 7): Epiphany (6 Jan) is not a weekday
    end_of_day(nth_weekday(2026, 11, 3))   # the last instant registrations are accepted

A "weekday" [vardag] is Monday–Friday that is not a Swedish public holiday (the `holidays`
package's Sweden calendar). Midsummer Eve, Christmas Eve and New Year's Eve are not public
holidays but are de facto days off; the municipal documents do not say, so only public holidays
count here (`holidays.Sweden` lists Sundays as holidays too; weekends are excluded anyway).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

STOCKHOLM = ZoneInfo("Europe/Stockholm")


@lru_cache(maxsize=64)
def _public_holidays(year: int) -> frozenset[date]:
    calendar = holidays.country_holidays("SE", years=year)
    return frozenset(
        day for day, name in calendar.items() if name != "Söndag" and name != "Sunday"
    )


def is_weekday(day: date) -> bool:
    """Monday–Friday and not a Swedish public holiday."""
    return day.weekday() < 5 and day not in _public_holidays(day.year)


def nth_weekday(year: int, month: int, n: int) -> date:
    """The n-th weekday (1-based) of a month: the lock date [spärrdatum] for n = 3."""
    if n < 1:
        raise ValueError("n counts from 1")
    day = date(year, month, 1)
    seen = 0
    while True:
        if is_weekday(day):
            seen += 1
            if seen == n:
                return day
        day += timedelta(days=1)


def add_weekdays(day: date, count: int) -> date:
    """The date `count` weekdays after `day` (five working days: 004 Förändring av behov)."""
    current = day
    while count > 0:
        current += timedelta(days=1)
        if is_weekday(current):
            count -= 1
    return current


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def parse_month(text: str) -> tuple[int, int]:
    """'2026-10' -> (2026, 10); ValueError otherwise."""
    year_text, _, month_text = text.partition("-")
    if len(year_text) != 4 or len(month_text) != 2 or not (year_text + month_text).isdigit():
        raise ValueError(f"{text!r} is not YYYY-MM")
    year, month = int(year_text), int(month_text)
    if not 1 <= month <= 12:
        raise ValueError(f"{text!r} is not YYYY-MM")
    return year, month


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) in Stockholm local time, tz-aware."""
    following = next_month(year, month)
    start = datetime(year, month, 1, tzinfo=STOCKHOLM)
    end = datetime(following[0], following[1], 1, tzinfo=STOCKHOLM)
    return start, end


def local(moment: datetime) -> datetime:
    return moment.astimezone(STOCKHOLM)


def local_at(day: date, clock: time) -> datetime:
    """A wall-clock time on a day in Stockholm (DST handled by zoneinfo)."""
    return datetime.combine(day, clock, tzinfo=STOCKHOLM)


def end_of_day(day: date) -> datetime:
    """The first instant after `day` ends in Stockholm: a deadline 'on day' is `< end_of_day`."""
    return local_at(day + timedelta(days=1), time(0, 0))
