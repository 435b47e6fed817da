"""The CSV files of a case bundle (FORMATS.md §3): orders.csv and claims.csv, parsed into
kvitto.verify.case's Order and Claim; ',' or ';' (as Swedish Excel saves them), a UTF-8 BOM.

    orders = parse_orders(text, "orders.csv")   # raises CaseError naming file, line and field
    claims = parse_claims(text, "claims.csv")
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import date, datetime

from kvitto.verify.case import (
    CLAIM_FIELDS,
    ORDER_FIELDS,
    REGISTERED_VIA,
    STOCKHOLM,
    CaseError,
    Claim,
    Order,
    _date,
    _flag,
    _text,
    _time,
    _time_required,
    _where,
    _whole,
)


def _lines(raw: str, start: int = 0) -> Iterator[str]:
    """The lines of a file's text, one at a time, ends kept (what csv reads from a file): a
    StringIO of a large claims file held four bytes a character beside the text."""
    size = len(raw)
    while start < size:
        end = raw.find("\n", start)
        end = size if end < 0 else end + 1
        yield raw[start:end]
        start = end


def csv_separator(raw: str) -> str:
    """',' or ';' (Swedish Excel's default), whichever the header line holds more of."""
    header = raw[: raw.find("\n") if "\n" in raw else len(raw)]
    return ";" if header.count(";") > header.count(",") else ","


def csv_dict_reader(raw: str) -> csv.DictReader:
    """A DictReader over a CSV text as spreadsheets save it: a UTF-8 byte order mark is
    skipped, and the separator is ',' or ';' (csv_separator)."""
    start = 1 if raw.startswith("\ufeff") else 0
    return csv.DictReader(_lines(raw, start), delimiter=csv_separator(raw[start : start + 4096]))


def _rows(
    raw: str, source: str, required: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv_dict_reader(raw)
    header = reader.fieldnames or []
    missing = [name for name in required if name not in header]
    if missing:
        separator = csv_separator(raw)
        raise CaseError(
            f"{source} line 1: header lacks {', '.join(missing)} (read {len(header)} columns "
            f"separated by {separator!r}: {', '.join(header[:6])}"
            f"{', …' if len(header) > 6 else ''})"
        )
    for row in reader:
        if None in row:  # more cells than header names
            raise CaseError(f"{source} line {reader.line_num}: more fields than the header has")
        if not any((value or "").strip() for value in row.values()):
            continue
        # A short row leaves the last fields None: read them as empty, the checks name them.
        yield reader.line_num, {name: value or "" for name, value in row.items()}


def parse_orders(raw: str, source: str = "orders.csv") -> list[Order]:
    orders = []
    for line, row in _rows(raw, source, ORDER_FIELDS):
        valid_from = _date(row["valid_from"], source, line, "valid_from", required=True)
        if valid_from is None:
            raise CaseError(f"{_where(source, line, 'valid_from')}: missing")
        valid_to = _date(row["valid_to"], source, line, "valid_to")
        if valid_to is not None and valid_to < valid_from:
            raise CaseError(f"{_where(source, line, 'valid_to')}: before valid_from")
        orders.append(
            Order(
                customer=_text(row, source, line, "customer"),
                activity=_text(row, source, line, "activity"),
                granted_minutes_month=_whole(
                    row["granted_minutes_month"], source, line, "granted_minutes_month"
                ),
                valid_from=valid_from,
                valid_to=valid_to,
                double_staffing=_flag(row["double_staffing"], source, line, "double_staffing"),
                tag_exempt=_flag(row["tag_exempt"], source, line, "tag_exempt"),
                line=line,
                ended_at=_time(row.get("ended_at", ""), source, line, "ended_at"),
            )
        )
    return orders


# No customer has this many claim rows on one day (a busy day is tens: visits × activities,
# double staffed). A file with more is refused while it is read, before any rule runs: one
# uploaded file of a million overlapping rows must not hold the verifier (issue #25.6).
MAX_CLAIMS_PER_CUSTOMER_DAY = 500


def parse_claims(raw: str, source: str = "claims.csv") -> list[Claim]:
    return claims_from_rows(_rows(raw, source, CLAIM_FIELDS), source)


def claims_from_rows(
    numbered: Iterable[tuple[int, dict[str, str]]], source: str = "claims.csv"
) -> list[Claim]:
    """parse_claims over rows already split into fields: (line, claims.csv field → text, every
    field present). The store keeps its claims as such rows (kvitto.web.claims), so the web
    judges them with the same checks and no CSV text in between."""
    claims = []
    seen: dict[str, int] = {}
    # Rows per customer, and per customer and local day once a customer has more rows than a
    # day may hold (most never do: a month of 4 visits a day is 124 rows), so the count costs
    # one int per customer. Counting per day starts late, so it never refuses a file wrongly.
    cap = MAX_CLAIMS_PER_CUSTOMER_DAY
    rows_of: dict[str, int] = {}
    per_day: dict[tuple[str, date], int] = {}
    # A month's claims repeat a few thousand customers, staff, activities and times of day
    # over a million rows: each distinct value is kept once, shared by the claims that have
    # it (issue #10: 50k customers' month in one process). Values are immutable, so sharing
    # changes nothing a rule sees.
    texts: dict[str, str] = {}
    times: dict[str, datetime] = {}

    def shared(text: str) -> str:
        return texts.setdefault(text, text)

    def when(row: dict[str, str], line: int, name: str) -> datetime | None:
        text = row[name]
        found = times.get(text)
        if found is None:
            found = _time(text, source, line, name)
            if found is not None:
                times[text] = found
        return found

    def required_when(row: dict[str, str], line: int, name: str) -> datetime:
        found = times.get(row[name])
        if found is None:
            found = times[row[name]] = _time_required(row[name], source, line, name)
        return found

    for line, row in numbered:
        claim_id = _text(row, source, line, "claim_id")
        if claim_id in seen:
            raise CaseError(
                f"{_where(source, line, 'claim_id')}: {claim_id!r} already on line {seen[claim_id]}"
            )
        seen[claim_id] = line
        start = required_when(row, line, "start")
        end = required_when(row, line, "end")
        if end < start:
            raise CaseError(f"{_where(source, line, 'end')}: {row['end']} is before start")
        customer = _text(row, source, line, "customer")
        rows = rows_of[customer] = rows_of.get(customer, 0) + 1
        if rows > cap:
            day = start.astimezone(STOCKHOLM).date()
            count = per_day[(customer, day)] = per_day.get((customer, day), 0) + 1
            if count > cap:
                raise CaseError(
                    f"{_where(source, line, 'customer')}: more than {cap} claim rows for "
                    f"{customer} on {day}; no day holds that many visits: the file is refused"
                )
        via = (row["registered_via"] or "").strip() or "manual"
        if via not in REGISTERED_VIA:
            raise CaseError(
                f"{_where(source, line, 'registered_via')}: {via!r} is not one of "
                f"{', '.join(sorted(REGISTERED_VIA))}"
            )
        claims.append(
            Claim(
                claim_id=claim_id,
                customer=shared(customer),
                staff=shared((row["staff"] or "").strip()),
                activity=shared(_text(row, source, line, "activity")),
                start=start,
                end=end,
                registered_via=shared(via),
                registered_at=when(row, line, "registered_at"),
                approved_at=when(row, line, "approved_at"),
                adjusted_at=when(row, line, "adjusted_at"),
                double_staffing=_flag(row["double_staffing"], source, line, "double_staffing"),
                count=_whole(row["count"], source, line, "count"),
                reason=shared((row["reason"] or "").strip()),
                planned_start=when(row, line, "planned_start"),
                planned_end=when(row, line, "planned_end"),
                notified_at=when(row, line, "notified_at"),
                proof=shared((row["proof"] or "").strip()),
                line=line,
            )
        )
    return claims
