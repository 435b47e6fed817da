"""The wire under every message: COSE_Sign1 over deterministic CBOR (FORMATS.md §1–2).

The constants of the formats, one error class per way a message fails, the deterministic
encoder (RFC 8949 §4.2.1, independent of the device's), the Sign1 envelope and its signature,
the host's own signer (`sign1`) and the reader of a bundle's CBOR sequence or JSONL.
"""

from __future__ import annotations

import base64
import functools
import io
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kvitto.errors import KvittoError

COSE_SIGN1_TAG = 18
ALG_EDDSA = -8
ORG_KID = b"org"
MAX_MESSAGE_BYTES = 1024  # an event is ~200 bytes; the largest (arrive with SUN data) < 300
MAX_COMMAND_BYTES = 4096  # allow/revoke carry lists of credential ids
EVENT_TYPES = frozenset(
    {
        "arrive", "depart", "unlock", "lock", "deny", "door_open", "door_close", "alarm_call",
        "alarm_checkin", "alarm_checkout", "tag_read", "boot", "clock_sync", "tamper", "health",
    }
)  # fmt: skip
COMMAND_TYPES = frozenset(
    {"ack", "resend", "allow", "revoke", "time", "config", "ota", "schedule", "window"}
)
# FORMATS.md §2 `config`: x = {setting: value}; the device checks ranges and roles itself.
CONFIG_SETTINGS = {
    "debounce_ms": "uint",
    "relock_ms": "uint",
    "answer_s": "uint",
    "tag_mode": "bool",
    "health_s": "uint",
    "fallback": "text",  # a lock without a usable schedule: open_for_allowed | deny (issue #23)
    "door_open_s": "uint",  # a lock's door held open this long is reported (issue #23)
}
VIA_CREDENTIAL = frozenset({"badge", "ntag424", "phone", "lock"})
DEVICE_ID = re.compile(r"[a-z0-9-]{3,32}")
EVENT_KEYS = {
    0: "v", 1: "dev", 2: "seq", 3: "boot", 4: "up", 5: "t", 6: "sync", 7: "type", 8: "cred",
    9: "prev", 10: "x",
}  # fmt: skip
COMMAND_KEYS = {0: "v", 1: "target", 2: "seq", 3: "expires", 7: "type", 10: "x"}
UINT_MAX = 2**64 - 1
# An event's seq, boot, up, t and sync are stored as signed 64-bit integers (SQLite INTEGER,
# PostgreSQL BIGINT): larger values are refused at decode (docs/formats-v1-additions.md), so no
# validly signed event carries a number the store cannot keep.
STORED_UINT_MAX = 2**63 - 1
# Which events carry a credential id (FORMATS.md §1: "events with a credential only").
CRED_REQUIRED = frozenset({"arrive", "depart"})
CRED_OPTIONAL = frozenset({"unlock", "lock", "deny", "alarm_checkin", "alarm_checkout"})


# -- errors: one class per way a message fails -----------------------------------------------


class EvidenceError(KvittoError):
    """A message that is not valid evidence. Subclasses name the failure."""


class MalformedMessage(EvidenceError):
    """Not a tagged COSE_Sign1 array of four items, or not CBOR at all."""


class NotCBOR(MalformedMessage):
    """The bytes are not one well-formed CBOR item."""


class Truncated(NotCBOR):
    """The CBOR item ends before its declared length: the message was cut off."""


class Oversized(MalformedMessage):
    """Larger than any valid event or command can be: refused before decoding."""


class NotCoseSign1(MalformedMessage):
    """Not CBOR tag 18 around [bstr, {}, bstr, bstr(64)]."""


class UnknownAlgorithm(MalformedMessage):
    """The protected header's alg is not EdDSA (-8)."""


class BadHeader(MalformedMessage):
    """The protected header is not exactly {1: -8, 4: kid}, or the unprotected one not {}."""


class NonCanonical(MalformedMessage):
    """Decodes, but not in deterministic encoding (RFC 8949 §4.2.1): two byte forms of one event
    must not both be evidence."""


