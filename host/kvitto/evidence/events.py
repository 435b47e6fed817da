"""Device events on the host: decode and verify one, or many under registered keys (FORMATS.md §1).

    from kvitto.evidence.events import verify_event
    from kvitto.evidence.cose import read_messages
    for message in read_messages(Path("case/evidence.cbor-seq")):
        event = verify_event(message, public_key)   # raises an EvidenceError subclass

The device encodes with its own small CBOR/COSE code; the host uses cbor2 and cryptography, so
two independent implementations must agree (tests/vectors/). Verification is strict: one event
has exactly one valid byte form, and each way a message can fail has its own named error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kvitto.evidence.cose import (
    ALG_EDDSA,
    CRED_OPTIONAL,
    CRED_REQUIRED,
    DEVICE_ID,
    EVENT_KEYS,
    EVENT_TYPES,
    MAX_MESSAGE_BYTES,
    STORED_UINT_MAX,
    UINT_MAX,
    VIA_CREDENTIAL,
    BadPayload,
    EvidenceError,
    FieldType,
    KidMismatch,
    MissingField,
    Oversized,
    UnknownEventType,
    UnknownField,
    UnsupportedVersion,
    _check_signature,
    _decode,
    canonical,
    split_sign1,
)

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


# -- payload fields (FORMATS.md §1) -------------------------------------------------------------


def _uint(
    fields: Mapping[Any, Any],
    key: int,
    names: Mapping[int, str],
    lowest: int = 0,
    highest: int = UINT_MAX,
) -> int:
    value = fields[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        if isinstance(value, int) and not isinstance(value, bool) and value > highest:
            raise FieldType(
                f"payload key {key} ({names[key]}): {value} is above {highest}, "
                "the largest the store keeps"
            )
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
    seq = _uint(fields, 2, EVENT_KEYS, lowest=1, highest=STORED_UINT_MAX)
    boot = _uint(fields, 3, EVENT_KEYS, highest=STORED_UINT_MAX)
    up = _uint(fields, 4, EVENT_KEYS, highest=STORED_UINT_MAX)
    event_type = fields[7]
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise UnknownEventType(f"payload key 7 (type): {event_type!r} is not an event type")
    prev = _bstr(fields, 9, 32)
    if (5 in fields) != (6 in fields):
        raise MissingField("payload keys 5 (t) and 6 (sync) go together")
    t = _uint(fields, 5, EVENT_KEYS, highest=STORED_UINT_MAX) if 5 in fields else None
    sync = _uint(fields, 6, EVENT_KEYS, highest=STORED_UINT_MAX) if 6 in fields else None
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


# issue #23 (docs/formats.md §1.3): why a lock opened or refused, and its fallback
LOCK_REASONS = frozenset({"window", "grant", "fallback", "outside_window", "unknown", "alarm"})
LOCK_FALLBACKS = frozenset({"open_for_allowed", "deny"})


def _lock_tap_proof(event_type: str, x: Mapping[str, Any], *policy: str) -> None:
    """A lock journals the proof of the tap behind an event (docs/formats-v1-additions.md):
    an NTAG 424 SUN or a phone's nonce and answer, never both."""
    _only(x, event_type, "via", "sun", "nonce", "sig", *policy)
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
        _lock_tap_proof(event_type, x, "reason", "fallback", "alarm")
        # an unlock for the provider on alarm duty names the alarm call event (issue #23)
        _x_field(x, "alarm", "text", required=False)
        for name, allowed in (("reason", LOCK_REASONS), ("fallback", LOCK_FALLBACKS)):
            if name in x and x[name] not in allowed:
                raise FieldType(
                    f"payload key 10 (x): {name} {x[name]!r} is not one of {sorted(allowed)}"
                )
    elif event_type == "door_open":
        _only(x, event_type, "held_s")  # issue #23: the door is still open after held_s
        _x_field(x, "held_s", "uint", required=False)
    elif event_type == "door_close":
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
    proofs: list[dict[str, Any]] = [{}, {"sun": _BYTES}, {"nonce": _BYTES}, {"sig": _BYTES},
                                    {"nonce": _BYTES, "sig": _BYTES}]  # fmt: skip
    policy = {"reason": LOCK_REASONS, "fallback": LOCK_FALLBACKS}  # a lock with a policy
    via = dict(
        [shape(via=_TEXT, **proof) for proof in proofs]
        + [shape(via=_TEXT, **proof, **policy) for proof in proofs]
        + [shape(via=_TEXT, **proof, **policy, alarm=_TEXT) for proof in proofs]
    )
    alarm = dict([shape(alarm=_UINT)])
    return {
        "arrive": visit, "depart": visit, "unlock": via, "lock": via, "deny": via,
        "alarm_call": alarm, "alarm_checkin": alarm, "alarm_checkout": alarm,
        "tag_read": dict([shape(ctr=_UINT)]), "door_open": dict([shape(held_s=_UINT)]),
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

    def __init__(
        self, public_key_of: Callable[[str], bytes | None], check_signatures: bool = True
    ) -> None:
        """`check_signatures=False` only for messages whose signature was checked under the
        same registered key before (the store's events, verified by the collector's intake);
        everything else about each message is checked as usual."""
        self._public_key_of = public_key_of
        self._check_signatures = check_signatures
        # encoded protected header (bstr with head) -> (device id, key, Sig_structure prefix,
        # the key's bytes); headers that name no device with a key, until the next use().
        self._devices: dict[bytes, tuple[str, Ed25519PublicKey, bytes, bytes]] = {}
        self._unknown: set[bytes] = set()

    def use(self, public_key_of: Callable[[str], bytes | None]) -> None:
        """Take keys from `public_key_of` from now on (a worker's next batch), keeping what was
        learned: a learned device counts only while its key there is still the same bytes
        (checked at each event), so a key made once serves every batch."""
        self._public_key_of = public_key_of
        self._unknown = set()

    def _learn(self, header: bytes) -> tuple[str, Ed25519PublicKey, bytes, bytes] | None:
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
            if key is not None and public_key is not None:
                device = (device_id, key, _SIG1_PREFIX + header + b"\x40", public_key)
        if device is None:
            self._devices.pop(header, None)
            self._unknown.add(header)
        else:
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
        if device is None:
            device = None if header in self._unknown else self._learn(header)
        elif self._public_key_of(device[0]) != device[3]:
            device = self._learn(header)  # the device's key changed, or it is gone
        if device is None or message[header_end] != 0xA0:
            return None
        device_id, public_key, signed_prefix, _ = device
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
        if self._check_signatures:
            try:
                public_key.verify(
                    message[end + 2 :], signed_prefix + message[header_end + 1 : end]
                )
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
            and type(seq) is int and 1 <= seq <= STORED_UINT_MAX
            and type(boot) is int and 0 <= boot <= STORED_UINT_MAX
            and type(up) is int and 0 <= up <= STORED_UINT_MAX
            and type(event_type) is str and event_type in EVENT_TYPES
            and type(prev) is bytes and len(prev) == 32
        )  # fmt: skip
        if ok and has_time:
            t, sync = fields[5], fields[6]
            ok = type(t) is int and 0 <= t <= STORED_UINT_MAX and type(sync) is int
            ok = ok and 0 <= sync <= STORED_UINT_MAX
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
