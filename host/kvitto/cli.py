"""The `kvitto` command: a thin layer over the Python API, one function per subcommand.

$ kvitto verify case/ --profile norrtalje --month 2026-10 --format json
$ kvitto demo
$ python -m kvitto --help
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from kvitto import __version__
from kvitto.errors import KvittoError, NotBuiltError


def _echo_result(output_format: str, result: Any, line: str) -> None:
    """What a command did: `result.as_dict()` as JSON for programs, else one line for people."""
    click.echo(json.dumps(result.as_dict()) if output_format == "json" else line)


def not_built(command: str, issue: str) -> None:
    raise NotBuiltError(f"'kvitto {command}' is not built yet (planned in the issue '{issue}')")


# Options several subcommands share, spelled once.
_FORMAT = click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: lines for people; json: one JSON object for scripts.",
)
_REGISTRY = click.option(
    "--store", "store_url", required=True, help="Registry store URL (sqlite:///path)."
)
_STORE = click.option(
    "--store", "store_url", required=True, help="sqlite:///path.db or postgresql://…"
)
_DEVICES = click.option("--device", "devices", multiple=True, help="Device id (repeatable).")
_CREDENTIALS = click.option(
    "--credential", "credentials", multiple=True, help="Credential id, 32 hex (repeatable)."
)
_STAFF = click.option(
    "--staff", multiple=True, help="Staff pseudonym: all their live credentials (repeatable)."
)
_BOARD = click.option("--board", required=True, help="Board name (boards/<name>.json) or file.")
_PORT = click.option(
    "--port", default=None, help="Serial port (default: the one ESP32 USB bridge)."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kvitto")
def cli() -> None:
    """kvitto: signed evidence of home-care visits, from the door device to the billing basis."""


@cli.command()
@_BOARD
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Image file.")
@click.option(
    "--config",
    default=None,
    type=click.Path(dir_okay=False),
    help="Device config (/config.json); without it a generic image for provisioning.",
)
@click.option("--lockdown", is_flag=True, help="Production boot.py: no REPL once provisioned.")
@click.option(
    "--frozen",
    is_flag=True,
    help="The firmware has device/ frozen in (firmware/manifest.py): leave it off the image.",
)
@_FORMAT
def image(board, out, config, lockdown, frozen, output_format) -> None:
    """Build a board's filesystem image (firmware as .mpy, board file, device config)."""
    from kvitto.install.image import run_image

    run_image(board, out, config, output_format, lockdown, frozen)


@cli.command()
@_BOARD
@click.option("--image", default=None, type=click.Path(dir_okay=False), help="`kvitto image`.")
@click.option(
    "--firmware", default=None, type=click.Path(dir_okay=False), help="MicroPython .bin."
)
@_PORT
@click.option("--baud", default=460800, show_default=True, type=int, help="Serial speed.")
@click.option("--erase/--no-erase", default=True, show_default=True, help="Erase all first.")
@click.option("--dry-run", is_flag=True, help="Print the plan and the esptool chains only.")
@click.option(
    "--merged",
    default=None,
    help="Write one file (MicroPython and the image, for offset 0x0) for a factory programmer "
    "instead of flashing a board.",
)
@click.option(
    "--check", is_flag=True, help="Then ask the board if it has the memory for --role (alone: "
    "only ask)."
)  # fmt: skip
@click.option("--role", default="tag", show_default=True,
              type=click.Choice(["tag", "lock", "alarm"]), help="The role --check checks for.")  # fmt: skip
@click.option("--tls", is_flag=True, help="--check keeps ESP-IDF's RAM for TLS too.")
@_FORMAT
def flash(
    board, image, firmware, port, baud, erase, dry_run, merged, check, role, tls, output_format
) -> None:
    """Write MicroPython and the filesystem image to a board through esptool."""
    from kvitto.install.flash import run_check, run_flash

    if image is None and not check:
        raise KvittoError("--image is required (build it with `kvitto image`), unless --check")
    if image is not None:
        run_flash(board, firmware, image, port, baud, erase, dry_run, merged, output_format)
    if check and not dry_run and not merged:
        run_check(board, port, role, tls, output_format)


