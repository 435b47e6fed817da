"""Staff credentials into the registry (`kvitto enroll`) and revocation (`kvitto revoke`).

    salt = load_org(Path("pki")).credential_salt
    enroll_badge(registry, salt, "04:A1:B2:C3", staff="s-07", provider="p-1")
    revoke(registry, credential="dcd6aa0f8fb296bebd8d73131e2fdda4")

A credential is known only by its id, HMAC-SHA256(org credential salt, raw credential)[:16]
(FORMATS.md §1 key 8): the badge UID, the NTAG 424 UID, or for a phone the first 16 bytes of
SHA-256 of its public key. NTAG 424 DNA badges get their keys diversified per badge from the
organisation's master keys (NXP AN10922 §2.2.1, AES-128 CMAC), so one badge's keys reveal
nothing about another's; the registry keeps no key, the host re-derives it to check SUN MACs.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvitto.errors import KvittoError
from kvitto.store.keys import NTAG424_FILE_MASTER, NTAG424_MASTER, NTAG424_META, read_ntag424_key

UID_LENGTHS = (4, 7, 10)  # ISO/IEC 14443-3 single, double and triple size UIDs
NTAG424_UID_LENGTH = 7
NTAG424_KEY_MATERIAL = b"an10922-v1"  # how the badge's keys derive; no key in the registry
_SEPARATORS = re.compile(r"[\s:.-]")


def parse_uid(text: str, where: str = "UID") -> bytes:
    """A typed UID: hex with optional separators (04:A1:B2:C3), 4, 7 or 10 bytes."""
    cleaned = _SEPARATORS.sub("", text)
    try:
        uid = bytes.fromhex(cleaned)
    except ValueError:
        raise KvittoError(f"{where} {text!r} is not hex") from None
    if len(uid) not in UID_LENGTHS:
        raise KvittoError(f"{where} {text!r} is {len(uid)} bytes; a UID is 4, 7 or 10 bytes")
    return uid


def credential_id(salt: bytes, uid: str | bytes) -> str:
    """Hex credential id of a UID (typed text or bytes), as the device computes it."""
    raw = parse_uid(uid) if isinstance(uid, str) else uid
    return hmac.new(salt, raw, hashlib.sha256).hexdigest()[:32]


def _ensure_key(pki_dir: Path, name: str) -> bytes:
    from kvitto.install.pki import write_private

    path = pki_dir / name
    if not path.exists():
        pki_dir.mkdir(parents=True, exist_ok=True)
        write_private(path, (secrets.token_bytes(16).hex() + "\n").encode())
    return read_ntag424_key(path)


@dataclass(frozen=True)
class Ntag424Masters:
    application: bytes
    file_read: bytes
    meta_read: bytes


def ntag424_masters(pki_dir: Path) -> Ntag424Masters:
    """The organisation's NTAG 424 master keys (made on first use, mode 0600)."""
    return Ntag424Masters(
        application=_ensure_key(pki_dir, NTAG424_MASTER),
        file_read=_ensure_key(pki_dir, NTAG424_FILE_MASTER),
        meta_read=_ensure_key(pki_dir, NTAG424_META),
    )


def ntag424_badge_keys(masters: Ntag424Masters, uid: bytes) -> dict[int, bytes]:
    """The five application keys to personalise one badge with.

    Key 2 (SDM file read) is what kvitto.evidence.ntag424 re-derives to check SUN MACs; key 1 (SDM meta
    read) is shared because the host decrypts the PICC data before it knows the UID
    (AN12196 §3.3); keys 0, 3 and 4 are per badge and key number: M = UID ‖ key no ‖ "kvitto".
    """
    from kvitto.evidence.ntag424 import SYSTEM_IDENTIFIER, an10922_diversify, badge_file_key

    if len(uid) != NTAG424_UID_LENGTH:
        raise KvittoError(f"NTAG 424 UID is {len(uid)} bytes; these badges have 7")
    keys = {
        number: an10922_diversify(masters.application, uid + bytes([number]) + SYSTEM_IDENTIFIER)
        for number in (0, 3, 4)
    }
    keys[1] = masters.meta_read
    keys[2] = badge_file_key(masters.file_read, uid)
    return dict(sorted(keys.items()))


