"""A phone at the door without an app (issue #20): the door's URL and the staff's passkey.

    challenge = door_challenge(url)                 # what the passkey signs, bound to the URL
    proof = DoorProof(kind="device", url=url, rp_id="kvitto.example.se", origin=…, …)
    verify_door_proof(proof, device_key=registry_key)   # raises DoorError; offline, no server

The phone reads the door's NDEF URL natively: a device in tag mode serves one signed with the
device key (kvitto.evidence.phone.verify_tag_url), a passive NTAG 424 DNA sticker one with a SUN
(kvitto.evidence.ntag424). The browser opens it on kvitto's server and a WebAuthn assertion
(a passkey, user verification required) confirms who: its challenge is SHA-256 of
"kvitto-door-1\\n" ‖ the URL, so the assertion is valid for that one read and no other. The
credential id of a passkey in the registry is the first 16 bytes of SHA-256 of its COSE public
key, so the key a proof carries is bound to the registry's credential without the server.
WebAuthn's signature checks are py_webauthn's (webauthn.verify_authentication_response).

Away from the home (RULES E2) there is no door: the passkey signs the registration itself.

    text = away_registration(provider="p-1", customer="c-1003", activities=["ledsagning"],
                             start=…, end=…, credential=…, nonce=…)   # canonical JSON
    challenge = away_challenge(text)       # SHA-256("kvitto-away-1\n" ‖ text)
    verify_away_proof(AwayProof(kind="away", registration=text, …))  # → the registration

The registration's text is canonical (sorted keys, no spaces, ASCII): a verifier refuses any
other spelling of it, so what the passkey signed has one reading.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, ClassVar, TypeVar, cast

from kvitto.errors import KvittoError
from kvitto.evidence.ntag424 import SunError, parse_sun_url, verify_sun
from kvitto.evidence.phone import PhoneError, TagRead, verify_tag_url

CHALLENGE_PREFIX = b"kvitto-door-1\n"
AWAY_PREFIX = b"kvitto-away-1\n"
KINDS = ("device", "sticker")
AWAY_FIELDS = ("activities", "credential", "customer", "end", "nonce", "provider", "start", "v")
BINARY = ("public_key", "raw_id", "authenticator_data", "client_data_json", "signature")


class DoorError(KvittoError):
    """A door URL or passkey assertion that does not prove what it claims."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise DoorError(f"{text[:40]!r} is not base64url") from None


def door_challenge(url: str) -> bytes:
    """The WebAuthn challenge for one door read: SHA-256("kvitto-door-1\\n" ‖ URL)."""
    return hashlib.sha256(CHALLENGE_PREFIX + url.encode()).digest()


def passkey_credential_id(public_key: bytes) -> str:
    """The registry's id for a passkey: hex of SHA-256(COSE public key)[:16] (32 hex digits,
    like every credential id, FORMATS.md §1)."""
    return hashlib.sha256(public_key).digest()[:16].hex()


def away_registration(
    *, provider: str, customer: str, activities: list[str], start: str, end: str,
    credential: str, nonce: str,
) -> str:  # fmt: skip
    """The canonical text of an away registration (docs/formats.md, door.jsonl `away`): what
    the passkey signs, through away_challenge. `start`, `end`: ISO 8601 with the offset."""
    return json.dumps(
        {"v": 1, "provider": provider, "customer": customer, "activities": list(activities),
         "start": start, "end": end, "credential": credential, "nonce": nonce},
        sort_keys=True, separators=(",", ":"), ensure_ascii=True,
    )  # fmt: skip