@cli.command()
@_PORT
@click.option("--device", required=True, help="Device id, [a-z0-9-]{3,32}, e.g. tag-0042.")
@click.option("--customer", required=True, help="Customer pseudonym, e.g. c-1001.")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["tag", "lock", "alarm"]),
    help="tag: receipt at the door; lock: opens the door; alarm: the safety alarm unit.",
)
@click.option("--board", required=True, help="Board name (boards/<name>.json).")
@_REGISTRY
@click.option("--pki", "pki_dir", required=True, help="`kvitto pki` folder.")
@click.option("--broker-host", required=True, help="MQTT broker the device connects to.")
@click.option(
    "--broker-port", default=1883, show_default=True, type=int, help="Its port (TLS: 8883)."
)
@click.option("--tls", is_flag=True, help="Connect to the broker with TLS.")
@click.option("--household", default="", help="Household pseudonym (cohabitants: A/B labels).")
@click.option("--mark", default=None, help="Label mark, overriding the household's A/B.")
@click.option("--ntp", multiple=True, help="NTP server (repeatable; default pool.ntp.org).")
@click.option("--wifi-ssid", default=None, help="Wi-Fi network (real boards).")
@click.option(
    "--wifi-password",
    envvar="KVITTO_WIFI_PASSWORD",
    show_envvar=True,
    default=None,
    help="Wi-Fi password; set it in the environment (kept out of the shell history), or "
    "type it when asked on a terminal. Required with --wifi-ssid unless --wifi-open.",
)
@click.option("--wifi-open", is_flag=True, help="The Wi-Fi network has no password.")
@click.option("--label-dir", default="labels", show_default=True, help="Where the SVG goes.")
@click.option("--no-reset", is_flag=True, help="Leave the board running; reset it yourself.")
@click.option(
    "--discard-journal",
    is_flag=True,
    help="Drop unacknowledged events the board journaled as another registered device.",
)
@_FORMAT
def provision(
    port, device, customer, role, board, store_url, pki_dir, broker_host, broker_port, tls,
    household, mark, ntp, wifi_ssid, wifi_password, wifi_open, label_dir, no_reset,
    discard_journal, output_format,
) -> None:  # fmt: skip
    """Set up a device for a customer over its serial port (mpremote) and register it."""
    from pathlib import Path

    from kvitto.install.flash import pick_port
    from kvitto.install.provision import Provisioning, run_provision

    if wifi_ssid and not wifi_password and not wifi_open and sys.stdin.isatty():
        wifi_password = click.prompt(f"Wi-Fi password for {wifi_ssid}", hide_input=True)
    request = Provisioning(
        port=pick_port(port), device=device, customer=customer, role=role, board=board,
        store_url=store_url, pki_dir=Path(pki_dir), broker_host=broker_host,
        broker_port=broker_port, broker_tls=tls, household=household,
        ntp=list(ntp) or ["pool.ntp.org"], wifi_ssid=wifi_ssid, wifi_password=wifi_password,
        wifi_open=wifi_open, mark=mark, label_dir=Path(label_dir), reset=not no_reset,
        discard_journal=discard_journal,
    )  # fmt: skip
    run_provision(request, output_format)


@cli.command("provision-sticker")
@click.option("--sticker", "sticker_id", required=True, help="Sticker id, e.g. st-1002.")
@click.option("--customer", required=True, help="Customer pseudonym, e.g. c-1002.")
@click.option("--uid", required=True, help="The NTAG 424 DNA's 7-byte UID (hex).")
@click.option("--url-base", required=True, help="kvitto serve's public https:// address.")
@_REGISTRY
@click.option("--pki", "pki_dir", required=True, help="`kvitto pki` folder.")
@click.option("--show-keys", is_flag=True, help="Print the keys to personalise the sticker.")
@_FORMAT
def provision_sticker(sticker_id, customer, uid, url_base, store_url, pki_dir, show_keys,
                      output_format) -> None:  # fmt: skip
    """Record an NTAG 424 DNA sticker as a customer's door tag; print its SUN URL template."""
    from kvitto.install.sticker import run_provision_sticker

    run_provision_sticker(store_url, pki_dir, sticker_id, customer, uid, url_base, show_keys,
                          output_format)  # fmt: skip