class BadSignature(EvidenceError):
    """The Ed25519 signature does not verify under the given public key."""


class BadPayload(EvidenceError):
    """The payload map breaks FORMATS.md §1: missing, unknown or mistyped fields."""


class UnsupportedVersion(BadPayload):
    """Key 0 is not format version 1."""


class MissingField(BadPayload):
    """A required key is absent (or `t` without `sync`, or an arrive without `cred`)."""


class UnknownField(BadPayload):
    """A key FORMATS.md does not define, in the payload or in `x`."""


class FieldType(BadPayload):
    """A field of the wrong type or size (dev pattern, 16-byte cred, 32-byte prev, uint...)."""


class UnknownEventType(BadPayload):
    """Key 7 names no event type of FORMATS.md §1."""


class UnknownCommandType(BadPayload):
    """Key 7 names no command type of FORMATS.md §2."""


class KidMismatch(BadPayload):
    """The signed kid does not name the device in the payload (or `org` for a command)."""


class WrongTarget(BadPayload):
    """A command addressed to another device."""


class Expired(BadPayload):
    """A command past its expiry."""


class ChainError(EvidenceError):
    """A device's stream of events does not hold together. Subclasses name how."""


class SequenceGap(ChainError):
    """Sequence numbers skip: events are missing (the collector asks for a resend)."""


class SequenceRepeat(ChainError):
    """A sequence number repeats or goes back: a duplicate or a reused number."""


class BrokenChain(ChainError):
    """`prev` is not SHA-256 of the previous payload (or not zero for seq 1)."""


class WrongDevice(ChainError):
    """An event of another device in this device's stream."""


class BootRegression(ChainError):
    """The boot counter goes back, or uptime goes back within one boot."""


# -- deterministic CBOR (RFC 8949 §4.2.1), independent of the device's encoder ----------------


def canonical(value: Any) -> bytes:
    """Deterministic encoding: cbor2 for each scalar, map keys sorted bytewise by their encoding
    (cbor2's canonical=True sorts length-first, RFC 7049 §3.9, which differs for mixed keys)."""
    out = bytearray()
    _canonical(value, out)
    return bytes(out)


def _head(major: int, value: int, out: bytearray) -> None:
    if value < 24:
        out.append(major << 5 | value)
    else:
        size = 1 if value < 0x100 else 2 if value < 0x10000 else 4 if value < 0x100000000 else 8
        out.append(major << 5 | {1: 24, 2: 25, 4: 26, 8: 27}[size])
        out += value.to_bytes(size, "big")


def _canonical(value: Any, out: bytearray) -> None:
    if isinstance(value, bool) or value is None:
        out += cbor2.dumps(value)
    elif isinstance(value, int):
        if not -(2**64) <= value <= UINT_MAX:
            raise NonCanonical(f"integer {value} outside the 64-bit range")
        _head(0, value, out) if value >= 0 else _head(1, -1 - value, out)
    elif isinstance(value, bytes):
        _head(2, len(value), out)
        out += value
    elif isinstance(value, str):
        raw = value.encode()
        _head(3, len(raw), out)
        out += raw
    elif isinstance(value, (list, tuple)):
        _head(4, len(value), out)
        for item in value:
            _canonical(item, out)
    elif isinstance(value, Mapping):
        items = sorted((canonical(key), item) for key, item in value.items())
        _head(5, len(items), out)
        for key, item in items:
            out += key
            _canonical(item, out)
    elif isinstance(value, cbor2.CBORTag):
        _head(6, value.tag, out)
        _canonical(value.value, out)
    else:
        raise NonCanonical(
            f"{type(value).__name__} is not part of the format (no floats, no tags)"
        )