def parse_away_registration(text: str) -> dict[str, Any]:
    """The fields of an away registration's text; DoorError unless it is canonical (the text
    away_registration makes of its own fields) with text values and a list of activities."""
    try:
        fields = json.loads(text)
    except ValueError:
        raise DoorError("away registration is not JSON") from None
    if not isinstance(fields, dict) or tuple(sorted(fields)) != AWAY_FIELDS or fields["v"] != 1:
        raise DoorError(f"away registration fields are not {', '.join(AWAY_FIELDS)} (v 1)")
    activities = fields["activities"]
    texts = [v for k, v in fields.items() if k not in ("v", "activities")]
    if (
        not isinstance(activities, list)
        or not activities
        or not all(isinstance(a, str) for a in [*activities, *texts])
    ):
        raise DoorError("away registration values are text and a list of activities")
    canonical = away_registration(**{k: v for k, v in fields.items() if k != "v"})
    if canonical != text:
        raise DoorError("away registration is not in its canonical form")
    return fields


def away_challenge(registration: str) -> bytes:
    """The WebAuthn challenge for one away registration: SHA-256("kvitto-away-1\\n" ‖ text)."""
    return hashlib.sha256(AWAY_PREFIX + registration.encode()).digest()


def _decoded(cls: Any, data: dict[str, object], what: str) -> dict[str, Any]:
    """A proof's fields from its JSON: all text, base64url for the bytes (BINARY)."""
    try:
        values = {field.name: data[field.name] for field in dataclass_fields(cls)}
    except KeyError as missing:
        raise DoorError(f"{what} lacks {missing}") from None
    if not all(isinstance(v, str) for v in values.values()):
        raise DoorError(f"{what} fields are text (base64url for bytes)")
    return {k: unb64url(str(v)) if k in BINARY else str(v) for k, v in values.items()}


_Proof = TypeVar("_Proof", bound="_PasskeyProof")


class _PasskeyProof:
    """What a door's proof and an away registration's proof share: the JSON they travel in
    (bytes as base64url) and their passkey assertion as py_webauthn reads it. The fields are
    each dataclass's own (`raw_id`, `authenticator_data`, `client_data_json`, `signature`)."""

    WHAT: ClassVar[str]

    def as_json(self) -> dict[str, str]:
        values = asdict(cast(Any, self))
        return {k: b64url(v) if isinstance(v, bytes) else v for k, v in values.items()}

    @classmethod
    def from_json(cls: type[_Proof], data: dict[str, object]) -> _Proof:
        return cast(Any, cls)(**_decoded(cls, data, cls.WHAT))

    def assertion_json(self) -> str:
        """The assertion as a browser's PublicKeyCredential.toJSON(), for py_webauthn."""
        proof = cast(Any, self)
        return json.dumps({
            "id": b64url(proof.raw_id), "rawId": b64url(proof.raw_id), "type": "public-key",
            "response": {
                "authenticatorData": b64url(proof.authenticator_data),
                "clientDataJSON": b64url(proof.client_data_json),
                "signature": b64url(proof.signature),
            },
            "clientExtensionResults": {},
        })  # fmt: skip


@dataclass(frozen=True)
class DoorProof(_PasskeyProof):
    """What an auditor re-checks offline: the door's URL, the passkey assertion over it and
    the passkey's public key. `kind`: `device` (tag mode) or `sticker` (NTAG 424 SUN)."""

    kind: str
    url: str
    credential: str  # the registry's credential id (passkey_credential_id of public_key)
    public_key: bytes  # COSE_Key of the passkey, as registered
    raw_id: bytes  # the authenticator's credential id
    authenticator_data: bytes
    client_data_json: bytes
    signature: bytes
    rp_id: str
    origin: str

    WHAT: ClassVar[str] = "door proof"

    def challenge(self) -> bytes:
        return door_challenge(self.url)


@dataclass(frozen=True)
class AwayProof(_PasskeyProof):
    """What an auditor re-checks offline of an away registration (RULES E2, no door): its
    canonical text (away_registration), the passkey assertion over it and the passkey's key."""

    kind: str  # "away"
    registration: str
    credential: str  # the registry's credential id (passkey_credential_id of public_key)
    public_key: bytes
    raw_id: bytes
    authenticator_data: bytes
    client_data_json: bytes
    signature: bytes
    rp_id: str
    origin: str

    WHAT: ClassVar[str] = "away proof"

    def challenge(self) -> bytes:
        return away_challenge(self.registration)


