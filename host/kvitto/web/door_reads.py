"""The checks of a door read and its passkey confirmation, apart from the pages (kvitto.web.door).

    read_device(store, device_id, url, now)   # a tag-mode URL: registry, signature, counter, time
    read_sticker(store, sticker_id, url, now) # an NTAG 424 sticker's SUN and counter
    store_read(store, read, url, now)         # the read, once (UNIQUE kind, door, counter)
    confirm_read(store, read_id, answer, rp_id, origin, now)  # the passkey: arrive or depart

Each raises DoorRefused with a code of REFUSALS; the pages show it and quarantine the input.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

from kvitto.errors import KvittoError
from kvitto.evidence.door import (
    AwayProof,
    DoorError,
    DoorProof,
    unb64url,
    verify_assertion,
    verify_device_url,
    verify_sticker_url,
)
from kvitto.store import stale
from kvitto.store.db import Store
from kvitto.store.registry import Credential, Registry, instant
from kvitto.web.visibility import ms

TOLERANCE_S = 5 * 60  # a device's time in its URL against ours


CONFIRM_S = 5 * 60  # from opening the door's URL to confirming with the passkey


OPEN_VISIT_S = 12 * 3600  # an arrive older than this is not closed by the next read


REFUSALS = {
    "unknown_door": "Dörren är inte registrerad i kvitto.",
    "bad_signature": "Länken är inte äkta: dörrens signatur stämmer inte.",
    "replayed": "Länken har redan använts. Blippa dörren igen.",
    "stale": "Länken är för gammal eller dörrens klocka går fel. Blippa dörren igen.",
    "bad_sun": "Klistermärkets kod stämmer inte.",
    "expired": "Det tog för lång tid. Blippa dörren igen.",
    "not_enrolled": "Telefonen är inte registrerad för utföraren som har kunden.",
    "revoked": "Telefonen är spärrad.",
    "bad_assertion": "Bekräftelsen med nyckeln stämmer inte.",
    "other_content": "Bekräftelsen gäller en annan registrering. Fyll i registreringen igen.",
    "other_phone": "Registreringen fylldes i på en annan telefon.",
}


class DoorRefused(KvittoError):
    """A door read or confirmation that is not evidence; `code` keys REFUSALS."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code


# -- a phone's passkey answer: the steps a door read and an away registration share ---------


def parse_assertion(answer: str) -> tuple[str, list[bytes]]:
    """(raw id, [authenticator data, client data JSON, signature]) of a browser's answer."""
    try:
        parsed = json.loads(answer)
        response = parsed["response"]
        return str(parsed["rawId"]), [unb64url(str(response[k])) for k in
                                      ("authenticatorData", "clientDataJSON", "signature")]  # fmt: skip
    except (ValueError, KeyError, TypeError, DoorError):
        raise DoorRefused("bad_assertion", "the assertion is not a WebAuthn credential") from None


def enrolled_passkey(store: Store, raw_id: str) -> tuple[Credential, bytes, int]:
    """The phone a passkey was enrolled for: (credential, COSE key, sign count)."""
    rows = store.execute(
        "SELECT credential, public_key, sign_count FROM passkeys WHERE raw_id = ?", (raw_id,)
    )
    if not rows:
        raise DoorRefused("not_enrolled", f"passkey {raw_id[:16]}… is not enrolled")
    credential = Registry(store).credential(str(rows[0][0]))
    assert credential is not None  # passkeys rows are written with their credential
    return credential, bytes(rows[0][1]), int(rows[0][2])


def refuse_revoked(credential: Credential, now: datetime) -> None:
    if credential.revoked and instant(credential.revoked) <= int(now.timestamp()):
        raise DoorRefused("revoked", f"phone {credential.id} revoked {credential.revoked}")


def checked_assertion(proof: DoorProof | AwayProof, sign_count: int) -> int:
    """The proof's assertion checked (kvitto.evidence.door); the passkey's new sign count."""
    try:
        return verify_assertion(proof, sign_count)
    except DoorError as error:
        raise DoorRefused("bad_assertion", str(error)) from None


def read_device(store: Store, device_id: str, url: str, now: datetime) -> dict[str, Any]:
    """Check a tag-mode URL against the registry and the door's counter; the read to store."""
    device = Registry(store).device(device_id)
    now_s = int(now.timestamp())
    if device is None or (device.revoked_at is not None and device.revoked_at <= now_s):
        raise DoorRefused("unknown_door", f"device {device_id!r} is not registered or revoked")
    try:
        read = verify_device_url(url, device.public_key)
    except DoorError as error:
        raise DoorRefused("bad_signature", str(error)) from None
    if read.device != device_id:
        raise DoorRefused("bad_signature", f"URL names device {read.device!r}")
    _check_counter(store, "device", device_id, read.counter)
    if abs(read.time - now_s) > TOLERANCE_S:
        raise DoorRefused("stale", f"device {device_id}: time {read.time} is "
                          f"{read.time - now_s:+d} s from the server's")  # fmt: skip
    return {"kind": "device", "door": device_id, "customer": device.customer,
            "counter": read.counter, "device_time": read.time}  # fmt: skip