def _decode(data: bytes, what: str) -> Any:
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except cbor2.CBORDecodeEOF:
        raise Truncated(
            f"{what}: truncated, the CBOR item needs more than {len(data)} bytes"
        ) from None
    except Exception as error:  # cbor2 raises several types for broken input
        raise NotCBOR(f"{what}: not CBOR: {error}") from None
    if stream.tell() != len(data):
        raise NotCBOR(f"{what}: {len(data) - stream.tell()} bytes after the CBOR item")
    if not (_plain(value) and cbor2.dumps(value, canonical=True) == data):
        # The authoritative (slower, pure-Python) check, which also names what is wrong.
        if canonical(value) != data:
            raise NonCanonical(f"{what}: not in deterministic encoding (RFC 8949 §4.2.1)")
    return value


def _plain(value: Any) -> bool:
    """True when cbor2's C encoder, canonical=True, must give exactly the RFC 8949 §4.2.1 bytes:
    only the format's types, integers within 64 bits, and maps whose keys share one CBOR major
    type (there the length-first order of RFC 7049 §3.9 and the bytewise order of §4.2.1 agree,
    since the head's first byte grows with the length). Exact type checks: this runs per event."""
    kind = type(value)
    if kind is int:
        return -(2**64) <= value <= UINT_MAX
    if kind is bytes or kind is str or kind is bool or value is None:
        return True
    if kind is list or kind is tuple:
        return all(_plain(item) for item in value)
    if isinstance(value, Mapping):
        key_major = -1
        for key, item in value.items():
            key_kind = type(key)
            if key_kind is int:
                if not -(2**64) <= key <= UINT_MAX:
                    return False
                major = 0 if key >= 0 else 1
            elif key_kind is str:
                major = 3
            elif key_kind is bytes:
                major = 2
            else:
                return False
            if major != key_major and key_major != -1:
                return False
            key_major = major
            if not _plain(item):
                return False
        return True
    return False


# -- COSE_Sign1 --------------------------------------------------------------------------------


def split_sign1(message: bytes) -> tuple[Mapping[Any, Any], bytes, bytes, bytes]:
    """(protected header map, protected bytes, payload bytes, signature) of a COSE_Sign1.

    Checks the envelope only: tag 18, four items, byte strings, an empty unprotected map,
    deterministic encoding, alg EdDSA and a kid; not the signature and not the payload.
    """
    if len(message) > MAX_COMMAND_BYTES:
        raise Oversized(f"message of {len(message)} bytes; no event or command is that large")
    outer = _decode(message, "message")
    if not isinstance(outer, cbor2.CBORTag) or outer.tag != COSE_SIGN1_TAG:
        raise NotCoseSign1("not a tagged COSE_Sign1 (CBOR tag 18)")
    parts = outer.value
    if not isinstance(parts, (list, tuple)) or len(parts) != 4:
        raise NotCoseSign1("COSE_Sign1 must be an array of four items")
    protected_bytes, unprotected, payload, signature = parts
    if not isinstance(protected_bytes, bytes) or not isinstance(payload, bytes):
        raise NotCoseSign1("protected header and payload must be byte strings")
    if not isinstance(signature, bytes) or len(signature) != 64:
        raise NotCoseSign1("the signature must be a 64-byte string")
    if not isinstance(unprotected, Mapping):
        raise NotCoseSign1("the unprotected header must be a map")
    if unprotected:
        raise BadHeader("the unprotected header must be empty (FORMATS.md §1)")
    protected = _decode(protected_bytes, "protected header")
    if not isinstance(protected, Mapping):
        raise BadHeader("protected header is not a map")
    if protected.get(1) != ALG_EDDSA:
        raise UnknownAlgorithm(f"alg must be EdDSA (-8), got {protected.get(1)!r}")
    if not isinstance(protected.get(4), bytes):
        raise BadHeader("protected header has no kid byte string (label 4)")
    if set(protected) != {1, 4}:
        raise BadHeader(f"protected header labels {sorted(map(repr, protected))}: only 1 and 4")
    return protected, protected_bytes, payload, signature


def sig_structure(protected_bytes: bytes, payload: bytes) -> bytes:
    # RFC 9052 §4.4: ["Signature1", body_protected, external_aad, payload]
    return cbor2.dumps(["Signature1", protected_bytes, b"", payload])


