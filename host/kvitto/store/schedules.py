"""Visit windows for locks (issue #23): a lock's signed `schedule` built from the planned visits
(docs/formats.md plan.csv v1, `kvitto import-plan`) and a coordinator's one-off `window` grant,
both queued in the outbox (kvitto.store.outbox) like any other command.

    x = schedule_x(store, "lock-0201", now_ms, days=7, tolerance_s=900)
    queue_command(store, "lock-0201", "schedule", x, now_ms)     # sent by `kvitto collect`

The lock takes a schedule only if its `issued` is above the one it holds, so an older schedule
sent later (a restored database, a stale outbox) never replaces a newer one; `issued` is the
queueing time in ms, kept strictly increasing per device here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvitto.errors import KvittoError
from kvitto.evidence.commands import SCHEDULE_MAX_WINDOWS, WINDOW_MAX_S
from kvitto.store.db import Store
from kvitto.store.outbox import describe, queue_command
from kvitto.store.registry import Registry

DEFAULT_DAYS = 7
# A lock's tolerance in minutes and where it came from ("profile haninge"), for its customers:
# the CLI resolves it from the municipality profiles (kvitto.verify), which store may not import.
ToleranceOf = Callable[[Store, list[str]], tuple[int, str]]


def lock_customers(store: Store, device_id: str) -> list[str]:
    """The customers whose planned visits open this lock: its customer, or all the customers
    of a shared entrance lock (its schedule is the union of their windows)."""
    device = Registry(store).device(device_id)
    if device is None:
        raise KvittoError(f"device {device_id!r} is not registered")
    if device.role != "lock":
        raise KvittoError(f"device {device_id!r} is a {device.role}: only a lock has a schedule")
    return list(device.served)


def customer_municipalities(store: Store, customers: list[str]) -> dict[str, str]:
    """The municipality (profile name) of each customer's provider; '' for a customer no
    provider serves yet (`kvitto provider add … --customer`)."""
    marks = ", ".join("?" for _ in customers) or "''"
    rows = store.execute(
        "SELECT cp.customer, p.municipality FROM customer_providers cp "
        f"JOIN providers p ON p.id = cp.provider WHERE cp.customer IN ({marks})",
        tuple(customers),
    )
    found = {str(customer): str(municipality) for customer, municipality in rows}
    return {customer: found.get(customer, "") for customer in customers}


def planned_windows(
    store: Store, customers: list[str], begin_ms: int, end_ms: int
) -> list[list[int]]:
    """[start, end] in Unix seconds of the planned visits overlapping [begin, end), the
    overlapping ones merged (two providers' plans for one morning are one window)."""
    marks = ", ".join("?" for _ in customers)
    rows = store.execute(
        f"SELECT start_at, end_at FROM plan WHERE customer IN ({marks}) AND end_at >= ? "
        "AND start_at < ? ORDER BY start_at, end_at",
        (*customers, begin_ms, end_ms),
    )
    windows: list[list[int]] = []
    for start_ms, end_ms_row in rows:
        start, end = int(start_ms) // 1000, -(-int(end_ms_row) // 1000)
        end = min(
            end, start + WINDOW_MAX_S
        )  # a plan row over a day is cut to one (the lock's bound)
        if windows and start <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], end)
        else:
            windows.append([start, end])
    return windows


def _next_issued(store: Store, device_id: str, now_ms: int) -> int:
    held = [
        row.x.get("issued", 0) for row in store.outbox(device=device_id) if row.type == "schedule"
    ]
    return max([now_ms, *(int(value) + 1 for value in held)])