@dataclass(frozen=True)
class Enrolled:
    credential_id: str
    staff: str
    provider: str
    kind: str
    badge_keys: dict[int, bytes] | None = None

    def as_dict(self, show_keys: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = {
            "credential": self.credential_id,
            "staff": self.staff,
            "provider": self.provider,
            "kind": self.kind,
        }
        if self.badge_keys is not None and show_keys:
            result["keys"] = {str(n): key.hex() for n, key in self.badge_keys.items()}
        return result


def enroll_badge(registry: Any, salt: bytes, uid_text: str, staff: str, provider: str) -> Enrolled:
    """A plain badge by its UID (accepted, but weak: UIDs can be cloned)."""
    ident = credential_id(salt, parse_uid(uid_text, "--badge UID"))
    registry.add_credential(ident, staff, provider, "badge")
    return Enrolled(ident, staff, provider, "badge")


def enroll_ntag424(
    registry: Any, salt: bytes, masters: Ntag424Masters, uid_text: str, staff: str, provider: str
) -> Enrolled:
    uid = parse_uid(uid_text, "--ntag424 UID")
    keys = ntag424_badge_keys(masters, uid)
    ident = credential_id(salt, uid)
    registry.add_credential(ident, staff, provider, "ntag424", NTAG424_KEY_MATERIAL)
    return Enrolled(ident, staff, provider, "ntag424", keys)


def enroll_phone(
    registry: Any, salt: bytes, public_key_hex: str, staff: str, provider: str
) -> Enrolled:
    """A provider-owned phone by its app's Ed25519 public key (hex, 32 bytes)."""
    from kvitto.evidence.phone import phone_key_id

    try:
        public_key = bytes.fromhex(public_key_hex.strip())
    except ValueError:
        raise KvittoError(f"--phone-key {public_key_hex!r} is not hex") from None
    if len(public_key) != 32:
        raise KvittoError(f"--phone-key is {len(public_key)} bytes; an Ed25519 key is 32")
    ident = credential_id(salt, phone_key_id(public_key))
    registry.add_credential(ident, staff, provider, "phone", public_key)
    return Enrolled(ident, staff, provider, "phone")


def run_enroll(
    store_url: str,
    pki_dir: str,
    staff: str,
    provider: str,
    badge: str | None,
    ntag424: str | None,
    phone_key: str | None,
    show_keys: bool,
    output_format: str,
    locks: list[str] | None = None,
    all_locks: bool = False,
) -> Enrolled:
    """`kvitto enroll`: exactly one of --badge, --ntag424, --phone-key. `locks` (or every lock,
    `all_locks`) get an `allow` for it queued, in the same transaction: a lock that is not
    registered, revoked or no lock leaves nothing enrolled."""
    import json
    import time

    import click

    from kvitto.store.db import open_store
    from kvitto.store.keys import load_org
    from kvitto.store.outbox import lock_devices, queue_command
    from kvitto.store.registry import Registry

    given = [name for name, value in (("--badge", badge), ("--ntag424", ntag424),
                                       ("--phone-key", phone_key)) if value]  # fmt: skip
    if len(given) != 1:
        raise KvittoError("give exactly one of --badge UID, --ntag424 UID, --phone-key HEX")
    salt = load_org(Path(pki_dir)).credential_salt
    with open_store(store_url, create=False) as store, store.transaction():
        registry = Registry(store)
        if badge:
            enrolled = enroll_badge(registry, salt, badge, staff, provider)
        elif ntag424:
            masters = ntag424_masters(Path(pki_dir))
            enrolled = enroll_ntag424(registry, salt, masters, ntag424, staff, provider)
        else:
            enrolled = enroll_phone(registry, salt, phone_key or "", staff, provider)
        # Each lock decides from the allowlist on its own flash: the credential opens a door
        # once the lock's journal shows the `allow` (kvitto.store.outbox, sent by the collector).
        targets = lock_devices(store) if all_locks else list(dict.fromkeys(locks or []))
        at = int(time.time() * 1000)
        for lock in targets:
            queue_command(store, lock, "allow", {"creds": [bytes.fromhex(enrolled.credential_id)]},
                          at)  # fmt: skip
        other_locks = not targets and bool(lock_devices(store))
    if output_format == "json":
        click.echo(json.dumps(dict(enrolled.as_dict(show_keys), locks=targets)))
    else:
        click.echo(f"enrolled {enrolled.kind} {enrolled.credential_id} for {staff} ({provider})")
        if enrolled.kind == "badge":
            click.echo("note: a plain UID badge is weak evidence (UIDs can be cloned)")
        if enrolled.badge_keys and show_keys:
            for number, key in enrolled.badge_keys.items():
                click.echo(f"  key {number}: {key.hex()}")
        if targets:
            click.echo(f"queued `allow` for {len(targets)} lock(s): "
                       "`kvitto command list --open` follows them")  # fmt: skip
        elif other_locks:
            click.echo(
                "no lock lets it in yet: --lock ID or --all-locks, or `kvitto command allow`"
            )
    return enrolled


def run_revoke(
    store_url: str,
    device: str | None,
    credential: str | None,
    when: str | None,
    output_format: str,
    staff: str | None = None,
) -> dict[str, Any]:
    """`kvitto revoke`: mark a device, a credential or all of a staff member's live
    credentials revoked (kept, never deleted); a credential's revocation is queued for every
    lock."""
    import json
    import time

    import click

    from kvitto.store.db import open_store
    from kvitto.store.registry import Registry

    if sum(1 for given in (device, credential, staff) if given) != 1:
        raise KvittoError("give exactly one of --device ID, --credential ID or --staff ID")
    with open_store(store_url, create=False) as store:
        registry = Registry(store)
        result: dict[str, Any]
        if device:
            row = registry.revoke_device(device, when)
            result = {"device": row.id, "customer": row.customer, "revoked": row.revoked}
        else:
            from kvitto.store.outbox import lock_devices, queue_command

            with store.transaction():
                if staff:
                    ids = [c.id for c in registry.credentials()
                           if c.staff == staff and not c.revoked]  # fmt: skip
                    if not ids:
                        raise KvittoError(f"--staff {staff}: no live credential in the registry")
                else:
                    ids = [credential or ""]
                rows = [registry.revoke_credential(one, when) for one in ids]
                # The registry's word does not reach a door: each lock keeps its allowlist on
                # flash. A signed `revoke` goes to every lock (kvitto.store.outbox: sent by the
                # collector, kept until the lock's journal shows it).
                locks = lock_devices(store)
                at = int(time.time() * 1000)
                creds = [bytes.fromhex(row.id) for row in rows]
                for lock in locks:
                    queue_command(store, lock, "revoke", {"creds": creds}, at)
            result = {"credentials": [row.id for row in rows], "staff": rows[0].staff,
                      "revoked": rows[0].revoked, "locks": locks}  # fmt: skip
            if credential:
                result["credential"] = rows[0].id
    if output_format == "json":
        click.echo(json.dumps(result))
    else:
        if device:
            what = f"device {device}"
        elif staff:
            what = f"{len(result['credentials'])} credential(s) of {staff}"
        else:
            what = f"credential {result['credential']}"
        click.echo(f"revoked {what} from {result['revoked']}")
        if not device and result["locks"]:
            click.echo(f"queued `revoke` for {len(result['locks'])} lock(s): "
                       "`kvitto command list --open` follows them")  # fmt: skip
        if device:
            click.echo("run `kvitto broker-config` again to remove its broker login")
    return result
