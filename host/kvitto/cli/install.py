"""`kvitto` commands that set a board and the organisation up: image, flash, provision,
provision-sticker, pki, init (the store), broker-config, lockdown. Each calls kvitto.install (or
kvitto.store for init).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from kvitto.cli.options import BOARD, FORMAT, PORT, REGISTRY, STORE
from kvitto.errors import KvittoError


@click.command()
@BOARD
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
@FORMAT
def image(board, out, config, lockdown, frozen, output_format) -> None:
    """Build a board's filesystem image (firmware as .mpy, board file, device config)."""
    from kvitto.install.image import run_image

    run_image(board, out, config, output_format, lockdown, frozen)


@click.command()
@BOARD
@click.option("--image", default=None, type=click.Path(dir_okay=False), help="`kvitto image`.")
@click.option(
    "--firmware", default=None, type=click.Path(dir_okay=False), help="MicroPython .bin."
)
@PORT
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
@FORMAT
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


@click.command()
@PORT
@click.option("--device", required=True, help="Device id, [a-z0-9-]{3,32}, e.g. tag-0042.")
@click.option(
    "--customer",
    required=True,
    multiple=True,
    help="Customer pseudonym, e.g. c-1001; repeated with --building for an entrance lock.",
)
@click.option(
    "--building",
    default="",
    help="Building pseudonym: a lock at the main entrance serving every --customer given.",
)
@click.option(
    "--role",
    required=True,
    type=click.Choice(["tag", "lock", "alarm"]),
    help="tag: receipt at the door; lock: opens the door; alarm: the safety alarm unit.",
)
@click.option("--board", required=True, help="Board name (boards/<name>.json).")
@REGISTRY
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
@click.option(
    "--fallback", type=click.Choice(["open_for_allowed", "deny"]), default=None,
    help="A lock without a usable schedule: default the customer's municipality profile's.",
)  # fmt: skip
@click.option(
    "--door-open-s", type=int, default=None,
    help="A lock's door held open this long is reported: default the profile's.",
)  # fmt: skip
@click.option("--label-dir", default="labels", show_default=True, help="Where the SVG goes.")
@click.option("--no-reset", is_flag=True, help="Leave the board running; reset it yourself.")
@click.option(
    "--discard-journal",
    is_flag=True,
    help="Drop unacknowledged events the board journaled as another registered device.",
)
@FORMAT
def provision(
    port, device, customer, building, role, board, store_url, pki_dir, broker_host, broker_port, tls,
    household, mark, ntp, wifi_ssid, wifi_password, wifi_open, fallback, door_open_s, label_dir,
    no_reset, discard_journal, output_format,
) -> None:  # fmt: skip
    """Set up a device for a customer over its serial port (mpremote) and register it. (A
    passive NTAG 424 DNA sticker instead: `kvitto provision sticker`.)"""
    from pathlib import Path

    from kvitto.errors import KvittoError
    from kvitto.install.flash import pick_port
    from kvitto.install.provision import Provisioning, run_provision

    if building and role != "lock":
        raise KvittoError(f"--building {building}: only a lock serves a building (--role lock)")
    if len(customer) > 1 and not building:
        raise KvittoError("several --customer: name the --building of the shared entrance lock")
    if wifi_ssid and not wifi_password and not wifi_open and sys.stdin.isatty():
        wifi_password = click.prompt(f"Wi-Fi password for {wifi_ssid}", hide_input=True)
    request = Provisioning(
        port=pick_port(port), device=device, customer=customer[0], role=role, board=board,
        building=building, customers=tuple(customer) if building else (),
        store_url=store_url, pki_dir=Path(pki_dir), broker_host=broker_host,
        broker_port=broker_port, broker_tls=tls, household=household,
        ntp=list(ntp) or ["pool.ntp.org"], wifi_ssid=wifi_ssid, wifi_password=wifi_password,
        wifi_open=wifi_open, mark=mark, label_dir=Path(label_dir), reset=not no_reset,
        discard_journal=discard_journal,
    )  # fmt: skip
    if role == "lock":
        request.lock, request.lock_from = _lock_config(store_url, list(customer), fallback,
                                                       door_open_s)  # fmt: skip
    elif fallback is not None or door_open_s is not None:
        raise KvittoError("--fallback and --door-open-s are a lock's (--role lock)")
    run_provision(request, output_format)


def _lock_config(
    store_url: str, customers: list[str], fallback: str | None, door_open_s: int | None
) -> tuple[dict[str, Any], str]:
    """A lock's config.json `lock` settings: the options given, the rest from the [lock] table
    of its customers' municipality profile (issue #23), and where they came from."""
    from kvitto.cli.lock_profile import lock_settings
    from kvitto.store.db import open_store

    if door_open_s is not None and not 10 <= door_open_s <= 86400:
        raise KvittoError(f"--door-open-s {door_open_s}: from 10 to 86400 seconds")
    given = [name for name, value in (("--fallback", fallback), ("--door-open-s", door_open_s))
             if value is not None]  # fmt: skip
    if len(given) < 2:
        with open_store(store_url, create=False) as store:
            settings, source = lock_settings(store, customers)
        fallback = settings.fallback if fallback is None else fallback
        door_open_s = settings.door_open_s if door_open_s is None else door_open_s
        given.append(source)
    return {"fallback": fallback, "door_open_s": door_open_s}, "; ".join(given)


@click.command("provision-sticker")
@click.option("--sticker", "sticker_id", required=True, help="Sticker id, e.g. st-1002.")
@click.option("--customer", required=True, help="Customer pseudonym, e.g. c-1002.")
@click.option("--uid", required=True, help="The NTAG 424 DNA's 7-byte UID (hex).")
@click.option("--url-base", required=True, help="kvitto serve's public https:// address.")
@REGISTRY
@click.option("--pki", "pki_dir", required=True, help="`kvitto pki` folder.")
@click.option("--show-keys", is_flag=True, help="Print the keys to personalise the sticker.")
@FORMAT
def provision_sticker(sticker_id, customer, uid, url_base, store_url, pki_dir, show_keys,
                      output_format) -> None:  # fmt: skip
    """Record an NTAG 424 DNA sticker as a customer's door tag; print its SUN URL template."""
    from kvitto.install.sticker import run_provision_sticker

    run_provision_sticker(store_url, pki_dir, sticker_id, customer, uid, url_base, show_keys,
                          output_format)  # fmt: skip


@click.command()
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
@FORMAT
def pki(pki_dir, broker_hosts, devices, output_format) -> None:
    """Create the CA, broker and device certificates and the organisation's command key."""
    from kvitto.install.pki import run_pki

    run_pki(pki_dir, list(broker_hosts), list(devices), output_format)


@click.command()
@STORE
@FORMAT
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


@click.command("broker-config")
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
@FORMAT
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


@click.command()
@click.option("--port", default=None, help="Write /boot.py onto the board on this port.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Or to this file.")
@FORMAT
def lockdown(port, out, output_format) -> None:
    """Production boot config that disables the REPL on the UART after provisioning."""
    from kvitto.install.lockdown import run_lockdown

    run_lockdown(port, out, output_format)


COMMANDS = [image, flash, provision, provision_sticker, pki, init, broker_config, lockdown]
