"""Signed events and commands on the host: decode, verify and sign (FORMATS.md §1–2).

    from kvitto.evidence.events import verify_event, read_messages
    for message in read_messages(Path("case/evidence.cbor-seq")):
        event = verify_event(message, public_key)   # raises an EvidenceError subclass

The device encodes with its own small CBOR/COSE code; the host uses cbor2 and cryptography, so
two independent implementations must agree (tests/vectors/). Verification is strict: one event
has exactly one valid byte form, and each way a message can fail has its own named error.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
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
COMMAND_TYPES = frozenset({"ack", "resend", "allow", "revoke", "time", "config"})
# FORMATS.md §2 `config`: x = {setting: value}; the device checks ranges and roles itself.
CONFIG_SETTINGS = {
    "debounce_ms": "uint",
    "relock_ms": "uint",
    "answer_s": "uint",
    "tag_mode": "bool",
}
VIA_CREDENTIAL = frozenset({"badge", "ntag424", "phone", "lock"})
DEVICE_ID = re.compile(r"[a-z0-9-]{3,32}")
EVENT_KEYS = {
    0: "v", 1: "dev", 2: "seq", 3: "boot", 4: "up", 5: "t", 6: "sync", 7: "type", 8: "cred",
    9: "prev", 10: "x",
}  # fmt: skip
COMMAND_KEYS = {0: "v", 1: "target", 2: "seq", 3: "expires", 7: "type", 10: "x"}
UINT_MAX = 2**64 - 1
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


# -- data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One verified device event. `payload` is the exact signed bytes (the chain hashes them)."""

    dev: str
    seq: int
    boot: int
    up: int
    type: str
    prev: bytes
    t: int | None = None
    sync: int | None = None
    cred: bytes | None = None
    x: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""
    message: bytes = b""

    @property
    def hash(self) -> bytes:
        """SHA-256 of the payload: what the next event's `prev` must be."""
        return hashlib.sha256(self.payload).digest()


@dataclass(frozen=True)
class Command:
    """One verified command to a device (FORMATS.md §2)."""

    target: str
    seq: int
    expires: int
    type: str
    x: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""
    message: bytes = b""


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


def verify_event(message: bytes, public_key: bytes) -> Event:
    """Verify a device event's signature and decode its payload, or raise an EvidenceError."""
    if len(message) > MAX_MESSAGE_BYTES:
        raise Oversized(f"event of {len(message)} bytes (at most {MAX_MESSAGE_BYTES})")
    protected, protected_bytes, payload, signature = split_sign1(message)
    _check_signature(public_key, protected_bytes, payload, signature)
    event = decode_payload(payload, message)
    if protected[4] != event.dev.encode():
        raise KidMismatch(f"kid {protected[4]!r} does not name the device {event.dev!r}")
    return event


def verify_stream(messages: Iterable[bytes], public_key: bytes) -> list[Event]:
    """Verify each message and check the sequence and chain over them (one device)."""
    events = [verify_event(message, public_key) for message in messages]
    check_stream(events)
    return events


# -- payload fields (FORMATS.md §1) -------------------------------------------------------------


