"""Shared entrance locks (issue #23): a `lock` at a block's main entrance bound to a building and
the customers it serves (Haninge 003: "flerfamiljshus … digitalt lås vid huvudentrén").

    add_entrance_lock(registry, "lock-b7", "b-7", ["c-1", "c-2", "c-3"], public_key)

Its schedule is the union of its customers' visit windows (kvitto.store.schedules); its events
are access records, never presence for any customer (RULES E6, kvitto.verify.visits).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from zoneinfo import ZoneInfo

from kvitto.errors import KvittoError
from kvitto.evidence.cose import DEVICE_ID

# A building id is a pseudonym like a customer's (store.registry's PSEUDONYM; not imported from
# there: the registry's TOML import calls this module)
BUILDING = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_same_board(existing: Any, public_key: bytes) -> None:
    """A device registered again (provisioning re-run) must be the same, unrevoked board."""
    if existing.revoked:
        raise KvittoError(f"device {existing.id} was revoked on {existing.revoked}")
    if existing.public_key != public_key:
        raise KvittoError(
            f"device {existing.id} is registered with another public key; "
            "revoke it and register the board under a new id"
        )


def add_entrance_lock(
    registry: Any,  # kvitto.store.registry.Registry
    device_id: str,
    building: str,
    customers: list[str],
    public_key: bytes,
    installed: str | None = None,
) -> Any:
    """Register a lock at a building's main entrance serving several customers (issue #23,
    Haninge 003). Its events are access records, never a customer's presence (RULES E6).
    The same building and customers again change nothing; customers may be added."""
    if not DEVICE_ID.fullmatch(device_id):
        raise KvittoError(f"device id {device_id!r} must match [a-z0-9-]{{3,32}}")
    if not BUILDING.fullmatch(building):
        raise KvittoError(f"device {device_id}: building {building!r} is not a pseudonym")
    if not customers:
        raise KvittoError(f"device {device_id}: an entrance lock serves at least one customer")
    if len(public_key) != 32:
        raise KvittoError(f"device {device_id}: an Ed25519 public key is 32 bytes")
    installed = installed or dt.datetime.now(ZoneInfo("Europe/Stockholm")).date().isoformat()
    try:
        dt.datetime.fromisoformat(installed)
    except ValueError:
        raise KvittoError(f"device {device_id}: installed {installed!r} is no ISO date") from None
    customers = list(dict.fromkeys(customers))
    with registry.store.transaction():
        for customer in customers:
            if registry.customer(customer) is None:
                raise KvittoError(f"device {device_id}: customer {customer!r} is not registered")
        existing = registry.device(device_id)
        if existing is not None:
            if existing.building != building:
                bound = existing.building or f"customer {existing.customer}"
                raise KvittoError(
                    f"device {device_id} is bound to {bound}; it cannot be re-bound to "
                    f"building {building} (install a new device instead)"
                )
            check_same_board(existing, public_key)
        else:
            # devices.customer references customers: the first one stands there; readers
            # take the building's list (migration 7)
            registry.store.execute(
                "INSERT INTO devices (id, customer, role, public_key, installed, revoked, "
                "building) VALUES (?, ?, 'lock', ?, ?, '', ?)",
                (device_id, customers[0], public_key, installed, building),
            )
        held = set(existing.customers) if existing is not None else set()
        for customer in customers:
            if customer not in held:
                registry.store.execute(
                    "INSERT INTO device_customers (device, customer) VALUES (?, ?)",
                    (device_id, customer),
                )
    found = registry.device(device_id)
    assert found is not None
    return found
