"""Passive NTAG 424 DNA stickers at a customer's door (issue #20), `kvitto provision-sticker`.

    made = provision_sticker(store, Path("pki"), "st-1002", "c-1002", "04A1B2C3D4E5F6",
                             "https://kvitto.example.se")
    made.url_template, made.offsets, made.keys      # what the personalisation tool writes

Where no device is installed, the customer's door gets an NTAG 424 DNA sticker whose NDEF URL
mirrors a SUN (AN12196): https://HOST/t/s/STICKER?e=<PICC data>&c=<SDMMAC>. A phone reads it
natively and kvitto serve checks it (kvitto.web.door). The sticker's keys derive from the
organisation's NTAG 424 masters exactly as a badge's do (kvitto.install.enroll.ntag424_badge_keys:
key 1 the shared SDM meta read key, key 2 the per-UID SDM file read key), and are written to the
chip with the same tool as a badge's (`--show-keys` prints them). The sticker is recorded as the
customer's, with its meta and file read keys, so the server can check its SUN by its id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from kvitto.errors import KvittoError
from kvitto.evidence.cose import DEVICE_ID
from kvitto.install.enroll import ntag424_badge_keys, ntag424_masters, parse_uid
from kvitto.store.db import Store
from kvitto.store.registry import Registry

PICC_HEX = 32  # e=: 16 bytes of PICC data as hex
MAC_HEX = 16  # c=: 8 bytes of SDMMAC as hex
NDEF_HEADER = 2 + 5  # NLEN, then a short URI record's D1 01 len 55 prefix


@dataclass(frozen=True)
class Sticker:
    id: str
    customer: str
    url_template: str
    offsets: dict[str, int]  # SDM offsets in the NDEF file (ChangeFileSettings, AN12196 §3.3)
    keys: dict[int, bytes]

    def as_dict(self, show_keys: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"sticker": self.id, "customer": self.customer,
                               "url_template": self.url_template, "offsets": self.offsets}  # fmt: skip
        if show_keys:
            out["keys"] = {str(n): key.hex() for n, key in self.keys.items()}
        return out


def sun_template(base: str, sticker_id: str) -> tuple[str, dict[str, int]]:
    """The URL with zeros where the chip mirrors PICC data and MAC, and their offsets in the
    NDEF file (the URI record's prefix byte 0x04 stands for "https://")."""
    if not base.startswith("https://"):
        raise KvittoError(f"--url-base {base!r}: a sticker's URL is https:// (a secure context)")
    url = f"{base.rstrip('/')}/t/s/{sticker_id}?e={'0' * PICC_HEX}&c={'0' * MAC_HEX}"
    stored = url[len("https://") :]
    picc = NDEF_HEADER + stored.index("?e=") + 3
    mac = NDEF_HEADER + stored.index("&c=") + 3
    if len(stored) + 1 > 255:
        raise KvittoError("the sticker URL does not fit a short NDEF record")
    # MAC over no data: SDMMACInputOffset = SDMMACOffset (docs/nfc.md, as the badges)
    return url, {"picc_data": picc, "sdm_mac_input": mac, "sdm_mac": mac}


def provision_sticker(
    store: Store, pki_dir: Path, sticker_id: str, customer: str, uid_text: str, base: str,
    installed: str | None = None,
) -> Sticker:  # fmt: skip
    if not DEVICE_ID.fullmatch(sticker_id):
        raise KvittoError(f"--sticker {sticker_id!r} must match [a-z0-9-]{{3,32}}")
    uid = parse_uid(uid_text, "--uid")
    keys = ntag424_badge_keys(ntag424_masters(pki_dir), uid)
    url, offsets = sun_template(base, sticker_id)
    with store.transaction():
        if Registry(store).customer(customer) is None:
            raise KvittoError(f"--customer {customer!r} is not registered")
        taken = store.execute("SELECT customer FROM stickers WHERE id = ?", (sticker_id,))
        if taken:
            raise KvittoError(f"sticker {sticker_id} is {taken[0][0]}'s already")
        store.execute(
            "INSERT INTO stickers (id, customer, meta_key, file_key, installed, revoked) "
            "VALUES (?, ?, ?, ?, ?, '')",
            (sticker_id, customer, keys[1], keys[2], installed or date.today().isoformat()),
        )
    return Sticker(sticker_id, customer, url, offsets, keys)


def run_provision_sticker(
    store_url: str, pki_dir: str, sticker_id: str, customer: str, uid: str, base: str,
    show_keys: bool, output_format: str,
) -> Sticker:  # fmt: skip
    import json

    import click

    from kvitto.store.db import open_store

    with open_store(store_url) as store:
        made = provision_sticker(store, Path(pki_dir), sticker_id, customer, uid, base)
    if output_format == "json":
        click.echo(json.dumps(made.as_dict(show_keys)))
    else:
        click.echo(f"sticker {made.id} at {made.customer}'s door")
        click.echo(f"NDEF URL  {made.url_template}")
        click.echo("SDM offsets " + ", ".join(f"{k}={v}" for k, v in made.offsets.items()))
        if show_keys:
            for number, key in made.keys.items():
                click.echo(f"key {number}  {key.hex()}")
        else:
            click.echo("keys: --show-keys prints them for the personalisation tool")
    return made
