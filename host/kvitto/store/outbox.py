"""Commands for devices that outlive a collector: the store's outbox (`kvitto command`).

    queue_command(store, "lock-0201", "revoke", {"creds": [cred]})   # checked, then queued
    # a running collector (`kvitto collect`) signs and sends it while the device is online,
    # again after a reconnect or every RESEND_AFTER_S until the device's journal shows it done

A command is signed only when it is sent (FORMATS.md §2: a sequence number and an expiry of a
few minutes), so a lock that is offline for a week still gets its `revoke` when it comes back.
It stays open until the device's own signed events show the outcome: a `health` event with
`allow`/`revoke` (the lock's allowlist changed) or `config` (applied, or refused with the
reason), a `clock_sync` from `cmd` for `time`. Those events are evidence like any other: the
case shows when a door stopped opening for a revoked badge. Commands to one device are obeyed
in the order sent, so the outcomes are matched to the open commands in queue order.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kvitto.errors import KvittoError
from kvitto.evidence.commands import sign_command
from kvitto.evidence.cose import split_sign1
from kvitto.store.db import OutboxRow, Store
from kvitto.store.registry import Registry


def next_command_seqs(store: Store, devices: list[str], now_ms: int | None = None) -> list[int]:
    """store.next_command_seq for each of `devices` in turn (one may come more than once): in
    SQLite, inside a transaction (whose write lock no other writer shares), one read and one
    write for them all (the collector's flush of acks); elsewhere one statement each."""
    floor = int(time.time() * 1000) if now_ms is None else now_ms
    if store.dialect != "sqlite" or not store.in_transaction:
        return [store.next_command_seq(device, floor) for device in devices]
    wanted = sorted(set(devices))
    last: dict[str, int] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        for device, seq in store.execute(
            f"SELECT device, last_seq FROM command_seq WHERE device IN ({marks})", chunk
        ):
            last[device] = int(seq)
    seqs = []
    for device in devices:
        seq = max(last[device] + 1, floor) if device in last else floor
        last[device] = seq
        seqs.append(seq)
    store.executemany(
        "INSERT INTO command_seq (device, last_seq) VALUES (?, ?) "
        "ON CONFLICT (device) DO UPDATE SET last_seq = excluded.last_seq",
        [(device, last[device]) for device in wanted],
    )
    return seqs


RESEND_AFTER_S = 60  # an open command goes again after this (it expires after 300 s)
# ack and resend are the collector's own; schedule and window open a lock's door (issue #23)
QUEUED_TYPES = ("allow", "revoke", "config", "time", "schedule", "window")
LOCK_TYPES = ("allow", "revoke", "schedule", "window")

# `config` settings and the roles a device accepts each for (docs/formats-v1-additions.md)
CONFIG_ROLES = {
    "debounce_ms": ("tag", "alarm"),
    "relock_ms": ("lock",),
    "answer_s": ("alarm",),
    "tag_mode": ("tag", "lock", "alarm"),
    "health_s": ("tag", "lock", "alarm"),
    "fallback": ("lock",),
    "door_open_s": ("lock",),
}


def queue_command(
    store: Store, device_id: str, command_type: str, x: dict[str, Any], at: int
) -> int:
    """Check a command as the device would and queue it; its outbox id. KvittoError names what
    is wrong: an unknown or revoked device, a setting the device's role has not, a lock
    command for a device that is no lock."""
    if command_type not in QUEUED_TYPES:
        known = ", ".join(QUEUED_TYPES)
        raise KvittoError(f"command {command_type!r}: one of {known} can be queued")
    device = Registry(store).device(device_id)
    if device is None:
        raise KvittoError(f"device {device_id!r} is not registered")
    if device.revoked:
        raise KvittoError(f"device {device_id!r} was revoked on {device.revoked}")
    if command_type in LOCK_TYPES and device.role != "lock":
        what = "an allowlist" if command_type in ("allow", "revoke") else "a door to open"
        raise KvittoError(f"device {device_id!r} is a {device.role}: only a lock has {what}")
    if command_type == "config":
        for name in x:
            roles = CONFIG_ROLES.get(name)
            if roles is not None and device.role not in roles:
                raise KvittoError(
                    f"config {name}: a {device.role} has no such setting "
                    f"(it is for {', '.join(roles)})"
                )
    probe = dict(x, t=0) if command_type == "time" else x
    sign_command(bytes(32), device_id, 1, 0, command_type, probe)  # checks x, keeps nothing
    return store.queue_command(device_id, command_type, x, at)


def lock_devices(store: Store) -> list[str]:
    """The registered locks that are not revoked: where a credential's revocation must go."""
    return [d.id for d in Registry(store).devices() if d.role == "lock" and not d.revoked]


def due(
    rows: Iterable[OutboxRow],
    now: int,
    online: dict[str, str],
    online_at: dict[str, int],
    resend_after_s: float = RESEND_AFTER_S,
) -> list[OutboxRow]:
    """The open commands to send now: never sent, sent before the device last came online,
    or sent `resend_after_s` ago without an outcome. Not to a device known to be offline (it
    would expire unread; it goes when the device's state says online)."""
    chosen = []
    for row in rows:
        if row.done_at is not None or online.get(row.device) == "offline":
            continue
        if (
            row.sent_at is None
            or row.sent_at < online_at.get(row.device, 0)
            or now - row.sent_at >= resend_after_s * 1000
        ):
            chosen.append(row)
    return chosen


def wire_x(row: OutboxRow, now: int) -> dict[str, Any]:
    """The command's x as sent: a `time` command carries the time of sending."""
    return {"t": now // 1000} if row.type == "time" else row.x


def outcome_of(row: OutboxRow, event_type: str, x: dict[str, Any]) -> str | None:
    """What a device event says of an open command of `row`'s kind, or None if nothing."""
    if row.type == "time":
        return "applied" if event_type == "clock_sync" and x.get("src") == "cmd" else None
    if event_type != "health" or row.type not in x:
        return None
    if x[row.type] == "refused":  # a config, schedule or window the device would not take
        detail = ": ".join(str(x[k]) for k in ("field", "error") if k in x)
        return f"refused: {detail}" if detail else "refused"
    return "applied"


def settle(store: Store, rows: list[OutboxRow], now: int) -> list[OutboxRow]:
    """Close the sent commands whose outcome the devices' stored events show; the closed ones.

    Per device, events after the last one that closed a command are read in sequence order
    and matched to the open commands in queue order (a device obeys its commands in the order
    they were sent); an event received before a command was queued cannot close it. Not
    "before it was sent": `sent_at` is the *last* send, and a resend taken while the outcome's
    batch was being committed (its `received_at` earlier than the resend, its row not yet
    visible to this query) left the command open for ever, the device having answered."""
    import cbor2

    closed: list[OutboxRow] = []
    by_device: dict[str, list[OutboxRow]] = {}
    for row in rows:
        if row.done_at is None and row.sent_at is not None:
            by_device.setdefault(row.device, []).append(row)
    for device, waiting in by_device.items():
        after = store.execute(
            "SELECT COALESCE(MAX(done_seq), 0) FROM outbox WHERE device = ?", (device,)
        )[0][0]
        events = store.execute(
            "SELECT seq, type, received_at, message FROM events WHERE device = ? AND seq > ? "
            "AND type IN ('health', 'clock_sync') AND received_at >= ? ORDER BY seq",
            (device, after, min(row.queued_at for row in waiting)),
        )
        for seq, event_type, received_at, message in events:
            _, _, payload, _ = split_sign1(bytes(message))
            x = cbor2.loads(payload).get(10) or {}
            for row in waiting:
                outcome = outcome_of(row, event_type, x) if received_at >= row.queued_at else None
                if outcome is not None:
                    if store.command_done(row.id, now, f"{outcome} (event {seq})", seq):
                        closed.append(row)
                    waiting.remove(row)
                    break
    return closed


def drop_revoked(store: Store, rows: list[OutboxRow], now: int) -> list[OutboxRow]:
    """Close the open commands of devices revoked since they were queued (a revoked device
    has no broker login and its events no longer count: nothing is left to tell it); the
    commands still open."""
    revoked = {d.id for d in Registry(store).devices() if d.revoked}
    for row in rows:
        if row.device in revoked:
            store.command_done(row.id, now, "cancelled: the device was revoked", None)
    return [row for row in rows if row.device not in revoked]


def cancel(store: Store, command_id: int, at: int) -> OutboxRow:
    rows = [row for row in store.outbox() if row.id == command_id]
    if not rows:
        raise KvittoError(f"outbox: no command {command_id}")
    if not store.command_done(command_id, at, "cancelled", None):
        raise KvittoError(f"outbox: command {command_id} is {rows[0].state} already")
    return rows[0]


# -- `kvitto command` ------------------------------------------------------------------------


def parse_setting(text: str) -> tuple[str, Any]:
    """SETTING=VALUE from the command line: an integer, true/false."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise KvittoError(f"setting {text!r}: write it as name=value, e.g. relock_ms=8000")
    if name not in CONFIG_ROLES:
        raise KvittoError(f"setting {name!r}: one of {', '.join(CONFIG_ROLES)}")
    lowered = value.strip().lower()
    if name == "fallback":
        return name, lowered  # open_for_allowed or deny, checked with the command
    if lowered in ("true", "false"):
        return name, lowered == "true"
    try:
        return name, int(value)
    except ValueError:
        raise KvittoError(f"setting {name}: {value!r} is not an integer or true/false") from None


def credential_ids(store: Store, credentials: Iterable[str], staff: Iterable[str]) -> list[bytes]:
    """Credential ids from --credential (32 hex digits) and --staff (their live credentials)."""
    registry = Registry(store)
    found: list[bytes] = []
    for text in credentials:
        try:
            cred = bytes.fromhex(text)
        except ValueError:
            cred = b""
        if len(cred) != 16:
            raise KvittoError(f"--credential {text!r}: a credential id is 32 hex digits")
        found.append(cred)
    for pseudonym in staff:
        live = [c for c in registry.credentials() if c.staff == pseudonym and not c.revoked]
        if not live:
            raise KvittoError(f"--staff {pseudonym!r}: no credential enrolled and not revoked")
        found += [bytes.fromhex(c.id) for c in live]
    if not found:
        raise KvittoError("name the credentials: --credential ID or --staff PSEUDONYM")
    return list(dict.fromkeys(found))


def describe(row: OutboxRow) -> dict[str, Any]:
    x = {k: [c.hex() for c in v] if k == "creds" else v for k, v in row.x.items()}
    return {
        "id": row.id, "device": row.device, "type": row.type, "x": x, "state": row.state,
        "queued_at": row.queued_at, "sent_at": row.sent_at, "attempts": row.attempts,
        "done_at": row.done_at, "outcome": row.outcome,
    }  # fmt: skip


def run_command(
    store_url: str,
    action: str,
    devices: list[str],
    x: dict[str, Any] | None = None,
    credentials: tuple[str, ...] = (),
    staff: tuple[str, ...] = (),
    all_locks: bool = False,
    output_format: str = "text",
    at: int | None = None,
) -> list[int]:
    """`kvitto command allow|revoke|config|time`: queue one command per device."""
    import json
    import time

    import click

    from kvitto.store.db import open_store

    at = int(time.time() * 1000) if at is None else at
    with open_store(store_url, create=False) as store:
        targets = list(dict.fromkeys(devices + (lock_devices(store) if all_locks else [])))
        if not targets:
            raise KvittoError("name the devices: --device ID" + (" or --all-locks" * all_locks))
        if action in ("allow", "revoke"):
            x = {"creds": credential_ids(store, credentials, staff)}
        with store.transaction():
            ids = [queue_command(store, device, action, dict(x or {}), at) for device in targets]
        rows = {row.id: row for row in store.outbox() if row.id in ids}
    if output_format == "json":
        click.echo(json.dumps([describe(rows[i]) for i in ids]))
    else:
        for command_id, device in zip(ids, targets):
            click.echo(f"queued {action} for {device} (command {command_id})")
        click.echo(
            "a running `kvitto collect --org-key …` sends it; `kvitto command list` follows it"
        )
    return ids


def run_list(store_url: str, device: str | None, open_only: bool, output_format: str) -> None:
    import datetime as dt
    import json

    import click

    from kvitto.store.db import open_store

    with open_store(store_url, create=False) as store:
        rows = store.outbox(open_only=open_only, device=device)
    if output_format == "json":
        click.echo(json.dumps([describe(row) for row in rows]))
        return

    def when(ms: int | None) -> str:
        if ms is None:
            return "-"
        return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")

    if not rows:
        click.echo("the outbox is empty" if not open_only else "no open commands")
    for row in rows:
        detail = describe(row)["x"]
        click.echo(
            f"{row.id:>5}  {row.device:<16} {row.type:<7} {row.state:<9} queued {when(row.queued_at)}"
            f"  sent {when(row.sent_at)} ×{row.attempts}  {row.outcome or json.dumps(detail)}"
        )


def run_cancel(store_url: str, command_id: int, output_format: str) -> None:
    import json
    import time

    import click

    from kvitto.store.db import open_store

    with open_store(store_url, create=False) as store:
        row = cancel(store, command_id, int(time.time() * 1000))
    if output_format == "json":
        click.echo(json.dumps({"id": row.id, "device": row.device, "state": "cancelled"}))
    else:
        click.echo(f"cancelled command {row.id} ({row.type} for {row.device})")