def _check_signature(public_key: bytes, protected_bytes: bytes, payload: bytes, sig: bytes):
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            sig, sig_structure(protected_bytes, payload)
        )
    except (InvalidSignature, ValueError):
        raise BadSignature("Ed25519 signature does not verify") from None


# -- reading bundles --------------------------------------------------------------------------


def key_id(message: bytes) -> str:
    """The device id a message claims (its kid), before any verification."""
    protected, _, _, _ = split_sign1(message)
    return protected[4].decode("utf-8", "replace")


def read_messages(path: Path) -> Iterator[tuple[int, bytes]]:
    """(position, message) from a CBOR sequence (RFC 8742) or JSONL of base64 messages.

    Position is the 1-based item number for CBOR sequences and the line number for JSONL.
    """
    data = path.read_bytes()
    if path.suffix == ".jsonl":
        for number, line in enumerate(data.decode().splitlines(), start=1):
            if line.strip():
                try:
                    yield number, base64.b64decode(line.strip().strip('"'), validate=True)
                except ValueError:
                    raise EvidenceError(f"{path} line {number}: not base64") from None
        return
    stream = io.BytesIO(data)
    start = number = 0
    while start < len(data):
        number += 1
        end = _sign1_end(data, start)
        if end < 0:  # not the usual shape: cbor2 finds the end, or says what is wrong
            stream.seek(start)
            try:
                cbor2.load(stream)
            except Exception as error:
                raise EvidenceError(
                    f"{path} item {number} (byte {start}): not a CBOR item: {error}"
                ) from None
            end = stream.tell()
        yield number, data[start:end]
        start = end


def _sign1_end(data: bytes, start: int) -> int:
    """Where the item at `start` ends if it is tag 18 around [bstr, {}, bstr, bstr(64)] with
    heads of at most three bytes, read from the heads alone (the usual evidence item, framed
    without decoding it); -1 for any other item, which cbor2 then frames."""
    try:
        if data[start] != 0xD2 or data[start + 1] != 0x84:
            return -1
        at = start + 2
        head = data[at]
        if 0x40 <= head < 0x58:
            at += 1 + head - 0x40
        elif head == 0x58:
            at += 2 + data[at + 1]
        else:
            return -1
        if data[at] != 0xA0:
            return -1
        at += 1
        head = data[at]
        if 0x40 <= head < 0x58:
            at += 1 + head - 0x40
        elif head == 0x58:
            at += 2 + data[at + 1]
        elif head == 0x59:
            at += 3 + (data[at + 1] << 8 | data[at + 2])
        else:
            return -1
        if data[at] != 0x58 or data[at + 1] != 0x40:
            return -1
    except IndexError:
        return -1
    return at + 66 if at + 66 <= len(data) else -1


@functools.lru_cache(maxsize=64)
def _signing_key(secret: bytes) -> Ed25519PrivateKey:
    # Deriving the key from its seed costs as much as a signature: the collector signs an
    # ack per device several times a second with the one organisation key.
    return Ed25519PrivateKey.from_private_bytes(secret)


@functools.lru_cache(maxsize=64)
def _protected(kid: bytes) -> bytes:
    return canonical({1: ALG_EDDSA, 4: kid})


def sign1(secret: bytes, kid: bytes, payload: bytes) -> bytes:
    """A tagged COSE_Sign1 (alg -8) over any payload bytes: the host's own signer, for commands,
    test vectors and simulated devices. It checks nothing about the payload."""
    protected_bytes = _protected(kid)
    signature = _signing_key(secret).sign(sig_structure(protected_bytes, payload))
    # canonical(CBORTag(18, [protected, {}, payload, signature])), written out: the collector
    # signs an ack per device and batch (tests/test_cose.py compares the two).
    out = bytearray(b"\xd2\x84")
    _head(2, len(protected_bytes), out)
    out += protected_bytes
    out.append(0xA0)
    _head(2, len(payload), out)
    out += payload
    _head(2, len(signature), out)
    out += signature
    return bytes(out)