@cli.command()
@_REGISTRY
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
@_FORMAT
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


@cli.command()
@_REGISTRY
@click.option("--device", default=None, help="Device id to revoke.")
@click.option("--credential", default=None, help="Credential id (32 hex digits) to revoke.")
@click.option(
    "--staff",
    default=None,
    help="Staff pseudonym: revoke all their live credentials (someone leaving).",
)
@click.option("--when", default=None, help="Revoked from (ISO date or time; default today).")
@_FORMAT
def revoke(store_url, device, credential, staff, when, output_format) -> None:
    """Revoke a device, a credential or a staff member's credentials (kept, never deleted)."""
    from kvitto.install.enroll import run_revoke

    run_revoke(store_url, device, credential, when, output_format, staff=staff)


@cli.group()
def registry() -> None:
    """What the registry holds: devices, staff credentials, customers."""


@registry.command("list")
@click.argument("what", type=click.Choice(["devices", "staff", "customers"]))
@_REGISTRY
@_FORMAT
def registry_list(what, store_url, output_format) -> None:
    """List the registry's devices, staff credentials or customers (revoked ones marked)."""
    from kvitto.store.registry import run_list

    run_list(store_url, what, output_format)


@cli.group()
def command() -> None:
    """Queue signed commands for devices: lock allowlists, settings, time.

    The store keeps them until the device's own events show them obeyed (or refused); a
    running `kvitto collect --org-key` signs and sends them whenever the device is online."""


@command.command("allow")
@_STORE
@_DEVICES
@_CREDENTIALS
@_STAFF
@_FORMAT
def command_allow(store_url, devices, credentials, staff, output_format) -> None:
    """Let credentials open these locks (their allowlists on flash; works offline)."""
    from kvitto.store.outbox import run_command

    run_command(store_url, "allow", list(devices), None, credentials, staff, False, output_format)


@command.command("revoke")
@_STORE
@_DEVICES
@click.option("--all-locks", is_flag=True, help="Every registered lock that is not revoked.")
@_CREDENTIALS
@_STAFF
@_FORMAT
def command_revoke(store_url, devices, all_locks, credentials, staff, output_format) -> None:
    """Take credentials off these locks' allowlists (`kvitto revoke --credential` does this
    for every lock)."""
    from kvitto.store.outbox import run_command

    run_command(
        store_url, "revoke", list(devices), None, credentials, staff, all_locks, output_format
    )


@command.command("config")
@_STORE
@_DEVICES
@click.argument("settings", nargs=-1, required=True)
@_FORMAT
def command_config(store_url, devices, settings, output_format) -> None:
    """Change settings, e.g. relock_ms=8000 debounce_ms=900 answer_s=1800 tag_mode=false."""
    from kvitto.store.outbox import parse_setting, run_command

    x = dict(parse_setting(text) for text in settings)
    run_command(store_url, "config", list(devices), x, output_format=output_format)


@command.command("time")
@_STORE
@_DEVICES
@_FORMAT
def command_time(store_url, devices, output_format) -> None:
    """Set the devices' clocks from this host's (for a device that cannot reach NTP)."""
    from kvitto.store.outbox import run_command

    run_command(store_url, "time", list(devices), {}, output_format=output_format)


@command.command("list")
@_STORE
@click.option("--device", default=None, help="Only this device's commands.")
@click.option("--open", "open_only", is_flag=True, help="Only commands not yet done.")
@_FORMAT
def command_list(store_url, device, open_only, output_format) -> None:
    """The outbox: each command, its attempts and its outcome as the device's events show it."""
    from kvitto.store.outbox import run_list

    run_list(store_url, device, open_only, output_format)


