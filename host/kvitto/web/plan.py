"""The plan file (docs/formats.md "plan.csv v1"): the visits a provider's planning system
planned, for the day board's "no arrival 30 minutes after the planned start".

    count = import_plan(store, "p-1", Path("plan.csv"), now_ms)   # CaseError names line/field

Columns `customer,start,end,activities`; `activities` holds the profile's activity codes
separated by `;`. A new import replaces the provider's plan for every day the file covers (a
plan changes; it is not evidence and not a claim), and leaves other days alone. All or nothing.
"""

from __future__ import annotations

import csv
import io
from datetime import time, timedelta
from pathlib import Path

from kvitto.store.db import Store
from kvitto.verify.case import CaseError, parse_time
from kvitto.verify.workdays import local, local_at
from kvitto.web.personnummer import find_personnummer

PLAN_FIELDS = ("customer", "start", "end", "activities")


def import_plan(store: Store, provider: str, path: Path, now_ms: int = 0) -> int:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise CaseError(f"{path}: {error.strerror or error}") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [name for name in PLAN_FIELDS if name not in (reader.fieldnames or [])]
    if missing:
        raise CaseError(
            f"{path} line 1: missing column {missing[0]} (need {','.join(PLAN_FIELDS)})"
        )
    served = {
        str(row[0])
        for row in store.execute(
            "SELECT customer FROM customer_providers WHERE provider = ?", (provider,)
        )
    }
    rows = []
    for line, row in enumerate(reader, start=2):
        where = f"{path} line {line}"
        for name in PLAN_FIELDS:
            if find_personnummer(row.get(name) or ""):
                raise CaseError(f"{where}, field {name}: a personal identity number")
        customer = (row.get("customer") or "").strip()
        if customer not in served:
            raise CaseError(
                f"{where}, field customer: {customer!r} is not a customer of {provider}"
            )
        try:
            start = parse_time(row.get("start") or "")
        except ValueError:
            raise CaseError(f"{where}, field start: not a time (YYYY-MM-DDTHH:MM)") from None
        try:
            end = parse_time(row.get("end") or "")
        except ValueError:
            raise CaseError(f"{where}, field end: not a time (YYYY-MM-DDTHH:MM)") from None
        if end < start:
            raise CaseError(f"{where}, field end: before start")
        activities = ";".join(
            a.strip() for a in (row.get("activities") or "").split(";") if a.strip()
        )
        rows.append((customer, start, end, activities))
    days = sorted({local(start).date() for _, start, _, _ in rows})
    with store.transaction():
        for day in days:
            begin = local_at(day, time(0))
            end = local_at(day + timedelta(days=1), time(0))
            store.execute(
                "DELETE FROM plan WHERE provider = ? AND start_at >= ? AND start_at < ?",
                (provider, int(begin.timestamp() * 1000), int(end.timestamp() * 1000)),
            )
        store.executemany(
            "INSERT INTO plan (provider, customer, start_at, end_at, activities, imported_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(provider, customer, int(start.timestamp() * 1000), int(end.timestamp() * 1000),
              activities, now_ms) for customer, start, end, activities in rows],
        )  # fmt: skip
    return len(rows)