def schedule_x(
    store: Store, device_id: str, now_ms: int, days: int, tolerance_s: int
) -> dict[str, Any]:
    """The `schedule` command's x for a lock: its customers' planned visits from now for
    `days` days, `tolerance_s` either side; KvittoError if it cannot be sent as one command."""
    if not 1 <= days <= 31:
        raise KvittoError(f"--days {days}: from 1 to 31")
    if not 0 <= tolerance_s <= 7200:
        raise KvittoError(f"--tolerance-min {tolerance_s // 60}: from 0 to 120 minutes")
    until_ms = now_ms + days * 86_400_000
    windows = planned_windows(store, lock_customers(store, device_id), now_ms, until_ms)
    if len(windows) > SCHEDULE_MAX_WINDOWS:
        raise KvittoError(
            f"{device_id}: {len(windows)} planned visits in {days} days; a lock holds at most "
            f"{SCHEDULE_MAX_WINDOWS}: send fewer --days"
        )
    return {
        "issued": _next_issued(store, device_id, now_ms),
        "until": until_ms // 1000,
        "tol": tolerance_s,
        "w": windows,
    }


def window_x(start_s: int, end_s: int, now_s: int) -> dict[str, Any]:
    """A one-off grant's x; KvittoError for a window that is over, reversed or over a day."""
    if end_s <= start_s:
        raise KvittoError("--end must be after --start")
    if end_s - start_s > WINDOW_MAX_S:
        raise KvittoError("a one-off window is at most a day long")
    if end_s < now_s:
        raise KvittoError("the window is over already")
    return {"start": start_s, "end": end_s}


def run_schedule(
    store_url: str,
    devices: list[str],
    days: int,
    tolerance_min: int | None,
    output_format: str = "text",
    at: int | None = None,
    tolerance_of: ToleranceOf | None = None,
) -> list[int]:
    """`kvitto command schedule`: one schedule per lock, from the plan in the store. The
    tolerance is `tolerance_min` when given, else `tolerance_of` the lock's customers (their
    municipality's profile); the output says which."""
    import json
    import time

    import click

    from kvitto.store.db import open_store

    at = int(time.time() * 1000) if at is None else at
    if not devices:
        raise KvittoError("name the locks: --device ID")
    with open_store(store_url, create=False) as store:
        with store.transaction():
            queued = []
            for device in dict.fromkeys(devices):
                if tolerance_min is not None:
                    minutes, given = tolerance_min, "--tolerance-min"
                elif tolerance_of is not None:
                    minutes, given = tolerance_of(store, lock_customers(store, device))
                else:
                    raise KvittoError("give --tolerance-min")
                x = schedule_x(store, device, at, days, minutes * 60)
                command_id = queue_command(store, device, "schedule", x, at)
                queued.append((command_id, device, x, given))
        rows = {row.id: row for row in store.outbox() if row.id in {q[0] for q in queued}}
    if output_format == "json":
        described = [
            {**describe(rows[command_id]), "tolerance_from": given}
            for command_id, _, _, given in queued
        ]
        click.echo(json.dumps(described))
        return [command_id for command_id, _, _, _ in queued]
    for command_id, device, x, given in queued:
        count = len(x["w"])
        click.echo(
            f"queued schedule for {device} (command {command_id}): {count} planned "
            f"visit window(s) in {days} days, ±{x['tol'] // 60} min ({given})"
        )
        if not count:
            click.echo(f"  note: no planned visits: {device} opens only for a one-off window")
    click.echo("a running `kvitto collect --org-key …` sends it; `kvitto command list` follows it")
    return [command_id for command_id, _, _, _ in queued]


def run_window(
    store_url: str,
    devices: list[str],
    start_s: int,
    end_s: int,
    output_format: str = "text",
    at: int | None = None,
) -> list[int]:
    """`kvitto command window`: a one-off grant on each lock; the outbox row is its audit."""
    import json
    import time

    import click

    from kvitto.store.db import open_store

    at = int(time.time() * 1000) if at is None else at
    if not devices:
        raise KvittoError("name the locks: --device ID")
    x = window_x(start_s, end_s, at // 1000)
    with open_store(store_url, create=False) as store:
        with store.transaction():
            for device in devices:
                lock_customers(store, device)  # a lock, registered
            ids = [queue_command(store, device, "window", dict(x), at) for device in devices]
        rows = {row.id: row for row in store.outbox() if row.id in ids}
    if output_format == "json":
        click.echo(json.dumps([describe(rows[i]) for i in ids]))
    else:
        for command_id, device in zip(ids, devices):
            click.echo(f"queued a one-off window for {device} (command {command_id})")
    return ids