def _uint(fields: Mapping[Any, Any], key: int, names: Mapping[int, str], lowest: int = 0) -> int:
    value = fields[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= UINT_MAX:
        raise FieldType(f"payload key {key} ({names[key]}): {value!r} is not an unsigned integer")
    return value


def _bstr(fields: Mapping[Any, Any], key: int, size: int) -> bytes:
    value = fields[key]
    if not isinstance(value, bytes) or len(value) != size:
        raise FieldType(f"payload key {key} ({EVENT_KEYS[key]}): must be {size} bytes")
    return value


def _device_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not DEVICE_ID.fullmatch(value):
        raise FieldType(f"{where}: {value!r} does not match [a-z0-9-]{{3,32}}")
    return value


def _fields(payload: bytes, keys: Mapping[int, str], required: Iterable[int]) -> dict[Any, Any]:
    fields = _decode(payload, "payload")
    if not isinstance(fields, Mapping):
        raise BadPayload("payload is not a map")
    for key in fields:
        # type(): True and False hash and compare as 1 and 0, yet are other CBOR items.
        if type(key) is not int or key not in keys:
            raise UnknownField(f"payload key {key!r} is not defined by FORMATS.md")
    for key in required:
        if key not in fields:
            raise MissingField(f"payload lacks key {key} ({keys[key]})")
    if type(fields[0]) is not int or fields[0] != 1:
        raise UnsupportedVersion(f"payload key 0 (v): version {fields[0]!r}, only 1 is known")
    return dict(fields)


def decode_payload(payload: bytes, message: bytes = b"") -> Event:
    """An event payload checked field by field against FORMATS.md §1."""
    fields = _fields(payload, EVENT_KEYS, (0, 1, 2, 3, 4, 7, 9))
    dev = _device_id(fields[1], "payload key 1 (dev)")
    seq = _uint(fields, 2, EVENT_KEYS, lowest=1)
    boot = _uint(fields, 3, EVENT_KEYS)
    up = _uint(fields, 4, EVENT_KEYS)
    event_type = fields[7]
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise UnknownEventType(f"payload key 7 (type): {event_type!r} is not an event type")
    prev = _bstr(fields, 9, 32)
    if (5 in fields) != (6 in fields):
        raise MissingField("payload keys 5 (t) and 6 (sync) go together")
    t = _uint(fields, 5, EVENT_KEYS) if 5 in fields else None
    sync = _uint(fields, 6, EVENT_KEYS) if 6 in fields else None
    cred = _bstr(fields, 8, 16) if 8 in fields else None
    if cred is None and event_type in CRED_REQUIRED:
        raise MissingField(f"payload key 8 (cred): a {event_type} event names its credential")
    if cred is not None and event_type not in CRED_REQUIRED | CRED_OPTIONAL:
        raise UnknownField(f"payload key 8 (cred): a {event_type} event has no credential")
    x = fields.get(10)
    if x is not None:
        if not isinstance(x, Mapping):
            raise FieldType("payload key 10 (x): must be a map")
        if not x:
            raise FieldType("payload key 10 (x): absent when empty, never an empty map")
    x = dict(x or {})
    _check_x(event_type, x)
    return Event(
        dev=dev, seq=seq, boot=boot, up=up, type=event_type, prev=prev, t=t, sync=sync,
        cred=cred, x=x, payload=payload, message=message,
    )  # fmt: skip


def _x_field(x: Mapping[str, Any], name: str, kind: str, required: bool = True) -> None:
    if name not in x:
        if required:
            raise MissingField(f"payload key 10 (x): lacks {name!r}")
        return
    value = x[name]
    if kind in ("uint", "int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        ok = ok and -(2**63) <= value <= UINT_MAX and (kind == "int" or value >= 0)
    elif kind == "text":
        ok = isinstance(value, str) and 1 <= len(value) <= 32
    else:  # bytes: NTAG 424 PICC data ‖ CMAC and the like
        ok = isinstance(value, bytes) and 1 <= len(value) <= 64
    if not ok:
        raise FieldType(f"payload key 10 (x): {name!r} = {value!r} is not a {kind}")


def _only(x: Mapping[str, Any], event_type: str, *names: str) -> None:
    for name in x:
        if name not in names:
            raise UnknownField(f"payload key 10 (x): {name!r} is not a field of {event_type}")


def _lock_tap_proof(event_type: str, x: Mapping[str, Any]) -> None:
    """A lock journals the proof of the tap behind an event (docs/formats-v1-additions.md):
    an NTAG 424 SUN or a phone's nonce and answer, never both."""
    _only(x, event_type, "via", "sun", "nonce", "sig")
    for name in ("sun", "nonce", "sig"):
        _x_field(x, name, "bytes", required=False)
    if "sun" in x and ("nonce" in x or "sig" in x):
        raise UnknownField(f"payload key 10 (x): {event_type} has a SUN and a phone's answer")


def _check_x(event_type: str, x: dict[str, Any]) -> None:
    """FORMATS.md §1's x fields per event type; boot, tamper and health are free-form maps."""
    if event_type in ("arrive", "depart"):
        _x_field(x, "via", "text")
        if x["via"] not in VIA_CREDENTIAL:
            raise FieldType(
                f"payload key 10 (x): via {x['via']!r} is not one of {sorted(VIA_CREDENTIAL)}"
            )
        if x["via"] == "phone":
            # DESIGN.md, Taps: the device's challenge and the phone's Ed25519 answer travel with
            # the event so the host can check the phone's enrolled key.
            _only(x, event_type, "via", "nonce", "sig")
            _x_field(x, "nonce", "bytes", required=False)
            _x_field(x, "sig", "bytes", required=False)
        elif x["via"] == "lock":
            _lock_tap_proof(event_type, x)
        else:
            _only(x, event_type, "via", "sun")
            _x_field(x, "sun", "bytes", required=False)
    elif event_type in ("unlock", "lock", "deny"):
        _x_field(x, "via", "text", required=False)
        _lock_tap_proof(event_type, x)
    elif event_type in ("door_open", "door_close"):
        _only(x, event_type)
    elif event_type in ("alarm_call", "alarm_checkin", "alarm_checkout"):
        _only(x, event_type, "alarm")
        _x_field(x, "alarm", "uint", required=event_type == "alarm_call")
    elif event_type == "tag_read":
        _only(x, event_type, "ctr")
        _x_field(x, "ctr", "uint")
    elif event_type == "clock_sync":
        _only(x, event_type, "offset_ms", "src")
        _x_field(x, "offset_ms", "int")
        _x_field(x, "src", "text", required=False)
    else:
        _free_form(x, f"payload key 10 (x) of {event_type}", depth=0)


def _free_form(value: Any, where: str, depth: int) -> None:
    # "free-form small map": text keys, small scalars, at most two levels.
    if isinstance(value, Mapping):
        if depth > 1 or len(value) > 16:
            raise FieldType(f"{where}: maps nest at most twice, with at most 16 entries")
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > 32:
                raise FieldType(f"{where}: key {key!r} must be text of at most 32 characters")
            _free_form(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, (list, tuple)):
        if depth > 1 or len(value) > 16:
            raise FieldType(f"{where}: lists nest at most twice, with at most 16 items")
        for item in value:
            _free_form(item, where, depth + 1)
    elif isinstance(value, (str, bytes)):
        if len(value) > 64:
            raise FieldType(f"{where}: text or bytes longer than 64")
    elif not (value is None or isinstance(value, (bool, int))):
        raise FieldType(f"{where}: {type(value).__name__} is not allowed")


# -- many events under registered keys: one fused pass (re-checking a bundle) ------------------

_SIG1_PREFIX = b"\x84\x6aSignature1"  # RFC 9052 §4.4: array(4), tstr(10) "Signature1"
_TEXT, _BYTES, _UINT, _INT = "text", "bytes", "uint", "int"


def _event_shapes() -> dict[bytes, tuple[bool, bool, bool]]:
    """The payload key sequences the fast path takes, as bytes (each key is < 24 and so one byte
    on the wire), in deterministic order, with which optional groups they carry: (t and sync,
    cred, x). Any other sequence — missing, unknown or misordered keys — is decode_payload's."""
    shapes = {}
    for time in (False, True):
        for cred in (False, True):
            for x in (False, True):
                keys = [0, 1, 2, 3, 4, *(5, 6)[: 2 * time], 7, *(8,)[:cred], 9, *(10,)[:x]]
                shapes[bytes(keys)] = (time, cred, x)
    return shapes


def _x_shapes() -> dict[str, dict[tuple[str, ...], tuple[Any, ...]]]:
    """Per event type, the non-empty `x` key tuples the fast path takes (RFC 8949 §4.2.1 order)
    with the kind of each value: _TEXT, _BYTES, _UINT, _INT or a set of allowed texts. The same
    rules as _check_x; free-form maps (boot, tamper, health) are left to it."""

    def shape(**kinds: Any) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        names = tuple(sorted(kinds, key=canonical))
        return names, tuple(kinds[name] for name in names)

    phone = frozenset({"phone"})
    answered = frozenset({"phone", "lock"})  # a lock journals the phone's answer too
    visit = dict(
        [
            shape(via=VIA_CREDENTIAL),
            shape(via=VIA_CREDENTIAL - phone, sun=_BYTES),
            shape(via=answered, nonce=_BYTES),
            shape(via=answered, sig=_BYTES),
            shape(via=answered, nonce=_BYTES, sig=_BYTES),
        ]
    )
    via = dict(
        [
            shape(via=_TEXT),
            shape(via=_TEXT, sun=_BYTES),
            shape(via=_TEXT, nonce=_BYTES),
            shape(via=_TEXT, sig=_BYTES),
            shape(via=_TEXT, nonce=_BYTES, sig=_BYTES),
        ]
    )
    alarm = dict([shape(alarm=_UINT)])
    return {
        "arrive": visit, "depart": visit, "unlock": via, "lock": via, "deny": via,
        "alarm_call": alarm, "alarm_checkin": alarm, "alarm_checkout": alarm,
        "tag_read": dict([shape(ctr=_UINT)]),
        "clock_sync": dict([shape(offset_ms=_INT), shape(offset_ms=_INT, src=_TEXT)]),
    }  # fmt: skip


_EVENT_SHAPES = _event_shapes()
_X_SHAPES = _x_shapes()
# Types whose x may be absent (the others require a field in it; _check_x names which).
_X_OPTIONAL = frozenset(
    {"unlock", "lock", "deny", "door_open", "door_close", "alarm_checkin", "alarm_checkout",
     "boot", "tamper", "health"}
)  # fmt: skip
_CRED_ALLOWED = CRED_REQUIRED | CRED_OPTIONAL


class EventVerifier:
    """verify_event for many messages under registered device keys, fused for the common case.

        verifier = EventVerifier(lambda device_id: keys.get(device_id))
        event = verifier.event(message)   # the Event verify_event would return, or None

    None means "not decided here": an unregistered kid, any byte that is not the one expected
    form, a bad signature or a payload error. The caller then asks verify_event, which names
    the failure; tests/test_evidence_fastpath.py checks that an Event comes back only where
    verify_event returns the same Event. The common case costs one slice-by-slice match of the
    envelope's deterministic bytes, one Ed25519 check (the Sig_structure is a prefix per device
    plus the message's own payload bytes), one cbor2 decode of the payload and one plain cbor2
    re-encode: with exact types and key orders checked, equal bytes prove the deterministic
    encoding (RFC 8949 §4.2.1) without cbor2's slower canonical mode.
    """

    def __init__(self, public_key_of: Callable[[str], bytes | None]) -> None:
        self._public_key_of = public_key_of
        # encoded protected header (bstr with head) -> (device id, key, Sig_structure prefix)
        self._devices: dict[bytes, tuple[str, Ed25519PublicKey, bytes] | None] = {}

    def _learn(self, header: bytes) -> tuple[str, Ed25519PublicKey, bytes] | None:
        """The device a protected header names, if the header is exactly canonical({1: -8,
        4: kid}) as a byte string and the kid is a registered device id."""
        kid_at = header.find(b"\xa2\x01\x27\x04")  # {1: -8, 4: …} after the bstr head
        kid = header[kid_at + 5 :] if kid_at in (1, 2) else b""
        if header[kid_at + 4 : kid_at + 5] == b"\x58":  # a kid of 24 bytes or more
            kid = kid[1:]
        try:
            device_id = kid.decode()
        except UnicodeDecodeError:
            device_id = ""
        device = None
        expected = canonical(canonical({1: ALG_EDDSA, 4: kid}))
        if header == expected and DEVICE_ID.fullmatch(device_id):
            public_key = self._public_key_of(device_id)
            try:
                key = Ed25519PublicKey.from_public_bytes(public_key) if public_key else None
            except ValueError:
                key = None
            if key is not None:
                device = (device_id, key, _SIG1_PREFIX + header + b"\x40")
        self._devices[header] = device
        return device

    def event(self, message: bytes) -> Event | None:
        """The verified Event, or None where verify_event is to decide (see the class)."""
        size = len(message)
        # FORMATS.md §1 in its one deterministic form: 0xd2 tag 18, 0x84 array(4), the protected
        # bstr, 0xa0 the empty unprotected map, the payload bstr, 0x58 0x40 the 64-byte signature.
        if size > MAX_MESSAGE_BYTES or size < 80 or message[0] != 0xD2 or message[1] != 0x84:
            return None
        head = message[2]
        if 0x40 <= head < 0x58:
            header_end = head - 0x3D  # 3 + length
        elif head == 0x58 and message[3] >= 24:
            header_end = message[3] + 4
        else:
            return None
        if size < header_end + 68:
            return None
        header = message[2:header_end]
        device = self._devices.get(header)
        if device is None and header not in self._devices:
            device = self._learn(header)
        if device is None or message[header_end] != 0xA0:
            return None
        device_id, public_key, signed_prefix = device
        head = message[header_end + 1]
        if 0x40 <= head < 0x58:
            start, end = header_end + 2, header_end + 2 + head - 0x40
        elif head == 0x58 and message[header_end + 2] >= 24:
            start = header_end + 3
            end = start + message[header_end + 2]
        elif head == 0x59 and message[header_end + 2] > 0:  # 256 bytes or more
            start = header_end + 4
            end = start + int.from_bytes(message[header_end + 2 : start], "big")
        else:
            return None
        if end + 66 != size or message[end] != 0x58 or message[end + 1] != 0x40:
            return None
        try:
            public_key.verify(message[end + 2 :], signed_prefix + message[header_end + 1 : end])
        except InvalidSignature:
            return None

        payload = message[start:end]
        try:
            fields = cbor2.loads(payload)
            # Keys 0 and 1 and v = 1 as the first three bytes: bytes() below would take
            # False/True for 0/1; every other key must be an int for bytes() to succeed.
            shape = None
            if type(fields) is dict and payload[1:4] == b"\x00\x01\x01":
                shape = _EVENT_SHAPES.get(bytes(fields))
        except Exception:  # cbor2 raises several types; bytes() TypeError/ValueError for keys
            shape = None
        if shape is None:
            return self._decided_by_payload(payload, message, device_id)
        seq, boot, up, event_type, prev = fields[2], fields[3], fields[4], fields[7], fields[9]
        has_time, has_cred, has_x = shape
        t = sync = cred = None
        x: dict[str, Any] = {}
        ok = (
            fields[1] == device_id
            and type(seq) is int and 1 <= seq <= UINT_MAX
            and type(boot) is int and 0 <= boot <= UINT_MAX
            and type(up) is int and 0 <= up <= UINT_MAX
            and type(event_type) is str and event_type in EVENT_TYPES
            and type(prev) is bytes and len(prev) == 32
        )  # fmt: skip
        if ok and has_time:
            t, sync = fields[5], fields[6]
            ok = type(t) is int and 0 <= t <= UINT_MAX and type(sync) is int
            ok = ok and 0 <= sync <= UINT_MAX
        if ok:
            if has_cred:
                cred = fields[8]
                ok = type(cred) is bytes and len(cred) == 16 and event_type in _CRED_ALLOWED
            else:
                ok = event_type not in CRED_REQUIRED
        if ok:
            if has_x:
                x = fields[10]
                kinds = _X_SHAPES.get(event_type, {}).get(tuple(x)) if type(x) is dict else None
                ok = kinds is not None
                for value, kind in zip(x.values(), kinds) if kinds is not None else ():
                    value_type = type(value)
                    if kind is _TEXT:
                        ok = value_type is str and 1 <= len(value) <= 32
                    elif kind is _BYTES:
                        ok = value_type is bytes and 1 <= len(value) <= 64
                    elif kind is _UINT:
                        ok = value_type is int and 0 <= value <= UINT_MAX
                    elif kind is _INT:
                        ok = value_type is int and -(2**63) <= value <= UINT_MAX
                    else:  # a set of allowed texts
                        ok = value_type is str and value in kind
                    if not ok:
                        break
            else:
                ok = event_type in _X_OPTIONAL
        if not ok or cbor2.dumps(fields) != payload:
            return self._decided_by_payload(payload, message, device_id)
        return Event(
            device_id, seq, boot, up, event_type, prev, t, sync, cred, x, payload, message
        )

    @staticmethod
    def _decided_by_payload(payload: bytes, message: bytes, device_id: str) -> Event | None:
        # The envelope and signature are good: the strict payload check decides, without a
        # second Ed25519 check (free-form x, or an error for verify_event to name).
        try:
            event = decode_payload(payload, message)
        except EvidenceError:
            return None
        return event if event.dev == device_id else None


# -- the stream of one device --------------------------------------------------------------------


class ChainChecker:
    """Checks one device's events in sequence order, one at a time (the collector's view).

    checker = ChainChecker()              # or ChainChecker("tag-0042", last_seq=41, last_hash=h)
    for event in events: checker.check(event)   # raises a ChainError subclass
    """

    def __init__(
        self, dev: str | None = None, last_seq: int = 0, last_hash: bytes | None = None
    ) -> None:
        self.dev = dev
        self.last_seq = last_seq
        self.last_hash = (
            last_hash if last_hash is not None else (bytes(32) if not last_seq else None)
        )
        self.last_boot: int | None = None
        self.last_up: int | None = None

    def check(self, event: Event) -> None:
        where = f"{event.dev} seq {event.seq}"
        if self.dev is not None and event.dev != self.dev:
            raise WrongDevice(f"{where}: in the stream of {self.dev}")
        if event.seq == 1 and event.prev != bytes(32):
            raise BrokenChain(f"{where}: the first event's prev must be 32 zero bytes")
        started = self.last_seq > 0 or self.last_boot is not None
        if started:
            if event.seq <= self.last_seq:
                raise SequenceRepeat(
                    f"{where}: sequence repeats or goes back (after {self.last_seq})"
                )
            if event.seq != self.last_seq + 1:
                raise SequenceGap(
                    f"{where}: events {self.last_seq + 1}..{event.seq - 1} are missing"
                )
        if self.last_hash is not None and (started or event.seq == 1):
            if event.prev != self.last_hash:
                raise BrokenChain(
                    f"{where}: prev is not SHA-256 of event {event.seq - 1}'s payload"
                )
        if self.last_boot is not None and self.last_up is not None:
            if event.boot < self.last_boot:
                raise BootRegression(f"{where}: boot {event.boot} after boot {self.last_boot}")
            if event.boot == self.last_boot and event.up < self.last_up:
                raise BootRegression(f"{where}: uptime goes back within boot {event.boot}")
        self.dev = event.dev
        self.last_seq = event.seq
        self.last_hash = event.hash
        self.last_boot = event.boot
        self.last_up = event.up


def check_stream(events: Iterable[Event]) -> int:
    """Check sequence (+1 each, no repeats), chain (prev = SHA-256 of the previous payload),
    one device and non-decreasing boot/uptime. A stream may start anywhere (a month's excerpt);
    if it starts at seq 1, prev must be zeros. Returns the number of events checked."""
    checker = ChainChecker()
    count = 0
    for event in events:
        checker.check(event)
        count += 1
    return count


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


# -- commands (FORMATS.md §2) -------------------------------------------------------------------


def _check_command_x(command_type: str, x: Mapping[str, Any]) -> None:
    if command_type == "ack":
        _only(x, command_type, "upto")
        _x_field(x, "upto", "uint")
    elif command_type == "resend":
        _only(x, command_type, "from", "to")
        _x_field(x, "from", "uint")
        _x_field(x, "to", "uint")
        if x["from"] > x["to"]:
            raise FieldType(f"x: resend from {x['from']} is after to {x['to']}")
    elif command_type in ("allow", "revoke"):
        _only(x, command_type, "creds")
        creds = x.get("creds")
        if not isinstance(creds, (list, tuple)):
            raise MissingField(f"x: {command_type} needs a list 'creds'")
        for cred in creds:
            if not isinstance(cred, bytes) or len(cred) != 16:
                raise FieldType(f"x: creds entry {cred!r} is not a 16-byte credential id")
    elif command_type == "time":
        _only(x, command_type, "t")
        _x_field(x, "t", "uint")
    elif command_type == "config":
        # the settings a device lets a command change (firmware device/config_check.py COMMAND_SETTINGS)
        if not x:
            raise MissingField("payload key 10 (x): config names no setting")
        _only(x, command_type, *CONFIG_SETTINGS)
        for name, kind in CONFIG_SETTINGS.items():
            if kind == "bool":
                if name in x and not isinstance(x[name], bool):
                    raise FieldType(f"payload key 10 (x): {name!r} = {x[name]!r} is not a bool")
            else:
                _x_field(x, name, kind, required=False)


def sign_command(
    org_secret: bytes,
    target: str,
    command_seq: int,
    expires: int,
    command_type: str,
    x: dict[str, Any] | None = None,
) -> bytes:
    """A command to a device (FORMATS.md §2), signed with the organisation's command key."""
    if command_type not in COMMAND_TYPES:
        raise KvittoError(f"unknown command type {command_type!r}")
    _device_id(target, "command target")
    if x is not None:  # x is checked when given; a device refuses an ack or resend without it
        _check_command_x(command_type, x)
    fields: dict[int, Any] = {0: 1, 1: target, 2: command_seq, 3: expires, 7: command_type}
    if x:
        fields[10] = x
    return sign1(org_secret, ORG_KID, canonical(fields))


@functools.lru_cache(maxsize=64)
def _signing_key(secret: bytes) -> Ed25519PrivateKey:
    # Deriving the key from its seed costs as much as a signature: the collector signs an
    # ack per device several times a second with the one organisation key.
    return Ed25519PrivateKey.from_private_bytes(secret)


def sign1(secret: bytes, kid: bytes, payload: bytes) -> bytes:
    """A tagged COSE_Sign1 (alg -8) over any payload bytes: the host's own signer, for commands,
    test vectors and simulated devices. It checks nothing about the payload."""
    protected_bytes = canonical({1: ALG_EDDSA, 4: kid})
    signature = _signing_key(secret).sign(sig_structure(protected_bytes, payload))
    return canonical(cbor2.CBORTag(COSE_SIGN1_TAG, [protected_bytes, {}, payload, signature]))


def verify_command(
    message: bytes, org_public: bytes, target: str | None = None, now: int | None = None
) -> Command:
    """The host's own check of a command (as a device would make it), for tests and audits."""
    protected, protected_bytes, payload, signature = split_sign1(message)
    _check_signature(org_public, protected_bytes, payload, signature)
    if protected[4] != ORG_KID:
        raise KidMismatch(f"a command's kid must be 'org', not {protected[4]!r}")
    fields = _fields(payload, COMMAND_KEYS, (0, 1, 2, 3, 7))
    command_target = _device_id(fields[1], "payload key 1 (target)")
    seq = _uint(fields, 2, COMMAND_KEYS)
    expires = _uint(fields, 3, COMMAND_KEYS)
    command_type = fields[7]
    if not isinstance(command_type, str) or command_type not in COMMAND_TYPES:
        raise UnknownCommandType(f"payload key 7 (type): {command_type!r} is not a command type")
    x = fields.get(10, {})
    if not isinstance(x, Mapping):
        raise FieldType("payload key 10 (x): must be a map")
    x = dict(x)
    _check_command_x(command_type, x)
    if target is not None and command_target != target:
        raise WrongTarget(f"command for {command_target}, not {target}")
    if now is not None and now > expires:
        raise Expired(f"command expired at {expires}, now {now}")
    return Command(command_target, seq, expires, command_type, x, payload, message)