@command.command("cancel")
@_STORE
@click.argument("command_id", type=int)
@_FORMAT
def command_cancel(store_url, command_id, output_format) -> None:
    """Stop sending an open command (what a device already obeyed stays)."""
    from kvitto.store.outbox import run_cancel

    run_cancel(store_url, command_id, output_format)


@cli.command()
@click.option(
    "--dir",
    "pki_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the keys (created; private files are mode 0600).",
)
@click.option(
    "--broker-host",
    "broker_hosts",
    multiple=True,
    help="Issue the broker certificate for this name or address (repeatable).",
)
@click.option(
    "--device",
    "devices",
    multiple=True,
    help="Issue a TLS client certificate for this device id (repeatable).",
)
@_FORMAT
def pki(pki_dir, broker_hosts, devices, output_format) -> None:
    """Create the CA, broker and device certificates and the organisation's command key."""
    from kvitto.install.pki import run_pki

    run_pki(pki_dir, list(broker_hosts), list(devices), output_format)


@cli.command()
@_STORE
@_FORMAT
def init(store_url, output_format) -> None:
    """Create the store (or upgrade an existing one): run once before the first `provision`.
    Every other command refuses a store that does not exist, so a typo in --store is caught."""
    from kvitto.store.db import open_store

    with open_store(store_url) as store:
        version = max(row[0] for row in store.execute("SELECT version FROM schema_version"))
    if output_format == "json":
        click.echo(json.dumps({"store": store_url, "schema_version": version}))
    else:
        click.echo(f"store {store_url} ready (schema version {version})")


@cli.command("broker-config")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for mosquitto.conf, passwords, acl and the collector's password.",
)
@click.option(
    "--store",
    "store_url",
    default=None,
    help="Registry store URL (sqlite:///path); its devices get accounts.",
)
@click.option(
    "--accounts",
    "accounts_file",
    default=None,
    type=click.Path(dir_okay=False),
    help='JSON list of {"device", "password_hash"} instead of a store.',
)
@click.option(
    "--bind", default="0.0.0.0", show_default=True, help="Address the listeners bind to."
)
@click.option(
    "--port", default=1883, show_default=True, type=int, help="Port of the plain MQTT listener."
)
@click.option(
    "--pki",
    "pki_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="`kvitto pki` folder: adds a TLS listener with its broker certificate.",
)
@click.option(
    "--tls-port", default=8883, show_default=True, type=int, help="Port of the TLS listener."
)
@click.option("--run-as", default=None, help="User Mosquitto drops to (owns the files).")
@click.option(
    "--client-certs", is_flag=True, help="TLS listener: devices log in by certificate (CN = id)."
)
@_FORMAT
def broker_config(
    out_dir, store_url, accounts_file, bind, port, pki_dir, tls_port, run_as, client_certs,
    output_format,
) -> None:  # fmt: skip
    """Write the Mosquitto configuration: listeners, password file, per-device ACL."""
    from kvitto.install.broker_config import run_broker_config

    run_broker_config(
        out_dir, store_url, accounts_file, bind, port, pki_dir, tls_port, run_as, output_format,
        client_certs,
    )  # fmt: skip


@cli.command()
@click.option("--port", default=None, help="Write /boot.py onto the board on this port.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Or to this file.")
@_FORMAT
def lockdown(port, out, output_format) -> None:
    """Production boot config that disables the REPL on the UART after provisioning."""
    from kvitto.install.lockdown import run_lockdown

    run_lockdown(port, out, output_format)


