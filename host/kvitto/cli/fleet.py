"""`kvitto` commands for a running fleet: fleet (health and alerts), release (key, sign) and
ota push. Each calls kvitto.fleet.
"""

from __future__ import annotations

import sys

import click

from kvitto.cli.options import DEVICES, FORMAT, STORE


@click.command()
@STORE
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


@click.group()
def release() -> None:
    """Signed firmware releases: the offline release key, and signing an image with it."""


@release.command("key")
@click.option("--pki", "pki_dir", required=True, help="The organisation's key folder.")
@FORMAT
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
@FORMAT
def release_sign(image, pki_dir, version, chip, out, output_format) -> None:
    """Sign IMAGE: a manifest with its version, size, SHA-256 and chip."""
    from kvitto.fleet.release import run_release_sign

    run_release_sign(pki_dir, image, version, chip, out, output_format)


@click.group()
def ota() -> None:
    """Firmware updates over the air (docs/fleet.md)."""


@ota.command("push")
@STORE
@click.option("--broker", required=True, help="mqtt://user:password@host:port (the collector's).")
@click.option("--pki", "pki_dir", required=True, help="Key folder: command key, release.pub.")
@click.option("--image", required=True, help="The firmware image.")
@click.option("--manifest", default=None, help="Its signed manifest (default: IMAGE.release).")
@DEVICES
@click.option("--all", "all_devices", is_flag=True, help="Every registered device.")
@click.option("--canary", type=int, default=0, help="Update this many first; the rest only "
              "once they run the new firmware, confirmed.")  # fmt: skip
@click.option("--rate", type=float, default=200.0, show_default=True,
              help="Chunks (2 KiB) a second in all: room for visit events meanwhile.")  # fmt: skip
@FORMAT
def ota_push(store_url, broker, pki_dir, image, manifest, devices, all_devices, canary, rate,
             output_format) -> None:  # fmt: skip
    """Send a signed image; exit status 1 unless every device ends on it, confirmed."""
    from kvitto.fleet.ota import run_push

    if not run_push(store_url, broker, pki_dir, image, manifest, list(devices), all_devices,
                    canary, rate, output_format):  # fmt: skip
        sys.exit(1)


COMMANDS = [fleet, release, ota]
