"""Phones on the host: the kvitto challenge-response (reader mode) and tag-mode URLs.

    key_id = phone_key_id(enrolled_public_key)               # what the phone answers with
    verify_answer(enrolled_public_key, nonce, "tag-0042", key_id, signature)
    read = verify_tag_url(url, device_public_key)           # a phone read the door device

Protocol and byte layouts: docs/nfc.md. Reader mode: the device SELECTs the kvitto AID on the
phone's HCE app and sends CHALLENGE(nonce 16 ‖ device id); the phone answers with its key id
(16) and an Ed25519 signature over nonce ‖ device id. Tag mode: the device serves an NDEF URL
signed with the device key over everything before "&s=".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kvitto.errors import KvittoError

KVITTO_AID = b"\xf0kvitto\x01"  # proprietary RID 0xF0 (ISO/IEC 7816-5), "kvitto", version 1
INS_CHALLENGE = 0x10
NONCE_BYTES = 16


class PhoneError(KvittoError):
    """A phone answer or tag-mode URL that does not prove what it claims."""


def phone_key_id(public_key: bytes) -> bytes:
    """The phone credential's raw id: SHA-256 of its Ed25519 public key, first 16 bytes.
    The event's `cred` is HMAC(salt, this), like any other credential."""
    if len(public_key) != 32:
        raise PhoneError(f"phone public key is {len(public_key)} bytes, expected 32")
    return hashlib.sha256(public_key).digest()[:16]


def challenge_message(nonce: bytes, device_id: str) -> bytes:
    if len(nonce) != NONCE_BYTES:
        raise PhoneError(f"nonce is {len(nonce)} bytes, expected {NONCE_BYTES}")
    return nonce + device_id.encode()


def answer(private_key: Ed25519PrivateKey, nonce: bytes, device_id: str) -> bytes:
    """What the phone app returns (key id 16 ‖ signature 64): for tests and the demo."""
    public = private_key.public_key().public_bytes_raw()
    return phone_key_id(public) + private_key.sign(challenge_message(nonce, device_id))


def verify_answer(
    public_key: bytes, nonce: bytes, device_id: str, key_id: bytes, signature: bytes
) -> None:
    """Raise PhoneError unless `signature` is the enrolled phone's over nonce ‖ device id."""
    if key_id != phone_key_id(public_key):
        raise PhoneError(f"answer key id {key_id.hex()} is not the enrolled phone's")
    if len(signature) != 64:
        raise PhoneError(f"phone signature is {len(signature)} bytes, expected 64")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, challenge_message(nonce, device_id)
        )
    except InvalidSignature:
        raise PhoneError(
            f"phone {key_id.hex()}: signature over the device {device_id!r} nonce does not verify"
        ) from None


@dataclass(frozen=True)
class TagRead:
    """A verified tag-mode URL: which device, its read counter, its clock (Unix seconds)."""

    device: str
    counter: int
    time: int


def _b64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise PhoneError(f"signature {text!r} is not base64url") from None


def verify_tag_url(url: str, device_public_key: bytes) -> TagRead:
    """Check a tag-mode URL: https://HOST/t/DEVICE?c=COUNTER&t=TIME&s=SIG, where SIG is the
    device's Ed25519 signature over the URL text before "&s=" (docs/nfc.md)."""
    signed, marker, sig_text = url.partition("&s=")
    if not marker:
        raise PhoneError(f"tag URL has no signature: {url!r}")
    parts = urlsplit(signed)
    path = parts.path.split("/")
    query = parse_qs(parts.query)
    if len(path) < 3 or path[-2] != "t" or not path[-1]:
        raise PhoneError(f"tag URL path {parts.path!r} is not /t/<device>")
    try:
        counter = int(query["c"][0])
        when = int(query["t"][0])
    except (KeyError, ValueError):
        raise PhoneError(f"tag URL needs numeric c= and t=: {url!r}") from None
    try:
        Ed25519PublicKey.from_public_bytes(device_public_key).verify(
            _b64url(sig_text), signed.encode()
        )
    except (InvalidSignature, ValueError):
        raise PhoneError(f"tag URL signature does not verify for device {path[-1]!r}") from None
    return TagRead(device=path[-1], counter=counter, time=when)


def credential_id(salt: bytes, raw: bytes) -> bytes:
    """FORMATS.md §1 key 8: HMAC-SHA256(salt, raw credential)[:16]."""
    return hmac.new(salt, raw, hashlib.sha256).digest()[:16]


def verify_phone_event(
    x: dict, cred: bytes, device_id: str, public_key: bytes, salt: bytes | None = None
) -> None:
    """Check an arrive/depart event's phone proof: x = {"via": "phone", "nonce", "sig"}.
    With `salt`, also that the event's credential id is this phone's."""
    nonce, signature = x.get("nonce"), x.get("sig")
    if not isinstance(nonce, bytes) or not isinstance(signature, bytes):
        raise PhoneError("event x lacks the phone's nonce and sig (bstr)")
    key_id = phone_key_id(public_key)
    if salt is not None and credential_id(salt, key_id) != cred:
        raise PhoneError(f"event credential {cred.hex()} is not the phone {key_id.hex()}")
    verify_answer(public_key, nonce, device_id, key_id, signature)