@cli.command()
@click.option("--broker", required=True, help="mqtt://[user:pass@]host:port or mqtts://…")
@_STORE
@click.option("--share", "share_group", help="Shared subscription group ($share/GROUP/…).")
@click.option(
    "--client-id",
    default="kvitto_collector",
    show_default=True,
    help="MQTT client id; needs a character no device id has ('_'). A broker from "
    "`kvitto broker-config` uses the username instead.",
)
@click.option(
    "--org-key",
    type=click.Path(exists=True, dir_okay=False),
    help="The organisation's command key (PEM from `kvitto pki`): acks, resends, the outbox.",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    default=2,
    show_default=True,
    help="Processes verifying signatures (0 or 1: in the collector process itself).",
)
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(exists=True, dir_okay=False),
    help="CA certificate for mqtts://",
)
@click.option(
    "--interval",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds between JSON statistics lines.",
)
@_FORMAT
def collect(broker, store_url, share_group, client_id, org_key, workers, ca_file, interval,
            output_format) -> None:  # fmt: skip
    """Subscribe to device events, verify, store once, acknowledge and ask for gaps."""
    from pathlib import Path

    from kvitto.collect.live import run_collect

    run_collect(
        store_url, broker, org_key=Path(org_key) if org_key else None, share_group=share_group, client_id=client_id,
        output_format=output_format, workers=workers, ca_file=ca_file, interval=interval,
    )  # fmt: skip


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_STORE
@_FORMAT
def ingest(file, store_url, output_format) -> None:
    """Store offline evidence from a CBOR sequence or JSONL file."""
    from pathlib import Path

    from kvitto.collect.intake import ingest as ingest_file
    from kvitto.store.db import open_store

    with open_store(store_url, create=False) as store:
        report = ingest_file(store, Path(file))
    reasons = ", ".join(f"{k} {v}" for k, v in report.reasons.items())
    _echo_result(
        output_format,
        report,
        f"{file}: {report.messages} messages, {report.stored} stored, "
        f"{report.duplicates} already stored, {report.rejected} quarantined"
        + (f" ({reasons})" if reasons else "")
        + (f", {report.chain_broken} chain breaks" if report.chain_broken else ""),
    )


@cli.group()
def quarantine() -> None:
    """Messages the collector or `kvitto ingest` refused, kept whole with the reason."""


@quarantine.command("list")
@_STORE
@click.option("--device", default=None, help="Only messages that named this device.")
@click.option("--last", "limit", type=click.IntRange(1), default=None, help="Only the newest N.")
@_FORMAT
def quarantine_list(store_url, device, limit, output_format) -> None:
    """Each quarantined message: when, from where (topic or file and item), device, reason."""
    from kvitto.store.quarantine import run_quarantine_list

    run_quarantine_list(store_url, device, limit, output_format)


@cli.command("export-case")
@_STORE
@click.option("--month", required=True, help="YYYY-MM")
@click.option("--provider", help="Only this provider's credentials.")
@click.option(
    "--claims",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="The provider's claims.csv (columns: docs/formats.md, case bundle), copied as it is.",
)
@click.option(
    "--orders",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="orders.csv: customer, activity, granted_minutes_month, … (docs/formats.md).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="The case bundle folder to write (kvitto verify reads it).",
)
@_FORMAT
def export_case(store_url, month, provider, claims, orders, out, output_format) -> None:
    """Write the case bundle (FORMATS.md §3) for one provider's month."""
    from pathlib import Path

    from kvitto.store.db import open_store
    from kvitto.verify.export import export_case as write_case

    with open_store(store_url, create=False) as store:
        result = write_case(
            store, month, Path(out), provider=provider, claims=Path(claims), orders=Path(orders)
        )
    _echo_result(
        output_format,
        result,
        f"{out}: {result.customers} customers, {result.devices} devices, "
        f"{result.credentials} credentials, {result.events} events for {month}",
    )


@cli.command()
@click.argument("case")
@click.option("--profile", required=True, help="Municipality profile (norrtalje, huddinge, …).")
@click.option("--month", required=True, help="YYYY-MM: the month whose claims are verified.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["json", "csv", "html"]),
    default="json",
    show_default=True,
    help="json (FORMATS.md §4, for programs), csv (findings and billing basis) or html (a "
    "page for auditors, offline).",
)
@click.option(
    "--out",
    "out_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the report here instead of standard output.",
)
@click.option(
    "--claims",
    default=None,
    type=click.Path(dir_okay=False),
    help="With a store URL as CASE: the provider's claims.csv.",
)
@click.option(
    "--orders",
    default=None,
    type=click.Path(dir_okay=False),
    help="With a store URL as CASE: orders.csv instead of the store's orders.",
)
@click.option(
    "--pki",
    "pki_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="`kvitto pki` folder: its NTAG 424 keys check badge SUNs the registry has no keys for.",
)
@click.option(
    "--lang",
    type=click.Choice(["sv", "en"]),
    default="sv",
    show_default=True,
    help="Language of the HTML report (Swedish first).",
)
def verify(case, profile, month, output_format, out_file, claims, orders, pki_dir, lang) -> None:
    """Check claims against signed evidence under a municipality's rules.

    CASE is a case bundle folder, or a store URL (sqlite:///…, postgresql://…) with --claims.
    """
    from kvitto.verify.report import run_verify

    run_verify(case, profile, month, output_format, out_file, claims, orders, pki_dir, lang)


