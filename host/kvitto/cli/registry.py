"""`kvitto` commands over the registry and the devices' command outbox: enroll, revoke,
registry list, and the `command` group (allow, revoke, config, time, schedule, window, list,
cancel). Each calls kvitto.install.enroll, kvitto.store.registry, kvitto.store.outbox or
kvitto.store.schedules.
"""

from __future__ import annotations

import click

from kvitto.cli.options import CREDENTIALS, DEVICES, FORMAT, REGISTRY, STAFF, STORE
from kvitto.errors import KvittoError


@click.command()
@REGISTRY
@click.option("--pki", "pki_dir", required=True, help="`kvitto pki` folder (credential salt).")
@click.option("--staff", required=True, help="Staff pseudonym, e.g. s-07.")
@click.option("--provider", required=True, help="Provider pseudonym, e.g. p-1.")
@click.option("--badge", default=None, help="Badge UID typed in hex (04:A1:B2:C3).")
@click.option("--ntag424", default=None, help="NTAG 424 DNA badge UID (7 bytes hex).")
@click.option("--phone-key", default=None, help="Phone app's Ed25519 public key (hex).")
@click.option("--show-keys", is_flag=True, help="Print the NTAG 424 keys to personalise with.")
@click.option(
    "--lock", "locks", multiple=True, help="A lock it may open: `allow` is queued (repeatable)."
)
@click.option("--all-locks", is_flag=True, help="Queue `allow` for every registered lock.")
@FORMAT
def enroll(
    store_url, pki_dir, staff, provider, badge, ntag424, phone_key, show_keys, locks, all_locks,
    output_format,
) -> None:  # fmt: skip
    """Enroll a staff credential: badge UID, NTAG 424 DNA or provider-owned phone."""
    from kvitto.install.enroll import run_enroll

    run_enroll(
        store_url, pki_dir, staff, provider, badge, ntag424, phone_key, show_keys, output_format,
        locks=list(locks), all_locks=all_locks,
    )  # fmt: skip


@click.command()
@REGISTRY
@click.option("--device", default=None, help="Device id to revoke.")
@click.option("--credential", default=None, help="Credential id (32 hex digits) to revoke.")
@click.option(
    "--staff",
    default=None,
    help="Staff pseudonym: revoke all their live credentials (someone leaving).",
)
@click.option("--when", default=None, help="Revoked from (ISO date or time; default today).")
@FORMAT
def revoke(store_url, device, credential, staff, when, output_format) -> None:
    """Revoke a device, a credential or a staff member's credentials (kept, never deleted)."""
    from kvitto.install.enroll import run_revoke

    run_revoke(store_url, device, credential, when, output_format, staff=staff)


@click.group()
def registry() -> None:
    """What the registry holds: devices, staff credentials, customers."""


@registry.command("list")
@click.argument("what", type=click.Choice(["devices", "staff", "customers"]))
@REGISTRY
@FORMAT
def registry_list(what, store_url, output_format) -> None:
    """List the registry's devices, staff credentials or customers (revoked ones marked)."""
    from kvitto.store.registry import run_list

    run_list(store_url, what, output_format)


@click.group()
def command() -> None:
    """Queue signed commands for devices: lock allowlists and visit windows, settings, time.

    The store keeps them until the device's own events show them obeyed (or refused); a
    running `kvitto collect --org-key` signs and sends them whenever the device is online."""


@command.command("allow")
@STORE
@DEVICES
@CREDENTIALS
@STAFF
@FORMAT
def command_allow(store_url, devices, credentials, staff, output_format) -> None:
    """Let credentials open these locks (their allowlists on flash; works offline)."""
    from kvitto.store.outbox import run_command

    run_command(store_url, "allow", list(devices), None, credentials, staff, False, output_format)


@command.command("revoke")
@STORE
@DEVICES
@click.option("--all-locks", is_flag=True, help="Every registered lock that is not revoked.")
@CREDENTIALS
@STAFF
@FORMAT
def command_revoke(store_url, devices, all_locks, credentials, staff, output_format) -> None:
    """Take credentials off these locks' allowlists (`kvitto revoke --credential` does this
    for every lock)."""
    from kvitto.store.outbox import run_command

    run_command(
        store_url, "revoke", list(devices), None, credentials, staff, all_locks, output_format
    )


@command.command("config")
@STORE
@DEVICES
@click.argument("settings", nargs=-1, required=True)
@FORMAT
def command_config(store_url, devices, settings, output_format) -> None:
    """Change settings, e.g. relock_ms=8000 debounce_ms=900 answer_s=1800 tag_mode=false
    fallback=deny."""
    from kvitto.store.outbox import parse_setting, run_command

    x = dict(parse_setting(text) for text in settings)
    run_command(store_url, "config", list(devices), x, output_format=output_format)


@command.command("time")
@STORE
@DEVICES
@FORMAT
def command_time(store_url, devices, output_format) -> None:
    """Set the devices' clocks from this host's (for a device that cannot reach NTP)."""
    from kvitto.store.outbox import run_command

    run_command(store_url, "time", list(devices), {}, output_format=output_format)


@command.command("schedule")
@STORE
@DEVICES
@click.option("--days", default=7, show_default=True, help="Planned visits this many days ahead.")
@click.option(
    "--tolerance-min", type=int, default=None,
    help="Minutes before a planned start and after its end that the lock still opens; "
    "default: the [lock] tolerance_min of the customers' municipality profile.",
)  # fmt: skip
@FORMAT
def command_schedule(store_url, devices, days, tolerance_min, output_format) -> None:
    """Send locks their customers' planned visit windows (from `kvitto import-plan`): an
    allowed credential opens the door only inside one (issue #23)."""
    from kvitto.cli.lock_profile import profile_tolerance
    from kvitto.store.schedules import run_schedule

    run_schedule(store_url, list(devices), days, tolerance_min, output_format,
                 tolerance_of=profile_tolerance)  # fmt: skip


@command.command("window")
@STORE
@DEVICES
@click.option("--start", required=True, help="YYYY-MM-DDTHH:MM (Stockholm time without offset).")
@click.option("--end", required=True, help="The same; at most a day after --start.")
@FORMAT
def command_window(store_url, devices, start, end, output_format) -> None:
    """A one-off window on a lock for an unplanned visit: a signed command, kept in the outbox."""
    from kvitto.store.schedules import run_window
    from kvitto.verify.case import parse_time

    times = []
    for name, text in (("--start", start), ("--end", end)):
        try:
            times.append(int(parse_time(text).timestamp()))
        except ValueError as error:
            raise KvittoError(f"{name} {text!r}: {error}") from None
    run_window(store_url, list(devices), times[0], times[1], output_format)


@command.command("list")
@STORE
@click.option("--device", default=None, help="Only this device's commands.")
@click.option("--open", "open_only", is_flag=True, help="Only commands not yet done.")
@FORMAT
def command_list(store_url, device, open_only, output_format) -> None:
    """The outbox: each command, its attempts and its outcome as the device's events show it."""
    from kvitto.store.outbox import run_list

    run_list(store_url, device, open_only, output_format)


@command.command("cancel")
@STORE
@click.argument("command_id", type=int)
@FORMAT
def command_cancel(store_url, command_id, output_format) -> None:
    """Stop sending an open command (what a device already obeyed stays)."""
    from kvitto.store.outbox import run_cancel

    run_cancel(store_url, command_id, output_format)


COMMANDS = [enroll, revoke, registry, command]