def read_sticker(store: Store, sticker_id: str, url: str, now: datetime) -> dict[str, Any]:
    rows = store.execute(
        "SELECT customer, meta_key, file_key, revoked FROM stickers WHERE id = ?", (sticker_id,)
    )
    if not rows or (rows[0][3] and instant(str(rows[0][3])) <= int(now.timestamp())):
        raise DoorRefused("unknown_door", f"sticker {sticker_id!r} is not registered or revoked")
    customer, meta_key, file_key = str(rows[0][0]), bytes(rows[0][1]), bytes(rows[0][2])
    try:
        counter = verify_sticker_url(url, meta_key, file_key)
    except DoorError as error:
        raise DoorRefused("bad_sun", f"sticker {sticker_id}: {error}") from None
    _check_counter(store, "sticker", sticker_id, counter)
    return {"kind": "sticker", "door": sticker_id, "customer": customer, "counter": counter,
            "device_time": None}  # fmt: skip


def _check_counter(store: Store, kind: str, door: str, counter: int) -> None:
    rows = store.execute(
        "SELECT MAX(counter) FROM door_reads WHERE kind = ? AND door = ?", (kind, door)
    )
    last = rows[0][0] if rows else None
    if last is not None and counter <= int(last):
        raise DoorRefused("replayed", f"{kind} {door}: counter {counter} not above {last}")


def store_read(store: Store, read: dict[str, Any], url: str, now: datetime) -> str:
    read_id = secrets.token_urlsafe(16)
    try:
        store.execute(
            "INSERT INTO door_reads (id, kind, door, customer, counter, device_time, url, "
            "read_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (read_id, read["kind"], read["door"], read["customer"], read["counter"],
             read["device_time"], url, ms(now)),
        )  # fmt: skip
    except Exception as error:
        if store.is_retryable(error):
            raise
        # UNIQUE (kind, door, counter): the same URL opened twice at once
        raise DoorRefused("replayed", f"{read['kind']} {read['door']}: counter "
                          f"{read['counter']} already read") from None  # fmt: skip
    return read_id


def _read(store: Store, read_id: str) -> dict[str, Any] | None:
    rows = store.execute(
        "SELECT kind, door, customer, counter, device_time, url, read_at FROM door_reads "
        "WHERE id = ?",
        (read_id,),
    )
    if not rows:
        return None
    names = ("kind", "door", "customer", "counter", "device_time", "url", "read_at")
    return dict(zip(names, rows[0], strict=True))


def confirm_read(
    store: Store, read_id: str, answer: str, rp_id: str, origin: str, now: datetime
) -> dict[str, Any]:
    """The passkey's assertion over a stored door read: which phone, arrive or depart; the
    proof stored. Raises DoorRefused with the reason."""
    read = _read(store, read_id)
    now_ms = ms(now)
    if read is None or now_ms - int(read["read_at"]) > CONFIRM_S * 1000:
        raise DoorRefused("expired", f"door read {read_id[:8]}… unknown or older than "
                          f"{CONFIRM_S} s")  # fmt: skip
    raw_id, parts = parse_assertion(answer)
    credential, key, sign_count = enrolled_passkey(store, raw_id)
    credential_id = credential.id
    provider_rows = store.execute(
        "SELECT provider FROM customer_providers WHERE customer = ?", (read["customer"],)
    )
    provider = str(provider_rows[0][0]) if provider_rows else ""
    if credential.provider != provider:
        raise DoorRefused("not_enrolled", f"phone {credential_id} is {credential.provider}'s, "
                          f"customer {read['customer']} is {provider or 'no provider'}'s")  # fmt: skip
    refuse_revoked(credential, now)
    proof = DoorProof(
        kind=str(read["kind"]), url=str(read["url"]), credential=credential_id, public_key=key,
        raw_id=unb64url(raw_id), authenticator_data=parts[0], client_data_json=parts[1],
        signature=parts[2], rp_id=rp_id, origin=origin,
    )  # fmt: skip
    new_count = checked_assertion(proof, sign_count)
    action = (
        "depart" if _open_arrive(store, credential, str(read["customer"]), now_ms) else "arrive"
    )
    with store.transaction():
        store.execute("UPDATE passkeys SET sign_count = ? WHERE credential = ?",
                      (new_count, credential_id))  # fmt: skip
        try:
            store.execute(
                "INSERT INTO door_proofs (read_id, provider, customer, credential, action, at, "
                "proof) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (read_id, provider, read["customer"], credential_id, action, now_ms,
                 json.dumps(proof.as_json(), sort_keys=True)),
            )  # fmt: skip
            # door proofs are visits for the rules: the customer's month is judged again
            stale.touch(store, stale.event_marks(str(read["customer"]), now_ms // 1000, now_ms))
        except Exception as error:
            if store.is_retryable(error):
                raise
            raise DoorRefused("replayed", f"door read {read_id[:8]}… confirmed already") from None
    proof_id = int(store.execute("SELECT id FROM door_proofs WHERE read_id = ?", (read_id,))[0][0])
    return {"id": proof_id, "action": action, "customer": read["customer"],
            "provider": provider, "staff": credential.staff, "kind": read["kind"]}  # fmt: skip


def _open_arrive(store: Store, credential: Credential, customer: str, now_ms: int) -> bool:
    rows = store.execute(
        "SELECT action, at FROM door_proofs WHERE credential = ? AND customer = ? "
        "AND action IN ('arrive', 'depart') ORDER BY at DESC, id DESC LIMIT 1",
        (credential.id, customer),
    )
    return bool(rows) and rows[0][0] == "arrive" and now_ms - int(rows[0][1]) < OPEN_VISIT_S * 1000