@cli.command()
@click.option("--boards", "count", default=1, show_default=True, type=int, help="How many.")
@click.option("--broker", default=None, help="mqtt://host:port the boards publish to.")
@click.option(
    "--roles",
    default="tag",
    show_default=True,
    help="Roles, cycled over the boards: tag,lock,alarm",
)
@click.option("--workdir", type=click.Path(file_okay=False), help="Flash images and logs.")
@click.option("--listen", type=click.Path(dir_okay=False), help="Unix socket for other programs.")
@click.option("--org-public-key", help="Hex of the organisation's command key (32 bytes).")
@click.option("--salt", help="Hex of the credential salt (16+ bytes); random if left out.")
@click.option("--no-prompt", is_flag=True, help="No keyboard prompt: run until interrupted.")
@click.option(
    "--pki",
    "pki_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="`kvitto pki` folder: its salt and command key, and real NTAG 424 badge keys.",
)
def sim(count, broker, roles, workdir, listen, org_public_key, salt, no_prompt, pki_dir) -> None:
    """Start virtual boards: the real firmware under the unix port, tappable from the keyboard.

    `tap N phone SEED` taps a provider phone whose app key has that 32-byte seed (hex): its
    answers are real signatures a registry with the phone's public key verifies."""
    import tempfile
    from pathlib import Path

    from kvitto.sim.board import SimError
    from kvitto.sim.fleet import run_sim

    def unhex(value: str | None, name: str) -> bytes | None:
        if value is None:
            return None
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise SimError(f"{name}: not hex") from None

    import signal

    # Paths are resolved once, here: the boards run in their own folders.
    folder = Path(workdir).resolve() if workdir else Path(tempfile.mkdtemp(prefix="kvitto-sim-"))

    def stop_on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM ends the session as Ctrl-C does: boards stopped

    signal.signal(signal.SIGTERM, stop_on_term)

    def keyboard():
        while True:  # an empty line is ignored; quit, Ctrl-D or Ctrl-C end the session
            try:
                yield click.prompt("sim", default="", show_default=False, prompt_suffix="> ")
            except (click.Abort, EOFError):
                return

    lines = None
    if not no_prompt:
        lines = keyboard() if sys.stdin.isatty() else iter(sys.stdin)
    run_sim(
        count,
        broker,
        tuple(r.strip() for r in roles.split(",") if r.strip()),
        folder,
        Path(listen).resolve() if listen else folder / "sim.sock",
        unhex(org_public_key, "--org-public-key"),
        unhex(salt, "--salt"),
        lines,
        echo=click.echo,
        pki_dir=Path(pki_dir).resolve() if pki_dir else None,
    )


@cli.command()
@click.option("--broker", default=None, help="MQTT broker URL (default: an embedded amqtt)")
@click.option("--profile", default="huddinge", show_default=True, help="municipality profile")
@click.option(
    "--out",
    default="kvitto-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="folder for report.html, report.json, the case bundle and labels",
)
@click.option("--keep", is_flag=True, help="keep the boards, store and keys in OUT/work")
@click.option(
    "--no-serve", is_flag=True, help="end after the report (CI); else serve it on the web"
)
@click.option("--port", default=8000, show_default=True, type=int, help="kvitto serve's port")
def demo(
    broker: str | None, profile: str, out: str, keep: bool, no_serve: bool, port: int
) -> None:
    """A day of home care on virtual boards, end to end; then the month in `kvitto serve`."""
    from pathlib import Path

    from kvitto.sim.demo import PROVIDER, run_demo

    outcome = run_demo(out=Path(out), broker=broker, profile=profile, keep=keep)
    if not no_serve:
        from kvitto.web.demo import serve_after_demo

        serve_after_demo(outcome, PROVIDER, profile, "127.0.0.1", port)


