"""Alarm-opened access (issue #23): while a customer's alarm is open (its call stored, no
check-out yet), the customer's locks open for the credentials of the provider on alarm duty,
whatever the schedule. The collector calls `grant_alarms` in the transaction that stores new
events: for an `alarm_call` it queues on each lock serving the customer (its own door, and a
building's entrance lock) a signed `window` naming the call event and those credentials; for
the `alarm_checkout` that answers it, the same alarm again ending at the check-out, which closes
it. The lock's unlock names the call event (`alarm`), so alarm and unlock are linked in the
evidence. docs/decisions.md says why it is done this way.

    queued = grant_alarms(store, new_rows)      # outbox ids; nothing for other events
"""

from __future__ import annotations

from collections.abc import Iterable

import cbor2

from kvitto.errors import KvittoError
from kvitto.evidence.commands import ALARM_MAX_CREDS
from kvitto.evidence.cose import EvidenceError, split_sign1
from kvitto.store.db import EventRow, Store
from kvitto.store.outbox import queue_command
from kvitto.store.registry import Registry

ALARM_OPEN_S = 4 * 3600  # an alarm never checked out stops opening doors after this


def grant_alarms(store: Store, rows: Iterable[EventRow]) -> list[int]:
    """Queue the alarm grants and closings the new `rows` call for; their outbox ids."""
    alarms = [r for r in rows if r.type in ("alarm_call", "alarm_checkout")]
    if not alarms:
        return []
    registry = Registry(store)
    queued: list[int] = []
    for row in sorted(alarms, key=lambda r: (r.device, r.seq)):
        device = registry.device(row.device)
        number = _alarm_number(row.message)
        if device is None or device.role != "alarm" or not device.customer or number is None:
            continue
        locks = [
            d.id
            for d in registry.devices()
            if d.role == "lock" and not d.revoked and device.customer in d.served
        ]
        if row.type == "alarm_call":
            creds = duty_credentials(store, device.customer)
            if not creds:
                continue  # no provider on alarm duty: the schedule alone decides
            start = _moment(row)
            x = {"start": start, "end": start + ALARM_OPEN_S, "creds": creds}
            ref = _name(row.device, row.seq)
        else:
            call = _call_of(store, row, number)
            if call is None:
                continue
            ref = _name(row.device, call.seq)
            start = _moment(call)
            x = {"start": start, "end": max(start, _moment(row)), "creds": []}
        for lock in locks:
            if row.type == "alarm_checkout" and not _granted(store, lock, ref):
                continue
            try:
                queued.append(
                    queue_command(store, lock, "window", dict(x, alarm=ref), row.received_at)
                )
            except KvittoError:
                continue  # a lock the outbox refuses (revoked meanwhile): nothing to open
    return queued


def duty_credentials(store: Store, customer: str) -> list[bytes]:
    """Credential ids of the providers on alarm duty in the municipality of the customer's
    provider (providers.alarm_duty), unrevoked, at most ALARM_MAX_CREDS (the first by id)."""
    rows = store.execute(
        "SELECT c.id FROM credentials c JOIN providers d ON d.id = c.provider "
        "JOIN providers p ON p.municipality = d.municipality "
        "JOIN customer_providers cp ON cp.provider = p.id "
        "WHERE cp.customer = ? AND d.alarm_duty = 1 AND c.revoked = '' ORDER BY c.id",
        (customer,),
    )
    return [bytes.fromhex(credential) for (credential,) in rows[:ALARM_MAX_CREDS]]


def _name(device: str, seq: int) -> str:
    return f"{device} #{seq}"  # how the project names an event (kvitto.verify.taps)


def _moment(row: EventRow) -> int:
    return row.t if isinstance(row.t, int) else row.received_at // 1000


def _alarm_number(message: bytes) -> int | None:
    try:
        x = cbor2.loads(split_sign1(message)[2]).get(10) or {}
    except (EvidenceError, ValueError, TypeError, AttributeError, cbor2.CBORDecodeError):
        return None
    number = x.get("alarm") if isinstance(x, dict) else None
    return number if isinstance(number, int) else None


def _call_of(store: Store, checkout: EventRow, number: int) -> EventRow | None:
    """The stored `alarm_call` of this boot with the check-out's call number."""
    for seq, t, received_at, message in store.execute(
        "SELECT seq, t, received_at, message FROM events WHERE device = ? AND boot = ? AND "
        "type = 'alarm_call' AND seq < ? ORDER BY seq DESC",
        (checkout.device, checkout.boot, checkout.seq),
    ):
        if _alarm_number(bytes(message)) == number:
            return EventRow(checkout.device, seq, checkout.boot, 0, t, None, "alarm_call", None,
                            b"", bytes(message), received_at)  # fmt: skip
    return None


def _granted(store: Store, lock: str, ref: str) -> bool:
    return any(
        row.type == "window" and row.x.get("alarm") == ref for row in store.outbox(device=lock)
    )
