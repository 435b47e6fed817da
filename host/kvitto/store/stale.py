"""Which customer-months changed since they were judged: the marks that make verdicts incremental.

    touch(store, [("c-1001", "2026-11", "2026-11-12")], claims=True)   # a claim, a decision
    touch_events(store, rows)                              # the collector, as it stores events
    stale(store, "web:p-1", "2026-11", customers)          # → {customer: Change} to re-judge
    keep(store, "web:p-1", "2026-11", {customer: (version, staff, inputs, findings)})

Each change bumps its customer-month's version in `touched`; a judge that re-judges a customer
writes the version it read before reading the inputs to `kept`. A customer-month is stale while
`touched` is ahead of `kept`, so a change made while a judge runs is judged again next time,
and several judges (the web app's per provider, `kvitto verify` per profile) each keep their
own versions. Rules are per customer-month (kvitto.verify.rules); which other customers a
change reaches (a household, a staff member's other customers) is the judge's business
(kvitto.verify.incremental), not the marker's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from kvitto.store.db import EventRow, Store

STOCKHOLM = ZoneInfo("Europe/Stockholm")
# An event's time reaches visits a day and more away: a device's time is re-anchored by a
# clock sync up to max_sync_age_s (24 h by default, kvitto.verify.visits) later, and a visit
# can begin before midnight. The marks cover that much on either side of the event's time.
EVENT_REACH = timedelta(hours=26)
# An event without device time (never synchronised) is judged by its receipt: it happened
# before it arrived, as long before as a device journals through an outage.
UNTIMED_REACH = timedelta(days=31)


def local_day(moment: datetime) -> str:
    return f"{moment.astimezone(STOCKHOLM):%Y-%m-%d}"


def touch(store: Store, marks: Iterable[tuple[str, str, str]], claims: bool = False) -> int:
    """Bump the version of each (customer, month) of `marks` (customer, month, day) once;
    `claims`: the change is to claims (or their outcome), not only to evidence. Returns how
    many customer-months were marked."""
    latest: dict[tuple[str, str], str] = {}
    for customer, month, day in marks:
        if customer and month:
            key = (customer, month)
            latest[key] = max(latest.get(key, ""), day)
    if not latest:
        return 0
    # one lock order for every writer (collectors, web workers): fewer deadlocks
    store.executemany(
        "INSERT INTO touched (customer, month, version, claims, day) VALUES (?, ?, 1, ?, ?) "
        "ON CONFLICT (customer, month) DO UPDATE SET version = touched.version + 1, "
        "claims = CASE WHEN excluded.claims > 0 THEN touched.version + 1 "
        "ELSE touched.claims END, day = excluded.day",
        [(customer, month, int(claims), day) for (customer, month), day in sorted(latest.items())],
    )
    return len(latest)


def month_after(month: str) -> str:
    """'2026-11' -> '2026-12': a claim's change also marks the next month when a rule of it
    reads the month before (X6 counts an urgent need across the month's start; the judge
    says when, kvitto.verify.rules.absence.reaches_next_month)."""
    year, number = int(month[:4]), int(month[5:7])
    return f"{year + 1:04d}-01" if number == 12 else f"{year:04d}-{number + 1:02d}"


def event_marks(customer: str, t: int | None, received_at: int) -> list[tuple[str, str, str]]:
    """The customer-months one event can change (see EVENT_REACH, UNTIMED_REACH)."""
    if t is not None:
        moment = datetime.fromtimestamp(t, timezone.utc)
        before, after = moment - EVENT_REACH, moment + EVENT_REACH
    else:
        moment = after = datetime.fromtimestamp(received_at / 1000, timezone.utc)
        before = after - UNTIMED_REACH
    months, cursor = {local_day(after)[:7]}, before
    while cursor < after:
        months.add(local_day(cursor)[:7])
        cursor += timedelta(days=1)
    day = local_day(moment)
    return [(customer, month, day) for month in sorted(months)]


def touch_events(store: Store, rows: Sequence[EventRow]) -> int:
    """Mark the customer-months of newly stored events (by their device's customer; a shared
    entrance lock's, issue #23, by each customer it serves: its events give their claims a
    reason, E1 entrance_only)."""
    if not rows:
        return 0
    devices = sorted({row.device for row in rows})
    owner: dict[str, list[str]] = {}
    for start in range(0, len(devices), 500):
        chunk = devices[start : start + 500]
        found = store.execute(
            f"SELECT id, customer FROM devices WHERE id IN ({', '.join('?' * len(chunk))})",
            tuple(chunk),
        )
        owner.update({str(device): [str(customer)] for device, customer in found})
        served: dict[str, list[str]] = {}
        for device, customer in store.execute(
            f"SELECT device, customer FROM device_customers WHERE device IN "
            f"({', '.join('?' * len(chunk))})",
            tuple(chunk),
        ):
            served.setdefault(str(device), []).append(str(customer))
        owner.update(served)
    marks: list[tuple[str, str, str]] = []
    seen: set[tuple[str, int | None, int]] = set()
    for row in rows:
        for customer in owner.get(row.device, ()):
            # events of one device within an hour mark the same months
            hour = None if row.t is None else row.t // 3600
            key = (customer, hour, row.received_at // 3_600_000)
            if key not in seen:
                seen.add(key)
                marks += event_marks(customer, row.t, row.received_at)
    return touch(store, marks)


def touch_provider_month(store: Store, provider: str, month: str, day: str) -> int:
    """Mark every customer of a provider in a month (an attestation changes all its claims)."""
    rows = store.execute("SELECT customer FROM customer_providers WHERE provider = ?", (provider,))
    return touch(store, [(str(row[0]), month, day) for row in rows], claims=True)


class Change(NamedTuple):
    version: int  # the customer-month's touched version
    claims: bool  # its claims changed since the judge kept it (not only its evidence)


def stale(
    store: Store, scope: str, month: str, customers: Iterable[str] | None = None
) -> dict[str, Change]:
    """customer → its Change, for the customers of the month (of `customers`, when given) that
    `scope` has not judged at their touched version."""
    rows = store.execute(
        "SELECT t.customer, t.version, t.claims, k.version FROM touched t LEFT JOIN kept k "
        "ON k.scope = ? AND k.month = t.month AND k.customer = t.customer "
        "WHERE t.month = ? AND (k.version IS NULL OR k.version < t.version)",
        (scope, month),
    )
    found = {
        str(customer): Change(int(version), kept is None or int(claims) > int(kept))
        for customer, version, claims, kept in rows
    }
    if customers is not None:
        wanted = set(customers)
        found = {c: v for c, v in found.items() if c in wanted}
    return found


def versions(store: Store, month: str, customers: Iterable[str] | None = None) -> dict[str, int]:
    """customer → touched version in the month (0 for a customer never touched)."""
    rows = store.execute("SELECT customer, version FROM touched WHERE month = ?", (month,))
    found = {str(customer): int(version) for customer, version in rows}
    if customers is None:
        return found
    return {c: found.get(c, 0) for c in customers}


def kept(store: Store, scope: str, month: str) -> dict[str, dict[str, Any]]:
    """customer → what `scope` kept for the month: version, staff (a list), inputs, findings
    (decoded JSON, None when not kept here)."""
    rows = store.execute(
        "SELECT customer, version, staff, inputs, findings FROM kept "
        "WHERE scope = ? AND month = ?",
        (scope, month),
    )
    # a staff list is decoded once per distinct text (a month's customers share their staff's:
    # the live judge reads the whole month's every round, kvitto.web.live)
    decoded: dict[str, list[str]] = {}
    out = {}
    for customer, version, staff, inputs, findings in rows:
        names = decoded.get(staff)
        if names is None:
            names = decoded[staff] = json.loads(staff)
        out[str(customer)] = {
            "version": int(version),
            "staff": list(names),
            "inputs": str(inputs),
            "findings": json.loads(findings) if findings else None,
        }
    return out


def keep(
    store: Store,
    scope: str,
    month: str,
    judged: dict[str, tuple[int, list[str], str, Any]],
    replace_all: bool = False,
) -> None:
    """Write what was judged: customer → (version read before judging, staff of its claims,
    inputs digest, findings as JSON-able data or None). `replace_all`: the month was judged
    whole, so customers not in `judged` are forgotten."""
    with store.transaction():
        if replace_all:
            store.execute("DELETE FROM kept WHERE scope = ? AND month = ?", (scope, month))
        else:
            names = sorted(judged)
            for start in range(0, len(names), 500):
                chunk = names[start : start + 500]
                store.execute(
                    f"DELETE FROM kept WHERE scope = ? AND month = ? AND customer IN "
                    f"({', '.join('?' * len(chunk))})",
                    (scope, month, *chunk),
                )
        store.executemany(
            "INSERT INTO kept (scope, month, customer, version, staff, inputs, findings) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (scope, month, customer, version, json.dumps(sorted(staff)), inputs,
                 "" if findings is None else json.dumps(findings, ensure_ascii=False))
                for customer, (version, staff, inputs, findings) in sorted(judged.items())
            ],
        )  # fmt: skip