def _web_commands() -> None:
    """serve, user, provider, import-claims, import-plan, judge: kvitto.web's commands."""
    from kvitto.web.commands import register

    register(cli)


_web_commands()


@cli.command()
@_STORE
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "prometheus"]),
    default="text",
    help="text for people, json for scripts, prometheus for a metrics scraper.",
)
@click.option("--current", default=None, help="The current release (default: the newest any "
              "device reports); a device behind it is in alert.")  # fmt: skip
@click.option("--backlog", "backlog_limit", type=int, default=100, show_default=True,
              help="Unsent events in a device's journal above this: alert.")  # fmt: skip
def fleet(store_url, output_format, current, backlog_limit) -> None:
    """One line per device from its signed health reports; exit status 1 if any is in alert
    (silent, reader failed, backlog, clock unsynced > 24 h, version behind)."""
    from kvitto.collect.intake import now_ms
    from kvitto.fleet.status import run_fleet

    if run_fleet(store_url, output_format, current, backlog_limit, now_ms()):
        sys.exit(1)


@cli.group()
def release() -> None:
    """Signed firmware releases: the offline release key, and signing an image with it."""


@release.command("key")
@click.option("--pki", "pki_dir", required=True, help="The organisation's key folder.")
@_FORMAT
def release_key(pki_dir, output_format) -> None:
    """Create the release key (0600); its public half goes to devices at provisioning."""
    from kvitto.fleet.release import run_release_key

    run_release_key(pki_dir, output_format)


@release.command("sign")
@click.argument("image")
@click.option("--pki", "pki_dir", required=True, help="The folder with release.key.")
@click.option("--version", "version", required=True, help="The image's version, e.g. 0.2.0.")
@click.option("--chip", default="esp32", show_default=True, help="The chip the image is for.")
@click.option("--out", default=None, help="Manifest file (default: IMAGE.release).")
@_FORMAT
def release_sign(image, pki_dir, version, chip, out, output_format) -> None:
    """Sign IMAGE: a manifest with its version, size, SHA-256 and chip."""
    from kvitto.fleet.release import run_release_sign

    run_release_sign(pki_dir, image, version, chip, out, output_format)


@cli.group()
def ota() -> None:
    """Firmware updates over the air (docs/fleet.md)."""


@ota.command("push")
@_STORE
@click.option("--broker", required=True, help="mqtt://user:password@host:port (the collector's).")
@click.option("--pki", "pki_dir", required=True, help="Key folder: command key, release.pub.")
@click.option("--image", required=True, help="The firmware image.")
@click.option("--manifest", default=None, help="Its signed manifest (default: IMAGE.release).")
@_DEVICES
@click.option("--all", "all_devices", is_flag=True, help="Every registered device.")
@click.option("--canary", type=int, default=0, help="Update this many first; the rest only "
              "once they run the new firmware, confirmed.")  # fmt: skip
@click.option("--rate", type=float, default=200.0, show_default=True,
              help="Chunks (2 KiB) a second in all: room for visit events meanwhile.")  # fmt: skip
@_FORMAT
def ota_push(store_url, broker, pki_dir, image, manifest, devices, all_devices, canary, rate,
             output_format) -> None:  # fmt: skip
    """Send a signed image; exit status 1 unless every device ends on it, confirmed."""
    from kvitto.fleet.ota import run_push

    if not run_push(store_url, broker, pki_dir, image, manifest, list(devices), all_devices,
                    canary, rate, output_format):  # fmt: skip
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="kvitto", standalone_mode=False)
    except KvittoError as error:
        click.echo(f"kvitto: {error}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("kvitto: aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(2)