def client_challenge(client_data_json: bytes) -> bytes | None:
    """The challenge a WebAuthn client data JSON says was signed, or None if unreadable: to
    tell an assertion over other content from a bad signature before py_webauthn's check."""
    try:
        return unb64url(str(json.loads(client_data_json)["challenge"]))
    except (ValueError, KeyError, TypeError, DoorError):
        return None


def verify_assertion(
    proof: DoorProof | AwayProof, sign_count: int = 0, expected_origin: str | None = None
) -> int:
    """Check the passkey's assertion over the door URL: the challenge is door_challenge(url)
    (an away registration's: away_challenge(registration)),
    the RP id and origin are the proof's (or `expected_origin`), user presence and user
    verification are set, and the signature verifies with the proof's public key, which is the
    credential's. Returns the authenticator's new sign count."""
    from webauthn import verify_authentication_response
    from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidCBORData

    if passkey_credential_id(proof.public_key) != proof.credential:
        raise DoorError(f"passkey public key is not credential {proof.credential}")
    try:
        verified = verify_authentication_response(
            credential=proof.assertion_json(),
            expected_challenge=proof.challenge(),
            expected_rp_id=proof.rp_id,
            expected_origin=expected_origin or proof.origin,
            credential_public_key=proof.public_key,
            credential_current_sign_count=sign_count,
            require_user_verification=True,
        )
    except (InvalidAuthenticationResponse, InvalidCBORData) as error:
        raise DoorError(f"passkey {proof.credential}: {error}") from None
    except Exception as error:  # py_webauthn raises others on malformed bytes (ValueError, …)
        raise DoorError(f"passkey {proof.credential}: malformed assertion ({error})") from None
    return verified.new_sign_count


def verify_device_url(url: str, device_key: bytes) -> TagRead:
    try:
        return verify_tag_url(url, device_key)
    except PhoneError as error:
        raise DoorError(str(error)) from None


def verify_sticker_url(url: str, meta_key: bytes, file_key: bytes) -> int:
    """Check a sticker's SUN URL (…?e=PICC&c=MAC) with its own keys; its read counter."""
    try:
        return verify_sun(parse_sun_url(url), meta_key, file_key=file_key).counter
    except SunError as error:
        raise DoorError(str(error)) from None


def verify_door_proof(
    proof: DoorProof,
    device_key: bytes | None = None,
    sticker_keys: tuple[bytes, bytes] | None = None,
) -> str:
    """Re-check a stored door proof without the server: the door URL (the device's Ed25519
    signature with `device_key`; a sticker's CMAC only when its keys are given) and the passkey
    assertion bound to that URL. Returns what was checked: `device`, `sticker` or
    `sticker-url-not-checked` (an auditor without the sticker's AES keys)."""
    if proof.kind not in KINDS:
        raise DoorError(f"door proof kind {proof.kind!r} is not one of {KINDS}")
    if proof.kind == "device":
        if device_key is None:
            raise DoorError("a device door proof needs the device's public key")
        verify_device_url(proof.url, device_key)
        checked = "device"
    elif sticker_keys is not None:
        verify_sticker_url(proof.url, *sticker_keys)
        checked = "sticker"
    else:
        try:
            parse_sun_url(proof.url)
        except SunError as error:
            raise DoorError(str(error)) from None
        checked = "sticker-url-not-checked"
    verify_assertion(proof)
    return checked


def verify_away_proof(proof: AwayProof) -> dict[str, Any]:
    """Re-check a stored away registration without the server: its text is canonical, it names
    the proof's credential, and the passkey's assertion is over it (away_challenge) by that
    credential's key. Returns the registration's fields (docs/formats.md, door.jsonl `away`)."""
    if proof.kind != "away":
        raise DoorError(f"away proof kind {proof.kind!r} is not 'away'")
    fields = parse_away_registration(proof.registration)
    if fields["credential"] != proof.credential:
        raise DoorError(f"away registration names passkey {fields['credential']}, "
                        f"the proof {proof.credential}")  # fmt: skip
    verify_assertion(proof)
    return fields
