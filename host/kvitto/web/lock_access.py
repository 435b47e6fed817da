"""The day board's digital locks (issue #23): a lock that refused staff outside the customer's
visit windows is flagged, and a coordinator grants a one-off window for an unplanned visit.

    mark_locks(store, board_rows, begin, end)          # adds "locks" and ("outside", at) flags
    grant(scope, "c-1001", "14:30", 60, "extra besök")  # queued signed `window` + a record

The grant is the same signed `window` command as `kvitto command window` (queued in the outbox,
sent by the collector, closed by the lock's own signed event) and a `lock_window` record in the
provider's chain (docs/formats.md, records.jsonl), so the log shows who opened which door when.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

import cbor2

from kvitto.errors import KvittoError
from kvitto.evidence.cose import split_sign1
from kvitto.store.db import Store
from kvitto.store.outbox import queue_command
from kvitto.store.schedules import window_x
from kvitto.verify.workdays import local, local_at
from kvitto.web import records as chain
from kvitto.web.personnummer import find_personnummer
from kvitto.web.visibility import Refused, Visibility, moment, ms

GRANT_MINUTES = (15, 30, 60, 120, 240)
# why a grant is refused: the code travels in the redirect, the page shows the text
GRANT_REFUSALS = {
    "minutes": "Välj hur länge låset ska öppnas.",
    "pnr": "Skriv aldrig personnummer i kvitto.",
    "time": "Ange starttid som TT:MM.",
    "nolock": "Kunden har inget digitalt lås.",
    "past": "Tiden har redan passerat.",
}


def _locks(store: Store, customers: list[str]) -> dict[str, list[str]]:
    marks = ", ".join("?" * len(customers)) or "''"
    rows = store.execute(
        f"SELECT id, customer FROM devices WHERE role = 'lock' AND revoked = '' "
        f"AND customer IN ({marks}) ORDER BY id",
        tuple(customers),
    )
    found: dict[str, list[str]] = {}
    for device, customer in rows:
        found.setdefault(str(customer), []).append(str(device))
    return found


def mark_locks(store: Store, rows: list[dict[str, Any]], begin: datetime, end: datetime) -> None:
    """Per board row: `locks` (the customer's locks, for the grant form) and a flag
    ("outside", time) for each of their denials with reason `outside_window` that day."""
    locks = _locks(store, [row["customer"] for row in rows])
    devices = {device: customer for customer, ids in locks.items() for device in ids}
    outside: dict[str, list[datetime]] = {}
    if devices:
        marks = ", ".join("?" * len(devices))
        denials = store.execute(
            f"SELECT device, t, message FROM events WHERE device IN ({marks}) AND type = 'deny' "
            "AND t >= ? AND t < ? ORDER BY t",
            (*devices, int(begin.timestamp()), int(end.timestamp())),
        )
        for device, t, message in denials:
            x = cbor2.loads(split_sign1(bytes(message))[2]).get(10) or {}
            if x.get("reason") == "outside_window":
                outside.setdefault(devices[str(device)], []).append(moment(int(t) * 1000))
    for row in rows:
        row["locks"] = locks.get(row["customer"], [])
        row["flags"] += [("outside", at) for at in outside.get(row["customer"], [])]


def grant(scope: Visibility, customer: str, start: str, minutes: int, text: str) -> chain.Record:
    """A one-off window on the customer's locks from `start` (HH:MM today, Stockholm) for
    `minutes`; Refused with a code of GRANT_REFUSALS."""
    provider = scope.own
    scope.customer_provider(customer)  # NotFound outside the coordinator's customers
    if minutes not in GRANT_MINUTES:
        raise Refused("minutes")
    if find_personnummer(text):
        raise Refused("pnr")
    text = text.strip()[:200]
    try:
        hour, minute = (int(part) for part in start.split(":"))
        begins = local_at(local(scope.now).date(), time(hour, minute))
    except ValueError:
        raise Refused("time") from None
    ends = begins + timedelta(minutes=minutes)
    locks = _locks(scope.store, [customer]).get(customer, [])
    if not locks:
        raise Refused("nolock")
    try:
        x = window_x(int(begins.timestamp()), int(ends.timestamp()), int(scope.now.timestamp()))
    except KvittoError:
        raise Refused("past") from None
    with scope.store.transaction():  # the commands and their record, or neither
        commands = [queue_command(scope.store, lock, "window", dict(x), ms(scope.now))
                    for lock in locks]  # fmt: skip
        body = {"devices": locks, "commands": commands, "text": text,
                "start": local(begins).isoformat(timespec="minutes"),
                "end": local(ends).isoformat(timespec="minutes")}  # fmt: skip
        return chain.append(
            scope.store, chain=provider, actor=scope.user.name, kind="lock_window",
            at=ms(scope.now), body=body, provider=provider,
            municipality=scope.user.municipality, customer=customer,
        )  # fmt: skip
